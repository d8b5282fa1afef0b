"""Robust Sarsa (RS) attack and its MAD variant (ALGORITHMS.md §4, after Zhang et al. 2020).

The attacker has no access to the victim's critic, so it learns one: ``Q_rs``, the action value of
the FIXED victim policy, fitted by Sarsa on the victim's own trajectories with a smoothness
penalty over an action ball (the robust Sarsa regulariser), then attacks by PGD-minimising
``Q_rs(o, pi_mean(õ))`` (the critic sees the true ``o``, the policy the perturbed ``õ``), as
PGD-minQ does with the victim's own critic. ``rs+mad`` minimises
``Q_rs(o, pi_mean(õ)) - ratio * KL(pi(.|o) || pi(.|õ))``.

**Data.** ``collect_transitions`` rolls the victim out (deterministic mean action by default) on
environments from ``FitContext.make_env`` and stores explicit Sarsa tuples
``(s, a, r, s', a', terminated)`` per episode, where ``a'`` is the action the victim actually took
at ``s'`` in the same trajectory. (Older implementations paired ``s'`` with the action of an
unrelated transition of a shuffled minibatch; here every tuple carries its own ``a'``.) States
are the victim's normalised observations (``view.normalize``), actions are in [-1, 1].

**Episode ends.** The Sarsa target is ``r + gamma * (1 - terminated) * Q_target(s', a')``: only
termination stops bootstrapping. The last tuple of an episode cut by the time limit (or by the
end of collection) has no next tuple; we keep it and set ``a'`` to the victim's action at ``s'``,
computed by the victim exactly as it acts while collecting (the same call, the same frozen
network). In the deterministic mode this *is* the action the victim would take; in the stochastic
mode it is a fresh draw from ``pi(.|s')``, a correct Sarsa sample too. Such tuples are flagged
``last`` (as are terminal ones, whose ``a'`` is computed the same way but never used).

**Regulariser.** ``max_{a' in B_eps_rs(a) ∩ [-1,1]} |Q(s, a') - Q(s, a)|`` is approximated by
``reg_steps`` signed-gradient ascent steps on ``a'`` from a uniform random start in the ball (with
``reg_steps = 0``: one uniform sample), then added to the TD loss times ``reg``. The TD loss is
``0.5 * (Q - target)^2`` as in the SA-DDPG reference implementation, whose penalty is the
interval width ``ub - lb`` of ``Q`` over the ball (from convex relaxation: between one and two
times our quantity), so ``reg`` has a similar meaning; their ball is per action dimension in
units of the data's action std, ours is in [-1, 1] units. (That implementation also collected
with exploration noise and bootstrapped with the actor's action at ``s'``; here the data are the
victim's own trajectories, as ALGORITHMS.md §4 specifies.)

**Scan.** One critic per ``(eps_rs, reg)`` of the grid, all fitted on the same collected data;
``variants()`` returns one attack per setting (label ``rs[eps_rs=0.02,reg=0.1]``) and the
evaluation keeps the worst.

**Cache.** With ``FitContext.cache_dir`` each fitted critic is saved as safetensors plus a JSON
record of everything it depends on (the fit settings, the data settings and size, the victim's
fingerprint: a hash of its actor weights when the view exposes them and of its normaliser and
policy outputs on fixed probe observations); a later fit with an identical record loads it (no
environment steps), anything different refits. ``rs`` and ``rs+mad`` share cached critics (the
attack-time settings are not part of the record).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.distributions import kl_divergence
from tqdm.auto import tqdm

from robustrl import checkpoint
from robustrl.attacks import register
from robustrl.attacks.base import Attack, AttackConfig, FitContext
from robustrl.attacks.gradient import signed_gradient_descent
from robustrl.errors import CheckpointError, ConfigError
from robustrl.nets import mlp
from robustrl.threat import ObservationBall
from robustrl.views import PolicyView

CACHE_FORMAT = "robustrl.rs-critic/1"
_SEED_TAG = 0x5A75A  # separates the collection's episode seeds from evaluation seeds


# ---------------------------------------------------------------- configuration


@dataclass
class RobustSarsaConfig(AttackConfig):
    """Settings of the Robust Sarsa attack (``rs``); defaults after SA-DDPG's robust Sarsa."""

    eps_rs: list[float] = field(default_factory=lambda: [0.02, 0.1])
    """Radii of the action ball of the smoothness penalty to scan, in normalised action units
    ([-1, 1]). The reference scan (SA-PPO/SA-DDPG scripts) is eps_rs {0.02, 0.05, 0.1, 0.15,
    0.2, 0.3} x reg {0.1, 0.3, 1, 3, 10}: 30 critics, hours on a CPU. The default 2 x 2 grid
    (about 12 minutes on one CPU thread at the default sizes, 6 ms per update) takes a small
    ball (0.02: close to plain Sarsa) and a medium one (0.1: a critic smooth enough that its
    action gradient means something away from the victim's own, deterministic, actions).
    Extend the lists for the full scan."""

    reg: list[float] = field(default_factory=lambda: [0.1, 1.0])
    """Weights of the smoothness penalty to scan; every (eps_rs, reg) pair is one variant with
    its own critic. 0.1 (a light touch) and 1.0 (penalty on a par with the TD loss) span the
    middle of the reference scan; the scan exists because no single value is best for every
    victim, and the worst variant counts."""

    transitions: int = 100_000
    """Environment steps of victim data collected once and shared by the whole scan (every step
    gives one Sarsa tuple); ``FitContext.budget`` caps it."""

    gradient_steps: int = 30_000
    """Critic updates per setting (DDPG-style, as in the paper)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layers of each critic (2x256 ReLU, the size of the SAC critics it mimics)."""

    batch_size: int = 256
    """Minibatch size of the critic updates."""

    lr: float = 1e-3
    """Adam learning rate of the critic (DDPG's critic rate)."""

    gamma: float = 0.99
    """Discount of the Sarsa target."""

    tau: float = 0.01
    """Polyak rate of the target critic (the paper's 0.01)."""

    reg_steps: int = 2
    """Signed-gradient ascent steps (step 2 * eps_rs / reg_steps) approximating the worst action
    of the penalty from a random start; 0: a single uniform sample of the ball."""

    deterministic: bool = True
    """Collect with the victim's deterministic mean action (True) or its stochastic policy."""

    n_envs: int = 8
    """Environments stepped in parallel while collecting (batches the victim's forward pass;
    part of the data's identity since it decides which episodes the budget cuts)."""

    steps: int = 10
    """PGD steps of the attack (as PGD-minQ)."""

    step_size: float | None = None
    """PGD step in normalised observation units; None: eps / steps."""

    random_start: bool = True
    """Start PGD at a uniform random point of the ball (as PGD-minQ)."""


