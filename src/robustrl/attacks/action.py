"""Action attacks (OA-PI, ALGORITHMS.md §1 and §4): ``perturb(o, a) -> clip(a + delta, -1, 1)``.

An action attack sees the victim's normalised observation ``o`` (B, obs_dim) and the action ``a``
(B, act_dim) in [-1, 1] the victim chose, and returns the EXECUTED action
``ActionBall.apply(a, delta)`` with ``|delta|_inf <= eps`` (normalised action units), clipped to
[-1, 1]. The attacks, by name:

``a-random``
    ``delta ~ U(-eps, eps)`` per coordinate.
``a-biggest``
    A vertex of the box: ``delta_i = +eps`` when ``a_i < 0`` and ``-eps`` when ``a_i >= 0``,
    i.e. every coordinate moves towards its FARTHER bound, which is the largest change of the
    executed action after clipping (moving towards the nearer bound can be cut short by the
    clip). The paper's exact rule is lost; this is the documented choice. Tie: at ``a_i = 0``
    both bounds are equally far and the change is ``min(eps, 1)`` either way; we take ``-eps``.
``a-minq``
    PGD minimising the victim's nominal critic ``view.q_value(o, clip(a + delta))`` (SAC/TD3
    agents: the mean of their critics).
``a-minoaq``
    The same PGD on an optimal-adversary-aware (OA) critic: the victim's own
    (``view.oa_q_value``, OA-TD3 agents) when it has one, otherwise one FITTED to the frozen
    victim, as Robust Sarsa fits ``Q_rs``: see below.

**PGD** (``minimize_over_actions``). The search runs over the executed action ``x`` in the box
``[max(a - eps, -1), min(a + eps, 1)]``, which is exactly the set of executed actions
``clip(a + delta)`` with ``|delta| <= eps``; searching over ``x`` rather than over ``delta``
through the clip avoids the clip's zero gradient where ``a + delta`` leaves [-1, 1]. It starts at
``clip(a + U(-eps, eps))`` (a random start in the ball; ``random_start=false``: at ``a``), takes
``steps`` signed-gradient steps of ``step_size`` (default ``2.5 eps / steps``, as OA-TD3's
training-time PGD, ``OAConfig.pgd_step_size``), each projected back onto the box, and returns the
iterate with the lowest value per row (start included). Gradients are taken with respect to the
action only (``torch.autograd.grad`` on the input). The result is passed through
``ball.apply(a, x - a)``, so it satisfies the bound by construction.

**Fitted OA critic** (``a-minoaq`` on a victim without one). ``Q_oa(s, a)`` is the value of
taking ``a`` at ``s`` and then following the victim's mean action ``pi`` under the OPTIMAL
action adversary of budget eps; it is fitted by fitted-Q iteration with the OA Bellman target
(ALGORITHMS.md §5)

    y = r + gamma (1 - terminated) min_{|delta|_inf <= eps} Q_oa'(s', clip(pi(s') + delta))

where ``Q_oa'`` is a Polyak-averaged target network and the inner min is the PGD above
(``target_steps`` steps from a random start) with the unperturbed action ``pi(s')`` added as a
candidate, so the OA target is never above the plain (Sarsa-style) target
``r + gamma (1 - terminated) Q_oa'(s', pi(s'))`` of the same network.

*Data.* The victim's own transitions, collected with ``sarsa.collect_transitions`` (the same
episodes, seeds and bookkeeping as Robust Sarsa: only ``terminated`` stops bootstrapping,
truncated and cut episodes bootstrap). One difference: the BEHAVIOUR action is the victim's mean
action plus uniform noise ``U(-explore * eps, explore * eps)`` (clipped; default explore 3), i.e.
the victim under a Random action attack of three times the budget. The attack queries
``Q_oa(s, x)`` at every ``x`` of the ball around ``pi(s)``; with the victim's deterministic
actions alone the critic would only ever be trained at ``x = pi(s)``, and PGD would exploit its
arbitrary extrapolation elsewhere; noise wider than the ball also covers the states an adversary
drives the victim to (see ``MinOAQConfig.explore`` for the measurements). ``explore=0`` gives
the deterministic data. The target needs ``pi(s')`` at every stored next state; it is computed
once by the frozen victim (``view.mean_action``), not taken from the behaviour data.

*Cache.* With ``FitContext.cache_dir`` the fitted critic is saved as
``a-minoaq-critic-<key>.safetensors`` plus a JSON record of everything it depends on (victim
fingerprint ``sarsa.victim_fingerprint``, environment, eps, data and fit settings, seed); a later
fit with an identical record loads it (no environment steps), anything else refits. Never pickle.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from robustrl import checkpoint
from robustrl.attacks.base import AttackConfig, FitContext, parse_attack_config
from robustrl.attacks.sarsa import (
    SarsaCritic,
    SarsaTransitions,
    collect_transitions,
    victim_fingerprint,
)
from robustrl.errors import CheckpointError, ConfigError
from robustrl.threat import ActionBall
from robustrl.views import PolicyView

CACHE_FORMAT = "robustrl.oa-critic/1"
_EXPLORE_TAG = 0x0A0A  # separates the behaviour noise stream from other uses of the fit seed

Objective = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- PGD over the executed action


def action_box(action: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds (low, high) of the executed actions ``clip(a + delta, -1, 1)``, ``|delta| <= eps``."""
    return (action - eps).clamp(-1.0, 1.0), (action + eps).clamp(-1.0, 1.0)


