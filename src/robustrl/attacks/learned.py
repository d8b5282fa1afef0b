"""Learned attacks: SA-RL (the "optimal attack") and PA-AD (ALGORITHMS.md §4).

Both train an attacker with robustrl's own SAC (``robustrl.training.Trainer``) on an environment
that wraps a fresh copy of the victim's environment (``FitContext.make_env``): the attacker is
rewarded with the victim's reward negated, the victim is frozen and acts (deterministically by
default) on the perturbed observation. The training budget is ``FitContext.budget`` environment
steps; a learned attack without one is a ``ConfigError``.

SA-RL (Zhang et al. 2021)
    The attacker observes the victim's normalised observation ``o`` and outputs
    ``u in [-1, 1]^dim(o)``; the victim sees ``õ = project(o + eps * u)`` (per-dimension radii
    multiply elementwise). At test time ``u = tanh(mu(o'))``, the attacker's mean action, where
    ``o'`` is ``o`` under the attacker's own (frozen) observation normaliser.

PA-AD (Sun et al. 2022)
    A learned *director* observes ``o`` and outputs ``u in [-1, 1]^act_dim``; ``d = u / |u|_2``
    is a unit direction in the victim's action space (``d = 0`` when ``|u|_2 < 1e-6``: the actor
    then only maximises the action change). The *actor* turns ``d`` into ``õ`` with one FGSM step:
    from ``õ0 = project(o + U(-f eps, f eps))`` (``f = start_fraction``, default 0.1: the
    objective below is not differentiable at ``õ = o``, where the action change is zero) it
    computes the gradient of ``cos(pi(õ0) - pi(o), d) + |pi(õ0) - pi(o)|_2`` (``pi``: the
    victim's mean action) and returns ``project(o, õ0 + eps * sign(grad))``, which maximises it.
    The cosine has zero gradient when the action change is (anti-)parallel to ``d``, which is
    always the case for a one-dimensional action: the step then ignores ``d``. With ``mirror``
    (default on) the objective is also evaluated at the mirror point ``o - (õ - o)`` and the
    better point is kept (see ``fgsm_actor``); ``mirror=false`` is the plain step. The director's
    environment applies this actor inside ``step``.

Seeds and variants
    The paper trains 4 attackers per setting and keeps the worst for the victim. ``seeds`` (default
    1, for speed) sets how many: ``variants()`` returns one attack per attacker seed
    ``seed, seed + 1, ...`` (``seed`` is the attack's constructor seed), labelled
    ``sa-rl[seed=S]``, so the evaluation runner keeps the worst. The attacker seed seeds the
    attacker's SAC and names its cached run; ``FitContext.seed`` is not used.

Caching
    With ``FitContext.cache_dir`` the attacker's run directory is
    ``cache_dir/<name>_<eps>_<seed>/`` with ``attacker.json`` beside the run files. It is reused
    when the stored key matches: the victim's fingerprint (``victim_fingerprint``: a SHA-256 of
    its actor's weights and its normaliser), eps, the budget, the attacker seed and the attack's
    settings; otherwise the attacker is retrained and the folder replaced (it is trained in a
    hidden ``.partial`` folder first, so an interrupted training never leaves a usable-looking
    cache). Use one cache folder per victim: two victims sharing one evict each other. Without a
    cache_dir the attacker trains in a temporary directory that is deleted after loading.

Settings (``LearnedConfig``; PA-AD's ``PAADConfig`` adds ``start_fraction`` and ``mirror``)
    hidden_sizes [64, 64]: small networks learn faster from a small budget; the paper uses the
        agent's 2x256 (set ``hidden_sizes=[256,256]`` for full-size MuJoCo budgets).
    lr 1e-3 for the actor, critic and temperature (the agent's SAC uses 3e-4): on Pendulum with a
        3000-step budget, 3e-4 left the SA-RL attacker weaker than random noise, 1e-3 made the
        victim fall (tests/test_learned_attacks.py); use 3e-4 for long budgets.
    batch_size 128, learning_starts 1000 (uniform random attacker actions first, capped at a
        quarter of the budget so a small budget still learns).
    target_entropy None = -dim(attacker action) (-dim(o) for SA-RL, -act_dim for PA-AD): the
        SAC heuristic the agent uses; the paper's value is lost. A higher target (e.g. 0) keeps
        the attacker's behaviour noisier, but in a high-dimensional action space independent
        per-coordinate noise is almost orthogonal to the few directions the victim is sensitive
        to: it acts like the (weak) random attack, dilutes the signal the critic must learn from,
        and a strong perturbation sits at a vertex of the ball, i.e. a saturated, low-entropy
        action. -dim keeps a fixed entropy per coordinate whatever the dimension; raise it only
        if training collapses early. (Pendulum, eps 0.3, 3000 steps, one seed: target 0 gave a
        victim return of -855 against -1018 with the default.)
    normalize True: the attacker keeps robustrl's default running observation normaliser. Its
        inputs are the victim's normalised observations, but under attack the victim visits
        states outside its own training distribution (a fallen pendulum, a falling hopper),
        where they can be far from unit scale (up to the clip, 10); a second, affine
        normalisation re-centres them at no cost. At test time it is frozen. (Pendulum, eps 0.3,
        3000 steps, one seed: without it -918, with it -1018.)
    stochastic_victim False: the victim acts with its mean action during training (as in
        evaluation); True samples its actions.
    start_fraction 0.1 and mirror True (PA-AD only): the FGSM actor's random start radius, as a
        fraction of eps, and the mirror candidate above.
    seeds 1 (paper: 4); threads 0 (keep torch's current setting); overrides {}: any other
        TrainConfig key for the attacker's SAC, applied last (so it wins over the fields above),
        e.g. ``{"sac.tau": 0.01, "replay.prioritized": false}``; not ``steps`` (the budget) nor
        ``seed`` (the attack's seed). Everything else is robustrl's SAC as the agent uses it
        (prioritised replay, Huber critics, gamma 0.99); no periodic evaluation, one checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustrl.attacks import register
from robustrl.attacks.base import Attack, AttackConfig, FitContext
from robustrl.errors import CheckpointError, ConfigError
from robustrl.threat import ObservationBall
from robustrl.views import PolicyView

CACHE_FORMAT = 1
META_FILE = "attacker.json"
MIN_DIRECTION_NORM = 1e-6


# ---------------------------------------------------------------- perturbation maps


def sa_rl_perturbation(
    ball: ObservationBall, obs: torch.Tensor, action: torch.Tensor
) -> torch.Tensor:
    """``project(o + radius * u)`` for attacker actions ``u`` in [-1, 1]^dim(o), (B, obs_dim)."""
    return ball.project(obs, obs + ball.radius(obs) * action)


def unit_direction(action: torch.Tensor) -> torch.Tensor:
    """``u / |u|_2`` per row; rows with ``|u|_2 < 1e-6`` give the zero direction."""
    norm = action.norm(dim=-1, keepdim=True)
    unit = action / norm.clamp_min(MIN_DIRECTION_NORM)
    return torch.where(norm >= MIN_DIRECTION_NORM, unit, torch.zeros_like(action))


def fgsm_actor(
    view: PolicyView,
    ball: ObservationBall,
    obs: torch.Tensor,
    direction: torch.Tensor,
    start_fraction: float = 0.1,
    generator: torch.Generator | None = None,
    mirror: bool = True,
) -> torch.Tensor:
    """PA-AD's actor: one FGSM step pushing the victim's action along ``direction`` (B, act_dim).

    Maximises ``cos(pi(õ) - pi(o), d) + |pi(õ) - pi(o)|_2`` from a uniform start in the ball of
    radius ``start_fraction * eps``: ``õ = project(o, õ0 + eps * sign(grad))`` (B, obs_dim).

    The cosine's gradient is zero wherever the action change is parallel or anti-parallel to
    ``d`` -- always when the action has one dimension -- so the step then follows the norm term
    alone, in whichever direction the random start happened to move the action. With ``mirror``
    the objective is also evaluated at the mirror point ``o - (õ - o)`` (in the ball too) and the
    better of the two is kept: the same objective, never worse, and in one dimension it makes the
    action move towards ``d``.
    """
    if ball.is_zero:
        return obs.clone()
    radius = ball.radius(obs)
    with torch.no_grad():
        clean = view.mean_action(obs)

    def objective(adv: torch.Tensor) -> torch.Tensor:
        change = view.mean_action(adv) - clean
        return F.cosine_similarity(change, direction, dim=-1, eps=1e-8) + change.norm(dim=-1)

    u = torch.rand(obs.shape, generator=generator, dtype=obs.dtype).to(obs.device)
    start = ball.project(obs, obs + (2.0 * u - 1.0) * start_fraction * radius).detach()
    x = start.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(objective(x).sum(), x)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    adv = ball.project(obs, start + radius * grad.sign())
    if mirror:
        flipped = ball.project(obs, 2.0 * obs - adv)
        with torch.no_grad():
            better = objective(flipped) > objective(adv)
        adv = torch.where(better.unsqueeze(-1), flipped, adv)
    return adv


# ---------------------------------------------------------------- attacker environments


class AttackerEnv(gym.Wrapper):
    """SA-RL's environment: the frozen victim plays the wrapped env on perturbed observations.

    Observation: the victim's normalised observation ``o`` (float32, unbounded Box of dim(o)).
    Action: ``u`` in [-1, 1]^k (k = dim(o) here). Reward: the env's reward negated. The victim
    acts on ``perturbation(o, u)``; terminated/truncated pass through. ``info`` adds
    ``env_reward``, ``perturbed_obs``, ``victim_action`` (in [-1, 1]) and ``env_action``.
    ``episode_returns`` collects the attacker's return of every finished episode.
    """

    def __init__(
        self,
        env: gym.Env,
        view: PolicyView,
        ball: ObservationBall,
        stochastic_victim: bool = False,
        seed: int = 0,
    ):
        super().__init__(env)
        self.view, self.ball, self.stochastic_victim = view, ball, stochastic_victim
        self.device = getattr(view, "device", torch.device("cpu"))
        self.generator = torch.Generator().manual_seed(seed)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (view.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.attacker_dim,), np.float32)
        self.episode_returns: list[float] = []
        self._obs: np.ndarray | None = None
        self._return = 0.0

    @property
    def attacker_dim(self) -> int:
        return self.view.obs_dim

    def perturbation(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``õ`` (B, obs_dim) for attacker actions (B, k) in [-1, 1]."""
        return sa_rl_perturbation(self.ball, obs, action)

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(self.view.normalize(np.asarray(raw)[None])[0], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        raw, info = self.env.reset(seed=seed, options=options)
        self._obs, self._return = self._normalize(raw), 0.0
        return self._obs.copy(), info

    def step(self, action: np.ndarray):
        if self._obs is None:
            raise RuntimeError("AttackerEnv.step called before reset")
        obs = torch.as_tensor(self._obs[None], device=self.device)
        u = torch.as_tensor(np.asarray(action, np.float32).reshape(1, -1), device=self.device)
        perturbed = self.perturbation(obs, u.clamp(-1.0, 1.0))
        victim_action = self.view.act(perturbed, deterministic=not self.stochastic_victim)
        victim_action = victim_action.detach().cpu().numpy()
        env_action = self.view.to_env(victim_action)[0]
        raw, reward, terminated, truncated, info = self.env.step(env_action)
        info = dict(info)
        info.update(
            env_reward=float(reward),
            perturbed_obs=perturbed[0].detach().cpu().numpy(),
            victim_action=victim_action[0],
            env_action=env_action,
        )
        self._obs = self._normalize(raw)
        attacker_reward = -float(reward)
        self._return += attacker_reward
        if terminated or truncated:
            self.episode_returns.append(self._return)
        return self._obs.copy(), attacker_reward, terminated, truncated, info


class DirectorEnv(AttackerEnv):
    """PA-AD's director environment: action ``u`` in [-1, 1]^act_dim, normalised to a unit
    direction ``d``; the FGSM actor turns ``d`` into ``õ`` inside ``step``."""

    def __init__(self, *args: Any, start_fraction: float = 0.1, mirror: bool = True, **kwargs: Any):
        self.start_fraction, self.mirror = start_fraction, mirror
        super().__init__(*args, **kwargs)

    @property
    def attacker_dim(self) -> int:
        return self.view.act_dim

    def perturbation(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return fgsm_actor(
            self.view,
            self.ball,
            obs,
            unit_direction(action),
            self.start_fraction,
            self.generator,
            self.mirror,
        )


# ---------------------------------------------------------------- victim fingerprint


def _tensor_bytes(name: str, tensor: torch.Tensor) -> bytes:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    header = f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode()
    return header + t.view(torch.uint8).numpy().tobytes()


def victim_fingerprint(view: PolicyView) -> str:
    """SHA-256 identifying the victim's behaviour: its actor's weights and its normaliser.

    Uses ``view.actor`` when it is a module, else every module the view holds; a view with no
    module contributes its mean actions on a fixed probe (rounded). The normaliser enters through
    its statistics where the view exposes them (``view.policy.normalizer``), its ``obs_std``, and
    ``view.normalize`` of a fixed raw probe.
    """
    h = hashlib.sha256()
    meta = [type(view).__name__, view.kind, getattr(view, "env_id", ""), view.obs_dim, view.act_dim]
    h.update(json.dumps(meta).encode())
    actor = getattr(view, "actor", None)
    if isinstance(actor, nn.Module):
        modules = {"actor": actor}
    else:
        modules = {k: v for k, v in sorted(vars(view).items()) if isinstance(v, nn.Module)}
    for prefix, module in modules.items():
        for name, tensor in sorted(module.state_dict().items()):
            h.update(_tensor_bytes(f"{prefix}.{name}", tensor))
    normalizer = getattr(getattr(view, "policy", None), "normalizer", None)
    if hasattr(normalizer, "state_dict"):
        for name, array in sorted(normalizer.state_dict().items()):
            h.update(name.encode() + np.ascontiguousarray(array).tobytes())
        h.update(
            repr((getattr(normalizer, "clip", None), getattr(normalizer, "enabled", None))).encode()
        )
    h.update(np.asarray(view.obs_std, np.float64).tobytes())
    probe = np.random.default_rng(12345).normal(0.0, 3.0, (32, view.obs_dim)).astype(np.float32)
    normalized = np.asarray(view.normalize(probe), np.float32)
    h.update(normalized.tobytes())
    if not modules:
        with torch.no_grad():
            device = getattr(view, "device", "cpu")
            action = view.mean_action(torch.as_tensor(normalized, device=device))
        h.update(np.round(action.cpu().numpy().astype(np.float64), 4).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- attacks


@dataclass
class LearnedConfig(AttackConfig):
    """Settings of a learned attacker (see the module docstring for the reasons of each default)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    batch_size: int = 128
    lr: float = 1e-3  # actor, critic and temperature learning rates (the agent's: 3e-4)
    learning_starts: int = 1000  # capped at budget // 4
    target_entropy: float | None = None  # None: -dim(attacker action)
    normalize: bool = True  # the attacker's own running observation normaliser
    stochastic_victim: bool = False
    seeds: int = 1  # attackers trained (variants); the paper keeps the worst of 4
    threads: int = 0  # torch threads while training; 0 keeps the current setting
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys for the SAC


@dataclass
class PAADConfig(LearnedConfig):
    start_fraction: float = 0.1  # FGSM random start: U(-f eps, f eps)
    mirror: bool = True  # also try the mirror point o - (õ - o); keep the better (fgsm_actor)


@dataclass
class TrainedAttacker:
    """The attacker's frozen actor and observation normaliser."""

    actor: nn.Module
    normalizer: Any  # robustrl.envs.RunningNormalizer
    run_dir: Path | None = None

    def action(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic attacker action ``tanh(mu(o'))`` (B, k) for normalised victim obs."""
        x = torch.as_tensor(self.normalizer.normalize(obs.detach().cpu().numpy()))
        with torch.no_grad():
            u = self.actor.mean_action(x)
        return u.to(device=obs.device, dtype=obs.dtype)


def load_attacker(run_dir: Path) -> TrainedAttacker:
    from robustrl.policy import load

    policy = load(run_dir)
    policy.agent.requires_grad_(False)
    return TrainedAttacker(policy.agent.actor, policy.normalizer, run_dir)


class LearnedAttack(Attack):
    """Base of the learned observation attacks: SAC-trained attacker on the victim's env."""

    learned = True
    config_class: ClassVar[type[AttackConfig]] = LearnedConfig
    env_class: ClassVar[type[AttackerEnv]] = AttackerEnv

    def __init__(
        self,
        view: PolicyView,
        ball: ObservationBall,
        config: AttackConfig | None = None,
        seed: int = 0,
    ):
        super().__init__(view, ball, config, seed)
        cfg = self.config
        if cfg.seeds < 1:
            raise ConfigError(f"{self.name}.seeds must be >= 1, got {cfg.seeds}")
        if cfg.batch_size <= 0:
            raise ConfigError(f"{self.name}.batch_size must be > 0, got {cfg.batch_size}")
        if not cfg.lr > 0:
            raise ConfigError(f"{self.name}.lr must be > 0, got {cfg.lr}")
        if cfg.learning_starts < 0:
            raise ConfigError(
                f"{self.name}.learning_starts must be >= 0, got {cfg.learning_starts}"
            )
        if not cfg.hidden_sizes or min(cfg.hidden_sizes) <= 0:
            raise ConfigError(f"{self.name}.hidden_sizes must be positive, got {cfg.hidden_sizes}")
        for key in ("steps", "seed"):
            if key in cfg.overrides:
                raise ConfigError(
                    f"{self.name}.overrides cannot set {key!r}: it comes from the "
                    + ("training budget" if key == "steps" else "attack's seed")
                )
        self.seed = seed
        self.attacker: TrainedAttacker | None = None
        self.fitted = False

    # -------------------------------------------------------------- naming and variants

    @property
    def label(self) -> str:
        return f"{self.name}[seed={self.seed}]"

    def variants(self) -> list[Attack]:
        """One attack per attacker seed (``seed, seed + 1, ...``); the worst counts."""
        return [self] + [
            type(self)(self.view, self.ball, self.config, seed=self.seed + k)
            for k in range(1, self.config.seeds)
        ]

    @property
    def attacker_dim(self) -> int:
        return self.view.obs_dim

    def eps_tag(self) -> str:
        eps = self.ball.eps
        if isinstance(eps, tuple):
            return "dims" + hashlib.sha256(json.dumps(list(eps)).encode()).hexdigest()[:10]
        return f"{eps:g}"

    def cache_name(self) -> str:
        return f"{self.name}_{self.eps_tag()}_{self.seed}"

    def cache_key(self, budget: int) -> dict[str, Any]:
        settings = dataclasses.asdict(self.config)
        for key in ("seeds", "threads"):  # do not change what one attacker learns
            settings.pop(key, None)
        key = {
            "format": CACHE_FORMAT,
            "attack": self.name,
            "victim": victim_fingerprint(self.view),
            "eps": list(self.ball.eps) if isinstance(self.ball.eps, tuple) else self.ball.eps,
            "budget": budget,
            "seed": self.seed,
            "settings": settings,
        }
        return json.loads(json.dumps(key))  # the form it has once read back from JSON

    # -------------------------------------------------------------- training

    def make_env(self, context: FitContext) -> AttackerEnv:
        """The attacker's training environment around a fresh copy of the victim's env."""
        return self.env_class(
            context.make_env(),
            self.view,
            self.ball,
            stochastic_victim=self.config.stochastic_victim,
            seed=self.seed,
            **self.env_kwargs(),
        )

    def env_kwargs(self) -> dict[str, Any]:
        return {}

    def train_config(self, budget: int):
        from robustrl.config import apply_overrides, build_config

        cfg = self.config
        if budget < cfg.batch_size:
            raise ConfigError(
                f"{self.name}: a budget of {budget} env steps is below the attacker's batch size "
                f"({cfg.batch_size}): it would never train; give --budget >= {cfg.batch_size}"
            )
        target = -float(self.attacker_dim) if cfg.target_entropy is None else cfg.target_entropy
        config = build_config(
            algo="sac",
            env=getattr(self.view, "env_id", None) or "attacker",
            steps=budget,
            seed=self.seed,
            learning_starts=min(cfg.learning_starts, budget // 4),
            eval_every=0,
            checkpoint_every=0,
            log_every=min(1000, budget),
            compile=False,
            device="cpu",
            threads=cfg.threads,
            overrides={
                "sac.hidden_sizes": list(cfg.hidden_sizes),
                "sac.batch_size": cfg.batch_size,
                "sac.actor_lr": cfg.lr,
                "sac.critic_lr": cfg.lr,
                "sac.alpha_lr": cfg.lr,
                "sac.target_entropy": target,
                "normalizer.enabled": cfg.normalize,
                "replay.capacity": budget,
            },
        )
        apply_overrides(config, dict(cfg.overrides), source=f"{self.name}.overrides")
        config.validate()
        return config

    def _train(self, context: FitContext, run_dir: Path) -> dict[str, Any]:
        from robustrl.training import Trainer

        config = self.train_config(context.budget)
        threads = torch.get_num_threads()
        try:
            with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
                trainer = Trainer(
                    config,
                    run_dir,
                    progress=context.progress,
                    env_factory=lambda: self.make_env(context),
                )
                trainer.run()
        finally:
            torch.set_num_threads(threads)
        returns = trainer.env.episode_returns
        final = returns[-1] if returns else None
        return {
            "training_steps": trainer.step,
            "episodes": len(returns),
            "final_episode_return": final,  # the attacker's: minus the victim's return
            "victim_final_return": None if final is None else -final,
        }

    def fit(self, context: FitContext) -> dict[str, Any]:
        """Train the attacker for ``context.budget`` env steps, or reuse a cached one."""
        budget = context.budget
        if budget is None:
            raise ConfigError(
                f"attack {self.name!r} is learned: give a training budget in environment steps, "
                "e.g. --budget 50000"
            )
        if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget <= 0:
            raise ConfigError(
                f"attack {self.name!r}: the training budget must be a positive whole number of "
                f"environment steps, got {budget!r}"
            )
        budget = int(budget)
        context = dataclasses.replace(context, budget=budget)
        base = {"seed": self.seed, "cached": False, "run_dir": None}
        if self.ball.is_zero:  # nothing to learn: the only point of the ball is o
            self.attacker, self.fitted = None, True
            return {
                **base,
                "training_steps": 0,
                "episodes": 0,
                "final_episode_return": None,
                "victim_final_return": None,
            }
        if context.cache_dir is None:
            with tempfile.TemporaryDirectory(prefix=f"robustrl-{self.name}-") as tmp:
                info = self._train(context, Path(tmp) / "run")
                self.attacker = load_attacker(Path(tmp) / "run")
            self.attacker.run_dir = None
            self.fitted = True
            return {**base, **info}
        folder = Path(context.cache_dir) / self.cache_name()
        key = self.cache_key(budget)
        cached = self._read_meta(folder)
        if cached is not None and cached.get("key") == key:
            try:
                self.attacker = load_attacker(folder)
            except CheckpointError:
                pass  # damaged: retrain below
            else:
                self.fitted = True
                return {**base, **cached["result"], "cached": True, "run_dir": str(folder)}
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            info = self._train(context, partial)
            meta = {"key": key, "result": info}
            (partial / META_FILE).write_text(json.dumps(meta, indent=2))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self.attacker = load_attacker(folder)
        self.fitted = True
        return {**base, **info, "run_dir": str(folder)}

    @staticmethod
    def _read_meta(folder: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads((folder / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and "key" in meta and "result" in meta else None

    # -------------------------------------------------------------- attacking

    def attacker_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The trained attacker's deterministic action (B, k) for normalised victim obs."""
        if not self.fitted:
            raise ConfigError(
                f"attack {self.name!r} is learned: call fit (with a training budget) before perturb"
            )
        if self.attacker is None:
            raise ConfigError(f"attack {self.name!r} has no attacker network (eps is 0)")
        return self.attacker.action(obs)

    def perturb(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise ConfigError(
                f"attack {self.name!r} is learned: call fit (with a training budget) before perturb"
            )
        if self.ball.is_zero:
            return obs.clone()
        return self.apply(obs, self.attacker_action(obs))

    def apply(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``õ`` for attacker actions (B, k) in [-1, 1]."""
        return sa_rl_perturbation(self.ball, obs, action)


@register
class SARLAttack(LearnedAttack):
    """SA-RL: a SAC attacker outputs the perturbation itself, ``õ = project(o + eps * u)``."""

    name = "sa-rl"
    config_class = LearnedConfig
    env_class = AttackerEnv
    description = "learned attacker (SAC on -r) outputting the perturbation (SA-RL)"


@register
class PAADAttack(LearnedAttack):
    """PA-AD: a SAC director picks an action-space direction; one FGSM step realises it."""

    name = "pa-ad"
    config_class = PAADConfig
    env_class = DirectorEnv
    description = "learned director (SAC on -r) of action-space directions + FGSM actor (PA-AD)"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not 0.0 <= self.config.start_fraction <= 1.0:
            raise ConfigError(
                f"pa-ad.start_fraction must be in [0, 1], got {self.config.start_fraction}"
            )

    @property
    def attacker_dim(self) -> int:
        return self.view.act_dim

    def env_kwargs(self) -> dict[str, Any]:
        return {"start_fraction": self.config.start_fraction, "mirror": self.config.mirror}

    def apply(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return fgsm_actor(
            self.view,
            self.ball,
            obs,
            unit_direction(action),
            self.config.start_fraction,
            self.generator,
            self.config.mirror,
        )


__all__ = [
    "AttackerEnv",
    "DirectorEnv",
    "LearnedAttack",
    "LearnedConfig",
    "PAADAttack",
    "PAADConfig",
    "SARLAttack",
    "TrainedAttacker",
    "fgsm_actor",
    "sa_rl_perturbation",
    "unit_direction",
    "victim_fingerprint",
]