@dataclass
class RobustSarsaMADConfig(RobustSarsaConfig):
    """Settings of ``rs+mad``: the RS settings plus the weight of the MAD term."""

    ratio: float = 0.1
    """Weight of ``KL(pi(.|o) || pi(.|õ))`` subtracted from ``Q_rs(o, pi_mean(õ))``. The terms
    have unrelated scales: on a Pendulum SAC victim at eps 0.3 the KL (summed over action
    dimensions) reaches a median of 18 and a maximum of 65 at MAD's perturbations, while
    ``Q_rs(o, pi_mean(õ))`` moves by a few units per step. With 1.0 the KL dominates and
    ``rs+mad`` was no stronger than MAD (return -786 vs MAD -776, rs -898); 0.1 keeps both terms
    active. Scan it for other victims."""


def _check_config(cfg: RobustSarsaConfig, name: str) -> None:
    def bad(message: str) -> ConfigError:
        return ConfigError(f"attack {name!r}: {message}")

    for key in ("eps_rs", "reg"):
        values = getattr(cfg, key)
        if not values:
            raise bad(f"{key} must list at least one value")
        for value in values:
            if not math.isfinite(value) or value < 0:
                raise bad(f"{key} values must be finite and >= 0, got {value!r}")
    for key in ("transitions", "gradient_steps", "batch_size", "n_envs", "steps"):
        if getattr(cfg, key) < 1:
            raise bad(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.reg_steps < 0:
        raise bad(f"reg_steps must be >= 0, got {cfg.reg_steps}")
    if not cfg.hidden_sizes or min(cfg.hidden_sizes) < 1:
        raise bad(f"hidden_sizes must be positive, got {cfg.hidden_sizes}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise bad(f"lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.gamma < 1.0:
        raise bad(f"gamma must be in [0, 1), got {cfg.gamma}")
    if not 0.0 < cfg.tau <= 1.0:
        raise bad(f"tau must be in (0, 1], got {cfg.tau}")
    if cfg.step_size is not None and not (math.isfinite(cfg.step_size) and cfg.step_size > 0):
        raise bad(f"step_size must be > 0 or None, got {cfg.step_size}")
    ratio = getattr(cfg, "ratio", 0.0)
    if not (math.isfinite(ratio) and ratio >= 0):
        raise bad(f"ratio must be finite and >= 0, got {ratio}")


def scan_settings(cfg: RobustSarsaConfig) -> list[tuple[float, float]]:
    """The (eps_rs, reg) grid in order, duplicates removed."""
    return list(dict.fromkeys(itertools.product(map(float, cfg.eps_rs), map(float, cfg.reg))))


# ---------------------------------------------------------------- data


@dataclass
class SarsaTransitions:
    """Sarsa tuples of the victim's own trajectories, sorted by (episode, step).

    ``next_action`` is the action taken at ``next_obs`` by the next tuple of the same episode,
    or, for an episode's ``last`` tuple, the victim's action computed at ``next_obs``.
    ``terminated`` stops bootstrapping; truncated and cut episodes bootstrap.
    """

    obs: np.ndarray  # (N, obs_dim) float32, normalised
    action: np.ndarray  # (N, act_dim) float32 in [-1, 1]
    reward: np.ndarray  # (N,) float32
    next_obs: np.ndarray  # (N, obs_dim)
    next_action: np.ndarray  # (N, act_dim)
    terminated: np.ndarray  # (N,) bool
    last: np.ndarray  # (N,) bool: no later tuple of this episode is stored
    episode: np.ndarray  # (N,) int64
    step: np.ndarray  # (N,) int64: time step within the episode

    def __len__(self) -> int:
        return len(self.reward)

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return {
            "obs": torch.as_tensor(self.obs, device=device),
            "action": torch.as_tensor(self.action, device=device),
            "reward": torch.as_tensor(self.reward, device=device),
            "next_obs": torch.as_tensor(self.next_obs, device=device),
            "next_action": torch.as_tensor(self.next_action, device=device),
            "not_done": torch.as_tensor(1.0 - self.terminated.astype(np.float32), device=device),
        }


def _episode_seed(seed: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, _SEED_TAG, episode]).generate_state(1)[0])


