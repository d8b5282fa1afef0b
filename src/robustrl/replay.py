"""Replay buffers: uniform, and prioritised replay on an array-based sum tree (Schaul et al. 2016).

Observations are stored raw (float32) and normalised when sampled, with the normaliser's current
statistics (the paper's choice, App. D.2). Actions are stored in [-1, 1].
"""

from __future__ import annotations

import numpy as np

FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


class SumTree:
    """Complete binary tree in one array: leaves hold priorities, each node the sum of its children.

    Node 1 is the root, node i has children 2i and 2i+1, leaf j is node ``size + j``. Updates and
    prefix-sum searches are vectorised over a batch of indices: O(B log N) numpy work.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 1 << max(0, (capacity - 1).bit_length())  # leaves, a power of two
        self.depth = self.size.bit_length() - 1
        self.nodes = np.zeros(2 * self.size, np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def leaves(self) -> np.ndarray:
        return self.nodes[self.size : self.size + self.capacity]

    def set(self, index: np.ndarray, priority: np.ndarray) -> None:
        """Set leaf priorities and refresh their ancestors, one tree level at a time.

        Duplicate indices need no ``np.unique``: every copy of a node writes the same sum.
        """
        node = np.asarray(index, np.int64) + self.size
        self.nodes[node] = priority
        for _ in range(self.depth):
            node //= 2
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index j with prefix-sum(j) <= mass < prefix-sum(j + 1), for each mass."""
        mass = np.array(mass, np.float64)
        node = np.ones(mass.shape, np.int64)
        for _ in range(self.depth):
            left = self.nodes[2 * node]
            right = mass >= left
            mass -= left * right
            node = 2 * node + right
        return node - self.size


class ReplayBuffer:
    """Circular buffer of transitions with uniform sampling."""

    prioritized = False

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0):
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.pos = 0
        self.full = False
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, obs, action, reward, next_obs, terminated) -> int:
        i = self.pos
        self.obs[i], self.action[i], self.reward[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.pos = (i + 1) % self.capacity
        self.full = self.full or self.pos == 0
        return i

    def sample(
        self, batch_size: int, progress: float = 0.0
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A batch of transitions (raw observations) with importance weights, and the indices."""
        index = self.rng.integers(0, len(self), size=batch_size)
        batch = self._gather(index)
        batch["weight"] = np.ones(batch_size, np.float32)
        return batch, index

    def update_priorities(self, index: np.ndarray, td_abs: np.ndarray) -> None:
        """Uniform replay ignores priorities."""

    def _gather(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[index] for name in FIELDS}

    # -- persistence (arrays only: saved with safetensors, never pickle) --

    def state_dict(self) -> dict[str, np.ndarray]:
        n = len(self)
        state = {name: getattr(self, name)[:n] for name in FIELDS}
        state["pos"] = np.array([self.pos, int(self.full)], np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        n = state["obs"].shape[0]
        if n > self.capacity or state["obs"].shape[1:] != (self.obs_dim,):
            raise ValueError(
                f"buffer of shape {state['obs'].shape} does not fit capacity {self.capacity}, "
                f"obs_dim {self.obs_dim}"
            )
        for name in FIELDS:
            getattr(self, name)[:n] = state[name]
        self.pos, self.full = int(state["pos"][0]), bool(state["pos"][1])


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay: ``P(i) = p_i^a / sum_k p_k^a``, ``p_i = |TD_i| + eps``.

    Importance weights ``w_i = (N P(i))^-b / max_batch w`` with ``b`` annealed linearly from
    ``importance_start`` to ``importance_end`` over training (``progress`` in [0, 1]). New
    transitions get the largest priority seen so far, so each is replayed at least once soon.
    Sampling is stratified: one draw per equal slice of the total mass.
    """

    prioritized = True

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        seed: int = 0,
        priority_exponent: float = 0.6,
        importance_start: float = 0.4,
        importance_end: float = 1.0,
        priority_eps: float = 1e-6,
    ):
        super().__init__(capacity, obs_dim, act_dim, seed)
        self.tree = SumTree(capacity)
        self.priority_exponent = priority_exponent
        self.importance_start, self.importance_end = importance_start, importance_end
        self.priority_eps = priority_eps
        self.max_priority = 1.0  # in units of p^a

    def add(self, obs, action, reward, next_obs, terminated) -> int:
        i = super().add(obs, action, reward, next_obs, terminated)
        self.tree.set(np.array([i]), np.array([self.max_priority]))
        return i

    def importance_exponent(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        return self.importance_start + progress * (self.importance_end - self.importance_start)

    def sample(
        self, batch_size: int, progress: float = 0.0
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        total = self.tree.total
        mass = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        index = np.minimum(self.tree.find(mass), len(self) - 1)  # guard float round-off
        priority = self.tree.nodes[index + self.tree.size]
        prob = priority / total
        weight = (len(self) * prob) ** -self.importance_exponent(progress)
        batch = self._gather(index)
        batch["weight"] = (weight / weight.max()).astype(np.float32)
        return batch, index

    def update_priorities(self, index: np.ndarray, td_abs: np.ndarray) -> None:
        priority = (np.abs(td_abs) + self.priority_eps) ** self.priority_exponent
        self.tree.set(index, priority)
        self.max_priority = max(self.max_priority, float(priority.max()))

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state["priority"] = self.tree.leaves()[: len(self)].copy()
        state["max_priority"] = np.array([self.max_priority], np.float64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        n = state["priority"].shape[0]
        self.tree.set(np.arange(n), state["priority"])
        self.max_priority = float(state["max_priority"][0])


def make_replay(
    config, obs_dim: int, act_dim: int, seed: int, capacity: int | None = None
) -> ReplayBuffer:
    """Buffer from a ``ReplayConfig``; ``capacity`` overrides its size (a short run needs less)."""
    capacity = capacity or config.capacity
    if not config.prioritized:
        return ReplayBuffer(capacity, obs_dim, act_dim, seed)
    return PrioritizedReplayBuffer(
        capacity,
        obs_dim,
        act_dim,
        seed,
        config.priority_exponent,
        config.importance_start,
        config.importance_end,
        config.priority_eps,
    )