def uniform_executed(
    action: torch.Tensor, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``clip(a + U(-eps, eps), -1, 1)``: the Random action attack, also PGD's random start."""
    u = torch.rand(action.shape, generator=generator, dtype=action.dtype).to(action.device)
    return ActionBall(eps).apply(action, (2.0 * u - 1.0) * eps)


def minimize_over_actions(
    objective: Objective,
    action: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float | None = None,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``objective(x)`` (B,) over executed actions ``x`` within eps of ``action``.

    Signed-gradient steps of ``step_size`` (default ``2.5 eps / steps``) from ``start`` (default:
    ``action`` clipped), each projected on the box ``action_box(action, eps)``. Returns the best
    iterate per row and its value (both detached).
    """
    low, high = action_box(action, eps)
    step = 2.5 * eps / steps if step_size is None else float(step_size)
    x = (action.clamp(-1.0, 1.0) if start is None else start).detach()
    x = torch.minimum(torch.maximum(x, low), high)
    best = best_value = None
    for k in range(steps + 1):
        x = x.detach().requires_grad_(k < steps)
        with torch.enable_grad():
            value = objective(x)
            grad = torch.autograd.grad(value.sum(), x)[0] if k < steps else None
        value = value.detach()
        if best is None:
            best, best_value = x.detach(), value
        else:
            better = value < best_value
            best = torch.where(better.unsqueeze(-1), x.detach(), best)
            best_value = torch.where(better, value, best_value)
        if grad is not None:
            x = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), low), high)
    return best, best_value


# ---------------------------------------------------------------- configuration


@dataclass
class ActionAttackConfig(AttackConfig):
    """Settings shared by all action attacks (none)."""


@dataclass
class ActionPGDConfig(ActionAttackConfig):
    """PGD over the executed action (``a-minq``)."""

    steps: int = 10
    """Signed-gradient steps (as PGD-minQ on observations, ALGORITHMS.md §4)."""

    step_size: float | None = None
    """Step in normalised action units; None: ``2.5 eps / steps`` (OA-TD3's default): the total
    travel exceeds the box width 2 eps, so the search can cross the box from a random start."""

    random_start: bool = True
    """Start at ``clip(a + U(-eps, eps))``; false: at the victim's action ``a``."""


@dataclass
class MinOAQConfig(ActionPGDConfig):
    """``a-minoaq``: the PGD settings plus the fit of an OA critic for victims without one."""

    victim_critic: bool = True
    """Use the victim's own OA critic (``view.oa_q_value``) when it has one; false fits one
    anyway (e.g. to compare the fitted critic with an OA-TD3 agent's)."""

    transitions: int = 100_000
    """Environment steps of victim data (one transition each), as Robust Sarsa's default;
    ``FitContext.budget`` caps it."""

    gradient_steps: int = 30_000
    """Critic updates (Robust Sarsa's DDPG-style default)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layers of the critic (2x256 ReLU, the size of the agent critics it stands for)."""

    batch_size: int = 256
    """Minibatch size of the critic updates."""

    lr: float = 1e-3
    """Adam learning rate (DDPG's critic rate, as Robust Sarsa)."""

    gamma: float = 0.99
    """Discount of the OA target (the agents' discount)."""

    tau: float = 0.01
    """Polyak rate of the target critic: Robust Sarsa's 0.01 (OA-TD3 trains with 0.005, but there
    the policy moves too; for a frozen victim 0.01 propagates values twice as fast for the same
    number of updates)."""

    target_steps: int = 5
    """PGD steps of the target's inner min (random start, plus the unperturbed action as a
    candidate). OA-TD3 uses 10 (the paper 15-20); each step is a forward and backward pass of
    the target network, so 5 halves the fit's cost; the 1-D box of Pendulum needs fewer."""

    target_step_size: float | None = None
    """Step of the target's PGD; None: ``2.5 eps / target_steps``."""

    explore: float = 3.0
    """Behaviour noise while collecting: the victim's mean action plus ``U(-explore * eps,
    explore * eps)`` (clipped). 1 covers exactly the actions the attack queries; wider noise also
    visits the states an adversary drives the victim to, which the victim's own (and the Random
    attack's) trajectories rarely reach. Measured on an undefended Pendulum SAC agent at eps 0.5
    with a small fit (5000 transitions, 4000 updates of a 64x64 critic, six fit seeds; 10
    episodes): explore 1 gave returns -282 to -717 (median about -410), 2 gave -405 to -1263,
    3 gave -1131 to -1265 (a-random -241, a-minq -925). With 30k transitions and 10k updates at
    eps 0.3 explore 1 and 3 were alike (-617/-619 vs -606/-699; a-minq -371). 0: the victim's
    deterministic actions only (the critic then sees no other action)."""

    n_envs: int = 8
    """Environments stepped in parallel while collecting (part of the data's identity)."""


def _check_pgd(cfg: ActionPGDConfig, name: str) -> None:
    if cfg.steps < 1:
        raise ConfigError(f"attack {name!r}: steps must be >= 1, got {cfg.steps}")
    if cfg.step_size is not None and not (math.isfinite(cfg.step_size) and cfg.step_size > 0):
        raise ConfigError(f"attack {name!r}: step_size must be > 0 or None, got {cfg.step_size}")


def _check_minoaq(cfg: MinOAQConfig, name: str) -> None:
    def bad(message: str) -> ConfigError:
        return ConfigError(f"attack {name!r}: {message}")

    _check_pgd(cfg, name)
    for key in ("transitions", "gradient_steps", "batch_size", "n_envs", "target_steps"):
        if getattr(cfg, key) < 1:
            raise bad(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if not cfg.hidden_sizes or min(cfg.hidden_sizes) < 1:
        raise bad(f"hidden_sizes must be positive, got {cfg.hidden_sizes}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise bad(f"lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.gamma < 1.0:
        raise bad(f"gamma must be in [0, 1), got {cfg.gamma}")
    if not 0.0 < cfg.tau <= 1.0:
        raise bad(f"tau must be in (0, 1], got {cfg.tau}")
    if cfg.target_step_size is not None and not (
        math.isfinite(cfg.target_step_size) and cfg.target_step_size > 0
    ):
        raise bad(f"target_step_size must be > 0 or None, got {cfg.target_step_size}")
    if not (math.isfinite(cfg.explore) and cfg.explore >= 0):
        raise bad(f"explore must be finite and >= 0, got {cfg.explore}")


# ---------------------------------------------------------------- base class


class ActionAttack(ABC):
    """Base class of the action attacks: ``perturb(o, a)`` returns the executed action."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ActionAttackConfig]] = ActionAttackConfig
    requires: ClassVar[tuple[str, ...]] = ()  # e.g. ("q_value",): what the victim must provide
    learned: ClassVar[bool] = False  # needs a training budget (none of these does)
    description: ClassVar[str] = ""

    def __init__(
        self,
        view: PolicyView,
        ball: ActionBall,
        config: ActionAttackConfig | None = None,
        seed: int = 0,
    ):
        missing = [need for need in self.requires if not getattr(view, f"has_{need}", False)]
        if missing:
            raise ConfigError(
                f"action attack {self.name!r} needs the victim's {', '.join(missing)}, which "
                f"{view.kind} does not have; use a-minoaq (fits an OA critic to the agent), "
                "a-biggest or a-random"
            )
        if not isinstance(ball, ActionBall):
            raise ConfigError(f"action attack {self.name!r} needs an ActionBall, got {ball!r}")
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"action attack {self.name!r} needs a {self.config_class.__name__}")
        self.view, self.ball, self.config, self.seed = view, ball, config, seed
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def eps(self) -> float:
        return self.ball.eps

    @abstractmethod
    def perturb(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Executed actions (B, act_dim): in [-1, 1] and within eps of ``action``."""

    def reset(self, index: torch.Tensor | None = None) -> None:  # noqa: B027 (optional hook)
        """Episodes of batch rows ``index`` ended; these attacks are stateless and ignore it."""

    def fit(self, context: FitContext) -> dict[str, Any]:
        """Prepare the attack before evaluation (fit a critic); stateless attacks: nothing."""
        return {}

    def variants(self) -> list[ActionAttack]:
        """Attacks to evaluate under this name; the worst counts."""
        return [self]

    @property
    def label(self) -> str:
        return self.name

    def random_executed(self, action: torch.Tensor) -> torch.Tensor:
        """``clip(a + U(-eps, eps))`` from this attack's generator."""
        return uniform_executed(action, self.eps, self.generator)


class RandomActionAttack(ActionAttack):
    """``delta ~ U(-eps, eps)``."""

    name = "a-random"
    config_class = ActionAttackConfig
    description = "uniform action noise in the ball"

    def perturb(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.random_executed(action)


class BiggestActionAttack(ActionAttack):
    """The vertex moving every coordinate towards its farther bound (tie at 0: ``-eps``)."""

    name = "a-biggest"
    config_class = ActionAttackConfig
    description = "vertex of the ball moving each action coordinate towards its farther bound"

    def perturb(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        delta = torch.where(action < 0, self.eps, -self.eps).to(action.dtype)
        return self.ball.apply(action, delta)


class _ActionPGDAttack(ActionAttack):
    config_class = ActionPGDConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _check_pgd(self.config, self.name)

    @abstractmethod
    def objective(self, obs: torch.Tensor) -> Objective:
        """Value (B,) to minimise over executed actions at observations ``obs``."""

    def perturb(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.eps == 0:
            return self.ball.apply(action, torch.zeros_like(action))
        cfg = self.config
        objective = self.objective(obs)  # first: it raises if the attack is not ready
        start = self.random_executed(action) if cfg.random_start else None
        x, _ = minimize_over_actions(objective, action, self.eps, cfg.steps, cfg.step_size, start)
        return self.ball.apply(action, x - action)


class MinQActionAttack(_ActionPGDAttack):
    """PGD minimising the victim's nominal critic ``Q(o, clip(a + delta))``."""

    name = "a-minq"
    requires = ("q_value",)
    description = "PGD on the action perturbation minimising the victim's Q(o, a + delta)"

    def objective(self, obs: torch.Tensor) -> Objective:
        return lambda x: self.view.q_value(obs, x)


# ---------------------------------------------------------------- the fitted OA critic


class _ExploringVictim:
    """The victim acting with its mean action plus uniform noise in ``[-width, width]``.

    The behaviour policy of the OA critic's data, in the shape ``collect_transitions`` expects
    (``normalize``, ``act``, ``to_env``, ``device``); the stored action is the executed one.
    """

    def __init__(self, view: PolicyView, width: float, seed: int):
        self.view, self.width = view, width
        self.device = getattr(view, "device", "cpu")
        self.generator = torch.Generator().manual_seed(seed)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return self.view.normalize(raw)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        return self.view.to_env(action)

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        action = self.view.act(obs, True)
        if self.width == 0:
            return action
        return uniform_executed(action, self.width, self.generator)


def victim_mean_actions(view: PolicyView, obs: np.ndarray, chunk: int = 4096) -> torch.Tensor:
    """The victim's deterministic actions ``pi(s)`` (N, act_dim) for stored states."""
    device = getattr(view, "device", "cpu")
    out = []
    with torch.no_grad():
        for i in range(0, len(obs), chunk):
            batch = torch.as_tensor(obs[i : i + chunk], device=device)
            out.append(view.mean_action(batch).detach())
    return torch.cat(out).float()


def oa_targets(
    target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    reward: torch.Tensor,
    not_done: torch.Tensor,
    next_obs: torch.Tensor,
    next_action: torch.Tensor,
    eps: float,
    gamma: float,
    steps: int,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The OA target and the plain one, each (B,), for the same target critic.

    ``y_oa = r + gamma * not_done * min_{|delta| <= eps} target(s', clip(pi(s') + delta))`` (PGD
    from a random start, ``pi(s')`` itself included as a candidate, so ``y_oa <= y``) and
    ``y = r + gamma * not_done * target(s', pi(s'))``.
    """
    with torch.no_grad():
        clean = target(next_obs, next_action)
    if eps > 0:
        start = uniform_executed(next_action, eps, generator)
        _, worst = minimize_over_actions(
            lambda x: target(next_obs, x), next_action, eps, steps, step_size, start
        )
        worst = torch.minimum(worst, clean)  # the unperturbed action is a candidate
    else:
        worst = clean
    return reward + gamma * not_done * worst, reward + gamma * not_done * clean


def fit_oa_critic(
    data: SarsaTransitions,
    next_pi: torch.Tensor,
    eps: float,
    cfg: MinOAQConfig,
    seed: int = 0,
    progress: bool = False,
    desc: str = "a-minoaq: fitting",
    device: torch.device | str = "cpu",
) -> tuple[SarsaCritic, dict[str, float]]:
    """Fit ``Q_oa`` on ``data`` (``next_pi``: the victim's mean action at each ``next_obs``).

    Loss ``0.5 (Q(s, a) - y_oa)^2`` (as Robust Sarsa), Adam, Polyak target. Initial weights, the
    minibatch sequence and PGD starts depend on ``seed`` only. Stats over the last updates:
    ``td_loss`` and ``oa_gap``, the mean of ``y - y_oa`` (how much the adversary costs).
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
    next_pi = next_pi.to(device)
    n = len(data)
    td_sum = gap_sum = 0.0
    window = max(1, min(1000, cfg.gradient_steps // 10))
    started = time.perf_counter()
    for k in tqdm(range(cfg.gradient_steps), desc=desc, unit="step", disable=not progress):
        idx = torch.randint(n, (cfg.batch_size,), generator=batches).to(device)
        y_oa, y = oa_targets(
            target,
            t["reward"][idx],
            t["not_done"][idx],
            t["next_obs"][idx],
            next_pi[idx],
            eps,
            cfg.gamma,
            cfg.target_steps,
            cfg.target_step_size,
            starts,
        )
        q = critic(t["obs"][idx], t["action"][idx])
        td = 0.5 * (q - y_oa).pow(2).mean()
        optim.zero_grad(set_to_none=True)
        td.backward()
        optim.step()
        with torch.no_grad():
            for p_target, p in zip(target.parameters(), critic.parameters()):
                p_target.lerp_(p, cfg.tau)
        if k >= cfg.gradient_steps - window:
            td_sum += float(td.detach())
            gap_sum += float((y - y_oa).mean())
    critic.requires_grad_(False).eval()
    stats = {
        "td_loss": td_sum / window,
        "oa_gap": gap_sum / window,
        "fit_time_s": time.perf_counter() - started,
    }
    return critic, stats


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


class MinOAQActionAttack(_ActionPGDAttack):
    """PGD minimising an OA critic: the victim's own, or one fitted to the frozen victim."""

    name = "a-minoaq"
    config_class = MinOAQConfig
    description = (
        "PGD on the action perturbation minimising an optimal-adversary-aware critic "
        "(the victim's own, or fitted to it)"
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        _check_minoaq(self.config, self.name)
        self.critic: SarsaCritic | None = None
        self.fit_info: dict[str, Any] | None = None
        self._fit_key: str | None = None

    @property
    def uses_victim_critic(self) -> bool:
        return self.config.victim_critic and bool(getattr(self.view, "has_oa_q_value", False))

    @property
    def needs_fit(self) -> bool:
        return not self.uses_victim_critic and self.eps > 0

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
            "explore": cfg.explore,
            "n_envs": cfg.n_envs,
            "seed": context.seed,
        }

    def _identity(self, context: FitContext) -> dict[str, Any]:
        cfg = self.config
        return _jsonable(
            {
                "format": CACHE_FORMAT,
                "victim": victim_fingerprint(self.view),
                "env": {"id": self.view.env_id, "kwargs": getattr(self.view, "env_kwargs", {})},
                "eps": self.eps,
                "data": self._data_spec(context),
                "fit": {
                    key: getattr(cfg, key)
                    for key in (
                        "gradient_steps",
                        "hidden_sizes",
                        "batch_size",
                        "lr",
                        "gamma",
                        "tau",
                        "target_steps",
                        "target_step_size",
                    )
                },
            }
        )

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
            warnings.warn(
                f"{self.name}: ignoring unreadable cached critic {weights}: {exc}", stacklevel=3
            )
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
        """Fit (or load from the cache) the OA critic; nothing to do with the victim's own."""
        if self.uses_victim_critic:
            return {"critic": "victim", "cached": False, "env_steps": 0}
        if self.eps == 0:
            return {"critic": "none (eps is 0)", "cached": False, "env_steps": 0}
        identity = self._identity(context)
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        if self.critic is not None and self._fit_key == key:
            return {**self.fit_info, "cached": True, "env_steps": 0}
        paths = None
        if context.cache_dir is not None:
            stem = Path(context.cache_dir) / f"{self.name}-critic-{key}"
            paths = (stem.with_suffix(".safetensors"), stem.with_suffix(".json"))
            record = self._load_cached(paths, identity)
            if record is not None:
                self._fit_key = key
                self.fit_info = {**record["result"], "cached": True, "env_steps": 0}
                return dict(self.fit_info)
        spec = self._data_spec(context)
        behaviour = _ExploringVictim(
            self.view,
            spec["explore"] * self.eps,
            int(np.random.SeedSequence([spec["seed"], _EXPLORE_TAG]).generate_state(1)[0]),
        )
        data = collect_transitions(
            behaviour,
            context.make_env,
            spec["transitions"],
            True,
            spec["seed"],
            spec["n_envs"],
            context.progress,
        )
        next_pi = victim_mean_actions(self.view, data.next_obs)
        self.critic, stats = fit_oa_critic(
            data,
            next_pi,
            self.eps,
            self.config,
            seed=context.seed,
            progress=context.progress,
            device=getattr(self.view, "device", "cpu"),
        )
        result = {
            "critic": "fitted",
            "transitions": len(data),
            "gradient_steps": self.config.gradient_steps,
            **stats,
        }
        if paths is not None:
            self._save_cached(paths, {"identity": identity, "key": key, "result": result})
        self._fit_key = key
        self.fit_info = {**result, "cached": False, "env_steps": spec["transitions"]}
        return dict(self.fit_info)

    # -- attacking

    def oa_critic(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The OA critic the attack minimises, ``(o, a) -> Q_oa(o, a)`` (B,)."""
        if self.uses_victim_critic:
            return self.view.oa_q_value
        if self.critic is None:
            raise ConfigError(
                f"attack {self.name!r} must be fit() before perturb(): {self.view.kind} has no "
                "OA critic, so one is fitted to it"
            )
        return self.critic

    def objective(self, obs: torch.Tensor) -> Objective:
        critic = self.oa_critic()
        return lambda x: critic(obs, x)


# ---------------------------------------------------------------- registry

ACTION_ATTACKS: dict[str, type[ActionAttack]] = {
    cls.name: cls
    for cls in (RandomActionAttack, BiggestActionAttack, MinQActionAttack, MinOAQActionAttack)
}


def action_attack_names() -> list[str]:
    return list(ACTION_ATTACKS)


def make_action_attack(
    name: str,
    view: PolicyView,
    ball: ActionBall,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
) -> ActionAttack:
    """An action attack by name, its ``settings`` checked against its config dataclass."""
    if name not in ACTION_ATTACKS:
        raise ConfigError(
            f"unknown action attack {name!r}; choose from {', '.join(ACTION_ATTACKS)}"
        )
    cls = ACTION_ATTACKS[name]
    config = parse_attack_config(cls.config_class, name, settings or {})
    return cls(view, ball, config, seed=seed)


__all__ = [
    "ACTION_ATTACKS",
    "ActionAttack",
    "ActionAttackConfig",
    "ActionPGDConfig",
    "BiggestActionAttack",
    "MinOAQActionAttack",
    "MinOAQConfig",
    "MinQActionAttack",
    "RandomActionAttack",
    "action_attack_names",
    "action_box",
    "fit_oa_critic",
    "make_action_attack",
    "minimize_over_actions",
    "oa_targets",
    "uniform_executed",
    "victim_mean_actions",
]