def collect_transitions(
    view: PolicyView,
    make_env: Callable[[], gym.Env],
    transitions: int,
    deterministic: bool = True,
    seed: int = 0,
    n_envs: int = 8,
    progress: bool = False,
) -> SarsaTransitions:
    """Roll the victim out for exactly ``transitions`` environment steps; one tuple per step.

    Episode ``k`` starts from ``reset(seed=f(seed, k))``, a stream distinct from the evaluation
    seeds; stochastic actions draw from a torch RNG forked and seeded with ``seed``.
    """
    if transitions < 1:
        raise ConfigError(f"transitions must be >= 1, got {transitions}")
    device = getattr(view, "device", "cpu")

    def act(obs: np.ndarray) -> np.ndarray:
        batch = torch.as_tensor(obs, device=device)
        return view.act(batch, deterministic).detach().cpu().numpy().astype(np.float32)

    def normalize(raw: list[np.ndarray]) -> np.ndarray:
        return np.asarray(view.normalize(np.stack(raw)), np.float32)

    records: list[tuple] = []  # (episode, step, s, a, r, s', a', terminated, last)
    envs = [make_env() for _ in range(min(n_envs, transitions))]
    n_par = len(envs)
    episode = list(range(n_par))
    next_episode = n_par
    t = [0] * n_par
    pending: list[tuple | None] = [None] * n_par  # (episode, step, s, a, r, s', terminated)
    collected = 0
    bar = tqdm(total=transitions, desc="rs: collecting", unit="step", disable=not progress)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            obs = normalize(
                [env.reset(seed=_episode_seed(seed, k))[0] for k, env in enumerate(envs)]
            )
            while collected < transitions:
                m = min(n_par, transitions - collected)  # envs that step this round
                actions = act(obs)
                for i in range(n_par):
                    if pending[i] is not None:  # a' is the action taken now, same trajectory
                        records.append((*pending[i][:6], actions[i], pending[i][6], i >= m))
                        pending[i] = None
                env_actions = view.to_env(actions[:m])
                raw_next, rewards, terms, ended = [], [], [], []
                for i in range(m):
                    raw, reward, terminated, truncated, _ = envs[i].step(env_actions[i])
                    raw_next.append(raw)
                    rewards.append(float(reward))
                    terms.append(bool(terminated))
                    if terminated or truncated:
                        ended.append(i)
                next_obs = normalize(raw_next)
                for i in range(m):
                    pending[i] = (
                        episode[i],
                        t[i],
                        obs[i].copy(),
                        actions[i].copy(),
                        rewards[i],
                        next_obs[i].copy(),
                        terms[i],
                    )
                    t[i] += 1
                    obs[i] = next_obs[i]
                collected += m
                bar.update(m)
                if ended:  # a' at the final observation: the victim's own (computed) action
                    final_actions = act(next_obs[ended])
                    for row, i in enumerate(ended):
                        records.append((*pending[i][:6], final_actions[row], pending[i][6], True))
                        pending[i] = None
                    if collected < transitions:
                        fresh = []
                        for i in ended:
                            episode[i], t[i] = next_episode, 0
                            fresh.append(envs[i].reset(seed=_episode_seed(seed, next_episode))[0])
                            next_episode += 1
                        obs[ended] = normalize(fresh)
            cut = [i for i in range(n_par) if pending[i] is not None]
            if cut:  # episodes cut by the end of collection: bootstrap with a' computed at s'
                final_actions = act(np.stack([pending[i][5] for i in cut]))
                for row, i in enumerate(cut):
                    records.append((*pending[i][:6], final_actions[row], pending[i][6], True))
    finally:
        bar.close()
        for env in envs:
            env.close()
    ep, st, s, a, r, s2, a2, term, last = zip(*records)
    order = np.lexsort((np.asarray(st), np.asarray(ep)))
    return SarsaTransitions(
        obs=np.stack(s)[order],
        action=np.stack(a)[order],
        reward=np.asarray(r, np.float32)[order],
        next_obs=np.stack(s2)[order],
        next_action=np.stack(a2)[order],
        terminated=np.asarray(term, bool)[order],
        last=np.asarray(last, bool)[order],
        episode=np.asarray(ep, np.int64)[order],
        step=np.asarray(st, np.int64)[order],
    )


