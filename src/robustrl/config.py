"""Configuration: typed dataclasses, paper presets, and ``--set key=value`` overrides.

A run is fully described by one ``TrainConfig``; it is written resolved to ``config.json`` in the
run directory and read back from there on resume. Presets (``presets/*.yaml``) hold the paper's
per-environment values as plain overrides of these defaults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from robustrl.errors import ConfigError

# Observation-robust methods: SAC plus an adversary and/or the SA regulariser (ALGORITHMS.md §3).
ROBUST_SAC_ALGOS = ("robust-sac", "valt-eps-sac", "valt-soft-sac", "sac-ppo", "pa-sac-ppo")
SAC_ALGOS = ("sac", *ROBUST_SAC_ALGOS)
ALGOS = (*SAC_ALGOS, "td3", "oa-td3")

UPDATE_ORDERS = ("sequential", "fused")
MAX_STEPS = 10**10  # beyond any run; stops typos like --set steps=1e30 before they allocate
MAX_THREADS = 1024

# The valid range of every numeric key, in one place (interval notation; ">0" is (0, inf)).
# Every float key must also be finite; keys left out here are only checked for finiteness or
# below, in ``validate`` (the budgets, which share one message with the attack commands).
LIMITS: dict[str, str] = {
    "steps": ">0",
    "seed": "[0,4294967295]",
    "learning_starts": ">=0",
    "eval_every": ">=0",
    "eval_episodes": ">0",
    "checkpoint_every": ">=0",
    "log_every": ">0",
    "threads": f"[0,{MAX_THREADS}]",
    **{f"{algo}.{key}": ">0" for algo in ("sac", "td3") for key in ("actor_lr", "critic_lr")},
    **{f"{algo}.gamma": "[0,1]" for algo in ("sac", "td3")},
    **{f"{algo}.tau": "(0,1]" for algo in ("sac", "td3")},
    **{f"{algo}.batch_size": ">0" for algo in ("sac", "td3")},
    "sac.alpha_lr": ">0",
    "sac.init_alpha": ">0",
    "sac.huber_delta": ">0",
    "td3.policy_noise": ">=0",
    "td3.noise_clip": ">=0",
    "td3.policy_delay": ">=1",
    "td3.exploration_noise": ">=0",
    "oa.action_eps": "[0,2]",
    "oa.weight": "[0,1]",
    "oa.pgd_steps": ">=1",
    "oa.pgd_step_size": ">0",
    "adversary.behaviour_ratio": "[0,1]",
    "adversary.ramp_end": ">=0",
    "adversary.ramp_end_fraction": "[0,1]",
    "adversary.pgd_steps": ">=1",
    "adversary.temperature": ">0",
    "adversary.temperature_start": ">0",
    "adversary.reset_every": ">=1",
    "adversary.lr": ">0",
    "adversary.ppo_iterations": ">=1",
    "adversary.ppo.steps_per_iteration": ">=1",
    "adversary.ppo.epochs": ">=1",
    "adversary.ppo.minibatch_size": ">=1",
    "adversary.ppo.lr": ">0",
    "adversary.ppo.value_lr": ">0",
    "adversary.ppo.gamma": "[0,1]",
    "adversary.ppo.gae_lambda": "[0,1]",
    "adversary.ppo.clip": ">0",
    "adversary.ppo.entropy_coef": ">=0",
    "adversary.ppo.max_grad_norm": ">0",
    "regulariser.coef": ">=0",
    "regulariser.sgld_steps": ">=1",
    "regulariser.ramp_start": ">=0",
    "regulariser.ramp_end": ">=0",
    "regulariser.ramp_start_fraction": "[0,1]",
    "regulariser.ramp_end_fraction": "[0,1]",
    "replay.capacity": ">0",
    "replay.priority_exponent": ">=0",
    "replay.importance_start": "[0,1]",
    "replay.importance_end": "[0,1]",
    "replay.priority_eps": ">0",
    "replay.importance_steps": ">=1",
    "normalizer.clip": ">0",
}


def _within(value: float, limit: str) -> bool:
    if limit.startswith(">="):
        return value >= float(limit[2:])
    if limit.startswith(">"):
        return value > float(limit[1:])
    lo, hi = (float(x) for x in limit[1:-1].split(","))
    above = value > lo if limit[0] == "(" else value >= lo
    below = value < hi if limit[-1] == ")" else value <= hi
    return above and below


def _describe(limit: str) -> str:
    if limit[0] in "([":
        lo, hi = limit[1:-1].split(",")
        return f"in {limit[0]}{lo}, {hi}{limit[-1]}"
    return f"{limit[:2]} {limit[2:]}" if limit.startswith(">=") else f"> {limit[1:]}"


def check_limits(config: Any) -> None:
    """Every float key finite, every key of ``LIMITS`` in its range: one line naming the key."""
    for key in _all_keys(config):
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        limit = LIMITS.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            need = f"a finite number {_describe(limit)}" if limit else "a finite number"
            raise ConfigError(f"{key} must be {need}, got {value}")
        if limit and not _within(value, limit):
            raise ConfigError(f"{key} must be {_describe(limit)}, got {value}")


# Method defaults that differ from the dataclass defaults, applied before any preset.
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "robust-sac": {"regulariser.sgld_steps": 5, "regulariser.coef": 10.0},
}

# Short names for keys the docs and papers use unqualified: --set eps=0.1, --set surgery=false
ALIASES = {"action_eps": "oa.action_eps", "surgery": "oa.surgery", "eps": "adversary.eps"}


@dataclass
class SACConfig:
    """SAC hyperparameters (ALGORITHMS.md §2, paper Table 2)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    init_alpha: float = 1.0
    autotune_alpha: bool = True
    # None means -dim(A). The paper raised Hopper's above -3; its value is lost (preset: -1.0).
    target_entropy: float | None = None
    huber_delta: float = 1.0
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    # "sequential": the critic steps first and the actor then follows the updated critic
    # (reference SAC, SB3, CleanRL); "fused": every loss in one backward pass, the actor
    # following the critic as it was before this step (faster; docs/BENCHMARKS.md).
    update_order: str = "sequential"


@dataclass
class TD3Config:
    """TD3 hyperparameters (Fujimoto et al. 2018; ALGORITHMS.md §5)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    policy_noise: float = 0.2  # target policy smoothing noise std (normalised actions)
    noise_clip: float = 0.5
    policy_delay: int = 2  # actor and target updates every policy_delay critic updates
    exploration_noise: float = 0.1  # Gaussian behaviour noise std (normalised actions)
    # "sequential" (reference TD3): the actor steps against the critic updated this step;
    # "fused": the actor follows the critic as it was before this step's critic update.
    update_order: str = "sequential"


@dataclass
class OAConfig:
    """OA-TD3's optimal-adversary-aware critic (paper 000, ALGORITHMS.md §5).

    The paper's exact constants were lost; every one is a documented default.
    """

    action_eps: float = 0.1  # L-inf budget of the action adversary, normalised action units
    weight: float = 0.5  # w: actor follows (1 - w) g_nom + w g_oa (paper range 0.4-0.6)
    surgery: bool = True  # PCGrad when g_nom and g_oa conflict; false is the ablation
    # inner minimisation over delta (the paper used 15-20); 3 finds nearly as much at a third
    # of the PGD work (docs/BENCHMARKS.md, update_cost_td3)
    pgd_steps: int = 10
    pgd_step_size: float | None = None  # None: 2.5 * action_eps / pgd_steps


@dataclass
class PPOConfig:
    """PPO (continuous, GAE, clipped objective, value network): SAC-PPO's adversary.

    Defaults are the usual MuJoCo PPO values; the paper's adversary used lr 3e-5 and value lr
    1e-5 for HalfCheetah (``--preset paper``); the other environments' values are lost.
    """

    steps_per_iteration: int = 2048
    epochs: int = 10
    minibatch_size: int = 64
    lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    init_log_std: float = 0.0


@dataclass
class AdversaryConfig:
    """The training-time observation adversary of the robust SAC methods (ALGORITHMS.md §3)."""

    # L-inf budget in normalised units; None: the paper's budget for the environment (Hopper
    # 0.075, Walker2d 0.05, HalfCheetah 0.15, Ant 0.15); required for any other environment.
    eps: float | None = None
    in_target: bool = True  # (E) the adversary in the critic target; false = "w/o PE" ablation
    in_actor: bool = True  # (I) the adversary in the actor loss; false = "w/o PI" ablation
    behaviour_ratio: float = 0.5  # rho: probability that a collected step is perturbed (B)
    # VALT-EPS kappa 0 -> 1 and VALT-SOFT lambda annealing end at this env step. None: at
    # ramp_end_fraction of the run, resolved to a step when the run starts (kept on resume).
    ramp_end: int | None = None
    ramp_end_fraction: float = 0.8
    pgd_steps: int = 2  # VALT-EPS: signed-gradient steps of size eps / pgd_steps
    # Arithmetic of the inner maximisations (VALT-EPS's PGD, the SA regulariser's SGLD), which
    # use only the sign of an input gradient: "bfloat16" (autocast), "float32", or "auto" =
    # bfloat16 where the hardware has native bfloat16 matmuls (CUDA, CPUs with AVX512-BF16/AMX).
    inner_precision: str = "auto"
    temperature: float = 2.0  # VALT-SOFT lambda
    temperature_start: float | None = (
        None  # anneal lambda from this value (e.g. 1000) to temperature
    )
    kl_in_target: bool = False  # VALT-SOFT: add lambda * KL(nu || uniform) to the critic target
    reset_every: int = 2000  # VALT-SOFT: re-initialise the adversary network every N env steps
    lr: float = 3e-4  # VALT-SOFT adversary learning rate
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 256])  # VALT-SOFT network
    ppo_iterations: int = 2441  # SAC-PPO: adversary iterations over the run (paper; Ant 4882)
    ppo: PPOConfig = field(default_factory=PPOConfig)


@dataclass
class RegulariserConfig:
    """The SA-MDP policy regulariser ``kappa_reg * E max_{õ in B} D(pi(.|o), pi(.|õ))`` (Eq. 58)."""

    enabled: bool = True  # used by the robust methods only; false is the "w/o regulariser" ablation
    # kappa_reg; robust-sac's default is 10. The paper's per-env values (--preset paper) are
    # larger for Robust-SAC than for VALT (Hopper: 300 vs 3); on Pendulum-v1, eps 0.2, VALT-EPS
    # with 10 did not learn in 12k steps (one seed) and with 1 did (docs/results/robust_training).
    coef: float = 1.0
    eps: float | None = None  # target radius; None = adversary.eps
    sgld_steps: int = 2  # robust-sac: 5
    divergence: str = "kl"  # "kl" between pre-squash Gaussians, or "mean" (SA-PPO's mean-only)
    # eps_reg grows linearly 0 -> eps from ramp_start to ramp_end (env steps). None: at the
    # given fraction of the run, resolved to a step when the run starts (kept on resume).
    ramp_start: int | None = None
    ramp_end: int | None = None
    ramp_start_fraction: float = 0.1
    ramp_end_fraction: float = 0.8


@dataclass
class ReplayConfig:
    """Replay buffer; prioritised replay after Schaul et al. (2016)."""

    capacity: int = 1_000_000
    prioritized: bool = True
    priority_exponent: float = 0.6
    importance_start: float = 0.4  # importance exponent, annealed linearly to importance_end
    importance_end: float = 1.0
    # ... over this many env steps; None: the run's length, resolved when the run starts (so
    # extending a run keeps the final exponent instead of jumping back)
    importance_steps: int | None = None
    priority_eps: float = 1e-6


@dataclass
class NormalizerConfig:
    """Running observation normaliser ``clip((s - mean) / std, -clip, clip)``."""

    enabled: bool = True
    clip: float = 10.0


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    algo: str = "sac"
    env: str = "Pendulum-v1"
    steps: int = 1_000_000
    seed: int = 0
    learning_starts: int = 10_000  # uniform random actions before the first update
    eval_every: int = 10_000
    eval_episodes: int = 10
    checkpoint_every: int = 50_000
    log_every: int = 1_000
    # torch.compile the update step; None = auto: on for CUDA, off for CPU, where we measured
    # the compiled step slower than eager (docs/BENCHMARKS.md).
    compile: bool | None = None
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    sac: SACConfig = field(default_factory=SACConfig)
    td3: TD3Config = field(default_factory=TD3Config)  # td3, oa-td3
    oa: OAConfig = field(default_factory=OAConfig)  # oa-td3
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)  # robust SAC methods
    regulariser: RegulariserConfig = field(default_factory=RegulariserConfig)  # robust SAC methods
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)

    def validate(self) -> None:
        """Reject values no run could use, with a message naming the key, before anything is
        created: the ranges of ``LIMITS`` and finiteness for every key, then the checks that
        involve several keys or the machine."""
        if self.algo not in ALGOS:
            raise ConfigError(f"unknown algo {self.algo!r}; choose from {', '.join(ALGOS)}")
        check_limits(self)
        if self.steps > MAX_STEPS:
            raise ConfigError(f"steps must be at most {MAX_STEPS:.0e}, got {self.steps}")
        for section in ("sac", "td3"):
            sizes = getattr(self, section).hidden_sizes
            if not sizes or min(sizes) <= 0 or max(sizes) > 65536:
                raise ConfigError(
                    f"{section}.hidden_sizes must be widths in [1, 65536], got {sizes}"
                )
        if self.sac.log_std_min >= self.sac.log_std_max:
            raise ConfigError(
                f"sac.log_std_min must be below sac.log_std_max, got {self.sac.log_std_min} "
                f">= {self.sac.log_std_max}"
            )
        batch = self.td3.batch_size if self.algo in ("td3", "oa-td3") else self.sac.batch_size
        if self.replay.capacity < batch:
            raise ConfigError(
                f"replay.capacity ({self.replay.capacity}) must hold at least one batch "
                f"({batch}): the agent would never update"
            )
        for key in ("sac.update_order", "td3.update_order"):
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if value not in UPDATE_ORDERS:
                raise ConfigError(f"{key} must be 'sequential' or 'fused', got {value!r}")
        self._validate_robust()
        self._validate_device()

    def _validate_device(self) -> None:
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    f"device {self.device!r}: this PyTorch build or machine has no CUDA "
                    f"(torch {torch.__version__}); use device=cpu"
                )

    def _validate_robust(self) -> None:
        adv, reg = self.adversary, self.regulariser
        # budgets in normalised units: normalised observations lie in [-clip, clip], so a
        # radius beyond 2 * clip reaches nothing more (and 1e9 only overflows the losses)
        top = 2.0 * self.normalizer.clip
        for key, value in {"adversary.eps": adv.eps, "regulariser.eps": reg.eps}.items():
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
            if value is not None and value > top:
                raise ConfigError(
                    f"{key} must be at most 2 * normalizer.clip = {top:g} (normalised units), "
                    f"got {value}"
                )
        if adv.inner_precision not in ("auto", "float32", "bfloat16"):
            raise ConfigError(
                "adversary.inner_precision must be auto, float32 or bfloat16, "
                f"got {adv.inner_precision!r}"
            )
        if reg.divergence not in ("kl", "mean"):
            raise ConfigError(
                f"regulariser.divergence must be 'kl' or 'mean', got {reg.divergence!r}"
            )
        if reg.ramp_start_fraction > reg.ramp_end_fraction:
            raise ConfigError(
                "regulariser.ramp_start_fraction must not exceed regulariser.ramp_end_fraction, "
                f"got {reg.ramp_start_fraction} > {reg.ramp_end_fraction}"
            )

    def resolve_schedules(self) -> None:
        """Turn every schedule given as a fraction of the run into an env step, for this run's
        ``steps``. Called when a run starts; the resolved steps are what ``config.json``
        stores, so a resumed run keeps them even with a new ``--steps`` (an extended run
        continues at the schedules' final values). Steps already set are kept."""
        adv, reg, replay = self.adversary, self.regulariser, self.replay
        if adv.ramp_end is None:
            adv.ramp_end = round(adv.ramp_end_fraction * self.steps)
        if reg.ramp_start is None:
            reg.ramp_start = round(reg.ramp_start_fraction * self.steps)
        if reg.ramp_end is None:
            reg.ramp_end = round(reg.ramp_end_fraction * self.steps)
        if replay.importance_steps is None:
            replay.importance_steps = self.steps

    def resolve_eps(self) -> None:
        """Fill ``adversary.eps`` from the paper's budget for the environment (robust methods)."""
        if self.algo not in ROBUST_SAC_ALGOS or self.adversary.eps is not None:
            return
        from robustrl.threat import paper_eps

        eps = paper_eps(self.env)
        if eps is None:
            raise ConfigError(
                f"{self.algo} needs an observation budget: the paper has none for {self.env}; "
                "pass --set adversary.eps=VALUE (normalised units)"
            )
        self.adversary.eps = eps

    def use_compile(self) -> bool:
        return self.device.startswith("cuda") if self.compile is None else self.compile

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        config = cls()
        apply_overrides(config, _flatten(data), source="config")
        return config


# ---------------------------------------------------------------- overrides


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "env_kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys += _all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` (a YAML-parsed string or a JSON value) to the field type ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if hint in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML reads "1e6" as a string
            value = float(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, list | tuple):
            return [_coerce(key, v, item) for v in value]
    elif origin is dict and isinstance(value, dict):
        return dict(value)
    expected = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key} expects {expected}, got {value!r}")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any], source: str = "--set") -> None:
    """Set dotted keys (``sac.batch_size``) on ``config`` in place, checking names and types."""
    known = _all_keys(config)
    for key, value in overrides.items():
        key = ALIASES.get(key, key)
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {source} key {key!r}{hint}")
        *parents, name = key.split(".")
        target: Any = config
        for parent in parents:
            target = getattr(target, parent)
        hints = typing.get_type_hints(type(target))
        setattr(target, name, _coerce(key, value, hints[name]))


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """Parse ``["sac.tau=0.01", "compile=false"]``; values are read as YAML scalars/lists."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
    return overrides


# ---------------------------------------------------------------- presets


def available_presets() -> list[str]:
    folder = resources.files("robustrl") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def preset_overrides(name: str, env: str, algo: str) -> dict[str, Any]:
    """The overrides a preset gives ``algo`` on ``env``: its ``defaults``, then ``algos.<algo>``."""
    if name not in available_presets():
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(available_presets())}")
    text = (resources.files("robustrl") / "presets" / f"{name}.yaml").read_text()
    table = yaml.safe_load(text) or {}
    if env not in table:
        envs = ", ".join(sorted(table))
        raise ConfigError(f"preset {name!r} has no settings for {env!r}; it covers {envs}")
    entry = table[env] or {}
    overrides = _flatten(entry.get("defaults") or {})
    overrides.update(_flatten((entry.get("algos") or {}).get(algo) or {}))
    return overrides


def build_config(
    algo: str = "sac",
    env: str = "Pendulum-v1",
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    **fields: Any,
) -> TrainConfig:
    """Defaults, then the preset, then explicit fields, then ``--set`` overrides; validated."""
    config = TrainConfig(algo=algo, env=env)
    apply_overrides(config, ALGO_DEFAULTS.get(algo, {}), source=f"{algo} defaults")
    if preset:
        apply_overrides(config, preset_overrides(preset, env, algo), source=f"preset {preset}")
    apply_overrides(config, {k: v for k, v in fields.items() if v is not None}, source="argument")
    apply_overrides(config, overrides or {})
    config.validate()
    config.resolve_eps()
    config.resolve_schedules()
    return config


def dumps(config: TrainConfig, **extra: Any) -> str:
    return json.dumps({**config.to_dict(), **extra}, indent=2, sort_keys=False)