# ---------------------------------------------------------------- critic


class SarsaCritic(nn.Module):
    """``Q_rs(o, a)``: a ReLU MLP on normalised observations and [-1, 1] actions, output (B,)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, list(hidden), 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


def worst_actions(
    critic: SarsaCritic,
    obs: torch.Tensor,
    action: torch.Tensor,
    q_ref: torch.Tensor,
    eps: float,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Approximate ``argmax_{a' in B_eps(a) ∩ [-1,1]} |Q(s, a') - q_ref|`` by signed ascent.

    Differentiates with respect to the action only (no weight gradients).
    """
    low, high = (action - eps).clamp(-1.0, 1.0), (action + eps).clamp(-1.0, 1.0)
    u = torch.rand(action.shape, generator=generator, dtype=action.dtype).to(action.device)
    x = low + (high - low) * u
    step = 2.0 * eps / steps if steps else 0.0
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            gap = (critic(obs, x) - q_ref).abs().sum()
            (grad,) = torch.autograd.grad(gap, x)
        x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), low), high)
    return x.detach()


def fit_sarsa_critic(
    data: SarsaTransitions,
    eps_rs: float,
    reg: float,
    cfg: RobustSarsaConfig,
    seed: int = 0,
    progress: bool = False,
    desc: str = "rs",
    device: torch.device | str = "cpu",
) -> tuple[SarsaCritic, dict[str, float]]:
    """Fit ``Q_rs`` on ``data`` by Sarsa with the robust regulariser; returns (critic, stats).

    The initial weights and the minibatch sequence depend on ``seed`` only, so every setting of
    a scan starts from the same critic and sees the same minibatches.
    """
    obs_dim, act_dim = data.obs.shape[1], data.action.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = SarsaCritic(obs_dim, act_dim, cfg.hidden_sizes).to(device)
    target = copy.deepcopy(critic).requires_grad_(False)
    optim = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    batches = torch.Generator().manual_seed(seed)
    starts = torch.Generator().manual_seed(seed + 1)
    t = data.tensors(device)
    n = len(data)
    use_reg = reg > 0 and eps_rs > 0
    td_sum = pen_sum = 0.0
    window = max(1, min(1000, cfg.gradient_steps // 10))  # stats over the last updates
    started = time.perf_counter()
    for k in tqdm(range(cfg.gradient_steps), desc=desc, unit="step", disable=not progress):
        idx = torch.randint(n, (cfg.batch_size,), generator=batches).to(device)
        obs, action = t["obs"][idx], t["action"][idx]
        with torch.no_grad():
            y = t["reward"][idx] + cfg.gamma * t["not_done"][idx] * target(
                t["next_obs"][idx], t["next_action"][idx]
            )
        q = critic(obs, action)
        td = 0.5 * (q - y).pow(2).mean()
        loss = td
        if use_reg:
            adv = worst_actions(critic, obs, action, q.detach(), eps_rs, cfg.reg_steps, starts)
            penalty = (critic(obs, adv) - q).abs().mean()
            loss = loss + reg * penalty
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            for p_target, p in zip(target.parameters(), critic.parameters()):
                p_target.lerp_(p, cfg.tau)
        if k >= cfg.gradient_steps - window:
            td_sum += float(td.detach())
            pen_sum += float(penalty.detach()) if use_reg else 0.0
    critic.requires_grad_(False).eval()
    stats = {
        "td_loss": td_sum / window,
        "penalty": pen_sum / window,
        "fit_time_s": time.perf_counter() - started,
    }
    return critic, stats


# ---------------------------------------------------------------- cache


def victim_fingerprint(view: PolicyView) -> str:
    """A hash identifying the victim: actor weights when exposed, plus its normaliser and policy
    outputs on fixed probe observations (which covers views of any library)."""
    h = hashlib.sha256()
    h.update(f"{type(view).__qualname__}|{view.kind}|{view.env_id}".encode())
    h.update(f"|{view.obs_dim}|{view.act_dim}|".encode())
    h.update(np.asarray(view.action_low, np.float64).tobytes())
    h.update(np.asarray(view.action_high, np.float64).tobytes())
    actor = getattr(view, "actor", None)
    if isinstance(actor, nn.Module):
        for key, value in sorted(actor.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    probe = np.random.default_rng(20_200_627).standard_normal((32, view.obs_dim)) * 3.0
    normalised = np.asarray(view.normalize(probe.astype(np.float32)), np.float32)
    h.update(normalised.tobytes())
    with torch.no_grad():
        dist = view.distribution(torch.as_tensor(normalised, device=getattr(view, "device", "cpu")))
        h.update(dist.loc.detach().cpu().numpy().tobytes())
        h.update(dist.scale.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


class _SharedData:
    """The collected transitions of one scan, reused by all its variants."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.data: SarsaTransitions | None = None


# ---------------------------------------------------------------- attacks


class RobustSarsaAttack(Attack):
    """PGD-minimise a robust-Sarsa critic ``Q_rs(o, pi_mean(õ))`` of the frozen victim.

    Built by ``make_attack("rs", ...)`` it is the scan: ``fit`` collects the victim's data once
    and fits one critic per (eps_rs, reg) setting; ``variants()`` returns the per-setting attacks
    (the worst counts). With a single setting the scan attack can also ``perturb`` directly.
    """

    name = "rs"
    config_class = RobustSarsaConfig
    # Not "learned" in the registry's sense (an attack that needs a training budget, which the
    # CLI then demands): RS has a default data size, which ``FitContext.budget`` only caps.
    # ``fit`` is still required before ``perturb``; the evaluation runner fits every attack.
    learned = False
    description = "PGD minimising a robust-Sarsa critic Q_rs(o, pi(õ)) fitted on the victim's data"

    def __init__(
        self,
        view: PolicyView,
        ball: ObservationBall,
        config: AttackConfig | None = None,
        seed: int = 0,
        *,
        setting: tuple[float, float] | None = None,
        shared: _SharedData | None = None,
    ):
        super().__init__(view, ball, config, seed)
        if not isinstance(self.config, RobustSarsaConfig):
            raise ConfigError(f"attack {self.name!r} needs a {self.config_class.__name__}")
        _check_config(self.config, self.name)
        self.seed = seed
        self.setting = setting
        self._shared = shared if shared is not None else _SharedData()
        self.critic: SarsaCritic | None = None
        self.fit_info: dict[str, Any] | None = None
        self._fit_key: str | None = None
        if setting is None:
            self._variants = [
                type(self)(view, ball, self.config, seed, setting=s, shared=self._shared)
                for s in scan_settings(self.config)
            ]
        else:
            self._variants = [self]

    # -- naming

    def variants(self) -> list[Attack]:
        return list(self._variants)

    @property
    def label(self) -> str:
        if self.setting is None:
            return self.name
        eps_rs, reg = self.setting
        return f"{self.name}[eps_rs={eps_rs:g},reg={reg:g}]"

    # -- fitting

    def _data_spec(self, context: FitContext) -> dict[str, Any]:
        cfg = self.config
        n = cfg.transitions
        if context.budget is not None:
            if context.budget < 1:
                raise ConfigError(
                    f"attack {self.name!r}: budget must be >= 1, got {context.budget}"
                )
            n = min(n, int(context.budget))
        return {
            "transitions": n,
            "deterministic": cfg.deterministic,
            "n_envs": cfg.n_envs,
            "seed": context.seed,
        }

    def _identity(self, context: FitContext, victim: str) -> dict[str, Any]:
        cfg = self.config
        eps_rs, reg = self.setting
        return _jsonable(
            {
                "format": CACHE_FORMAT,
                "victim": victim,
                "env": {"id": self.view.env_id, "kwargs": getattr(self.view, "env_kwargs", {})},
                "data": self._data_spec(context),
                "fit": {
                    "eps_rs": eps_rs,
                    "reg": reg,
                    "gradient_steps": cfg.gradient_steps,
                    "hidden_sizes": list(cfg.hidden_sizes),
                    "batch_size": cfg.batch_size,
                    "lr": cfg.lr,
                    "gamma": cfg.gamma,
                    "tau": cfg.tau,
                    "reg_steps": cfg.reg_steps,
                },
            }
        )

    def _data(self, context: FitContext) -> tuple[SarsaTransitions, int]:
        """The scan's shared transitions and the environment steps spent now (0: reused)."""
        spec = self._data_spec(context)
        key = tuple(sorted(spec.items()))
        if self._shared.key == key and self._shared.data is not None:
            return self._shared.data, 0
        self._shared.data = collect_transitions(
            self.view,
            context.make_env,
            spec["transitions"],
            spec["deterministic"],
            spec["seed"],
            spec["n_envs"],
            context.progress,
        )
        self._shared.key = key
        return self._shared.data, spec["transitions"]

    def _new_critic(self) -> SarsaCritic:
        critic = SarsaCritic(self.view.obs_dim, self.view.act_dim, self.config.hidden_sizes)
        return critic.to(getattr(self.view, "device", "cpu"))

    def _load_cached(self, paths: tuple[Path, Path], identity: dict) -> dict | None:
        weights, record_path = paths
        if not (weights.is_file() and record_path.is_file()):
            return None
        try:
            record = checkpoint.read_json(record_path)
            if record.get("identity") != identity:
                return None
            critic = self._new_critic()
            critic.load_state_dict(checkpoint.read_tensors(weights))
        except (CheckpointError, RuntimeError, KeyError) as exc:
            warnings.warn(f"rs: ignoring unreadable cached critic {weights}: {exc}", stacklevel=3)
            return None
        self.critic = critic.requires_grad_(False).eval()
        return record

    def _save_cached(self, paths: tuple[Path, Path], record: dict) -> None:
        weights, record_path = paths
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_name(weights.name + ".tmp")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.critic.state_dict().items()}
        save_file(tensors, str(tmp))
        os.replace(tmp, weights)
        checkpoint.write_json(record_path, record)

    def fit(self, context: FitContext) -> dict[str, Any]:
        if self.setting is None:
            variants = {v.label: v.fit(context) for v in self._variants}
            collected = self._shared.data
            return {
                "variants": variants,
                "transitions": len(collected) if collected is not None else 0,
                "env_steps": sum(v["env_steps"] for v in variants.values()),
                "cached": all(v["cached"] for v in variants.values()),
            }
        identity = self._identity(context, victim_fingerprint(self.view))
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        if self.critic is not None and self._fit_key == key:
            return {**self.fit_info, "cached": True, "env_steps": 0}
        paths = None
        if context.cache_dir is not None:
            folder = Path(context.cache_dir)
            paths = (folder / f"rs-critic-{key}.safetensors", folder / f"rs-critic-{key}.json")
            record = self._load_cached(paths, identity)
            if record is not None:
                self._fit_key = key
                self.fit_info = {**record["result"], "cached": True, "env_steps": 0}
                return dict(self.fit_info)
        data, env_steps = self._data(context)
        eps_rs, reg = self.setting
        self.critic, stats = fit_sarsa_critic(
            data,
            eps_rs,
            reg,
            self.config,
            seed=context.seed,
            progress=context.progress,
            desc=f"rs: fitting {self.label}",
            device=getattr(self.view, "device", "cpu"),
        )
        result = {"tuples": len(data), "gradient_steps": self.config.gradient_steps, **stats}
        if paths is not None:
            self._save_cached(paths, {"identity": identity, "key": key, "result": result})
        self._fit_key = key
        self.fit_info = {**result, "cached": False, "env_steps": env_steps}
        return dict(self.fit_info)

    # -- attacking

    def _fitted_critic(self) -> SarsaCritic:
        if self.setting is None:
            if len(self._variants) != 1:
                raise ConfigError(
                    f"attack {self.name!r} scans {len(self._variants)} (eps_rs, reg) settings: "
                    "evaluate each of its variants() (the worst counts)"
                )
            return self._variants[0]._fitted_critic()
        if self.critic is None:
            raise ConfigError(f"attack {self.label!r} must be fit() before perturb()")
        return self.critic

    def objective(
        self, critic: SarsaCritic, obs: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The value (B,) to minimise over perturbed observations: ``Q_rs(o, pi_mean(õ))``."""
        return lambda adv: critic(obs, self.view.mean_action(adv))

    def perturb(self, obs: torch.Tensor) -> torch.Tensor:
        critic = self._fitted_critic()
        attack = self if self.setting is not None else self._variants[0]
        cfg = self.config
        start = attack.uniform_start(obs) if cfg.random_start else obs
        return signed_gradient_descent(
            self.ball, obs, attack.objective(critic, obs), cfg.steps, cfg.step_size, start
        )


class RobustSarsaMADAttack(RobustSarsaAttack):
    """``rs+mad``: minimise ``Q_rs(o, pi_mean(õ)) - ratio * KL(pi(.|o) || pi(.|õ))``."""

    name = "rs+mad"
    config_class = RobustSarsaMADConfig
    description = "PGD minimising Q_rs(o, pi(õ)) - ratio * KL(pi(.|o) || pi(.|õ))"

    def objective(
        self, critic: SarsaCritic, obs: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            clean = self.view.distribution(obs)
        ratio = self.config.ratio

        def value(adv: torch.Tensor) -> torch.Tensor:
            kl = kl_divergence(clean, self.view.distribution(adv)).sum(-1)
            return critic(obs, self.view.mean_action(adv)) - ratio * kl

        return value


register(RobustSarsaAttack)
register(RobustSarsaMADAttack)

__all__ = [
    "RobustSarsaAttack",
    "RobustSarsaConfig",
    "RobustSarsaMADAttack",
    "RobustSarsaMADConfig",
    "SarsaCritic",
    "SarsaTransitions",
    "collect_transitions",
    "fit_sarsa_critic",
    "scan_settings",
    "victim_fingerprint",
    "worst_actions",
]
