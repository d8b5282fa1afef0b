"""Sweep specifications: a YAML grid -> validated train and attack cells.

A sweep is a grid of *train cells* (algo x env x seed, each one ``robustrl train`` run) followed
by *attack cells* (each one ``robustrl attack`` of a finished train cell at one eps). Example
(every key but ``train.algos`` and ``train.envs`` is optional)::

    name: smoke                      # default: the YAML file's stem
    train:
      algos: [sac, valt-eps-sac]     # robustrl.config.ALGOS
      envs: [Pendulum-v1]            # gymnasium ids
      seeds: [0, 1]                  # a list, or a count N meaning 0..N-1 (default [0])
      preset: null                   # e.g. paper (src/robustrl/presets/)
      steps: 3000                    # null: the preset's, else TrainConfig's default
      overrides: {learning_starts: 500, "sac.hidden_sizes": [64, 64], eps: 0.2}
      per_env: {Pendulum-v1: {eval_every: 1000}}          # applied after overrides
      per_algo: {valt-eps-sac: {"adversary.eps": 0.2}}    # applied last
      exclude: [{algo: sac, env: [Pendulum-v1], seed: 1}] # drop matching cells
      save_buffer: false             # checkpoint the replay buffer (exact resume; large)
    attack:                          # optional: without it the sweep only trains
      attacks: [random, mad, pgd-minq]   # names, "all" (what each victim supports) or "a,b" groups
      eps: [0.1, 0.2]                # a number, a list; null = the paper's eps for the env
      episodes: 5                    # per attack (default 20)
      budget: null                   # env steps per learned attacker (sa-rl, pa-ad need one)
      seed: 0                        # episode and attack seed (as robustrl attack --seed)
      settings: {mad: {steps: 20}}   # per-attack settings (as robustrl attack --attack-set)
      action_eps: null               # budget of action attacks (a-*), default 0.1
      n_envs: 8                      # episodes run in parallel inside a cell
      split: false                   # true: one cell per item of `attacks` (more parallelism)
      per_env: {Hopper-v5: {budget: 500000}}   # eps, episodes, budget or settings per env
    resources:                       # per cell; `train:` / `attack:` sub-maps override these
      threads: 1                     # torch threads inside the cell
      num_cpus: 1                    # Ray scheduling (default: threads)
      num_gpus: 0                    # Ray scheduling; the device is the `device` config key

Override keys are the ``--set`` keys of ``robustrl train`` (``src/robustrl/config.py``); they are
applied in the order ``overrides``, ``per_env[env]``, ``per_algo[algo]``. Every train cell is
resolved with ``robustrl.build_config`` when the spec is loaded, so a bad key, value or preset
fails before anything runs, with one line naming it (``ConfigError``).

Cells are plain JSON-able dicts (they travel to worker processes and Ray tasks, and are stored
in the sweep directory); a cell's id names its run directory / record file:
``ENV_ALGO_sSEED`` for training, ``ENV_ALGO_sSEED_epsEPS[_ATTACKS]`` for attacks.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustrl.errors import ConfigError

TOP_KEYS = ("name", "train", "attack", "resources")
TRAIN_KEYS = (
    "algos",
    "envs",
    "seeds",
    "preset",
    "steps",
    "overrides",
    "per_env",
    "per_algo",
    "exclude",
    "save_buffer",
)
ATTACK_KEYS = (
    "attacks",
    "eps",
    "episodes",
    "budget",
    "seed",
    "settings",
    "action_eps",
    "n_envs",
    "split",
    "per_env",
)
ATTACK_PER_ENV_KEYS = ("eps", "episodes", "budget", "settings")
RESOURCE_KEYS = ("threads", "num_cpus", "num_gpus")
EXCLUDE_KEYS = ("algo", "env", "seed")


@dataclass(frozen=True)
class Resources:
    """What one cell gets: torch threads in the cell, CPUs and GPUs it asks Ray for."""

    threads: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class SweepSpec:
    """A validated sweep: its cells in run order (train cells first) and their resources."""

    name: str
    source: str  # where the spec came from (for messages)
    text: str  # the YAML as written, copied into the sweep directory
    train_cells: list[dict[str, Any]]
    attack_cells: list[dict[str, Any]]
    resources: dict[str, Resources] = field(default_factory=dict)  # "train" / "attack"

    @property
    def cells(self) -> list[dict[str, Any]]:
        return [*self.train_cells, *self.attack_cells]


class _Checker:
    """Builds one-line ``ConfigError`` messages prefixed with the spec's source and key path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {value!r}")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(where, f"unknown key {key!r}{hint}; keys: {', '.join(allowed)}")
        return value

    def any_mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {value!r}")
        return dict(value)

    def dict_of_dicts(self, value: Any, where: str) -> dict[str, dict[str, Any]]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(v, dict) or v is None for v in value.values()
        ):
            raise self.fail(where, f"expected a mapping of mappings, got {value!r}")
        return {str(k): dict(v or {}) for k, v in value.items()}

    def strings(self, value: Any, where: str) -> list[str]:
        """A non-empty list of strings (a single string is a list of one)."""
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(where, f"expected a non-empty list of names, got {value!r}")
        if len(set(value)) != len(value):
            raise self.fail(where, f"lists a name twice: {value!r}")
        return list(value)

    def integer(self, value: Any, where: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def number(self, value: Any, where: str, minimum: float, strict: bool = False) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
        if not ok:
            bound = f"> {minimum}" if strict else f">= {minimum}"
            raise self.fail(where, f"expected a finite number {bound}, got {value!r}")
        return float(value)

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read sweep file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML: {problem}") from None
    return parse_spec(data, source=str(path), default_name=path.stem, text=text)


def parse_spec(
    data: Any, source: str = "sweep", default_name: str = "sweep", text: str | None = None
) -> SweepSpec:
    """Validate a parsed YAML document and expand it into cells."""
    check = _Checker(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'train' section, got {data!r}")
    check.mapping(data, "top level", TOP_KEYS)
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise check.fail("name", f"expected a non-empty name without '/', got {name!r}")
    if "train" not in data:
        raise check.fail("top level", "missing the 'train' section (algos, envs, seeds, ...)")
    train_cells = _train_cells(check, data["train"])
    attack_cells = (
        _attack_cells(check, data["attack"], train_cells) if data.get("attack") is not None else []
    )
    resources = _resources(check, data.get("resources"))
    if text is None:
        text = yaml.safe_dump(data, sort_keys=False)
    return SweepSpec(name, source, text, train_cells, attack_cells, resources)


# ---------------------------------------------------------------- train cells


def _seeds(check: _Checker, value: Any) -> list[int]:
    if value is None:
        return [0]
    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(check.integer(value, "train.seeds", 1)))
    if not isinstance(value, list) or not value:
        raise check.fail("train.seeds", f"expected a list of seeds or a count, got {value!r}")
    seeds = [check.integer(s, "train.seeds", 0) for s in value]
    if len(set(seeds)) != len(seeds):
        raise check.fail("train.seeds", f"lists a seed twice: {value!r}")
    return seeds


def _check_env(check: _Checker, env: str) -> None:
    """Unknown gymnasium ids fail here, not hours later in a worker."""
    import gymnasium as gym

    if ":" in env:  # "module:EnvId" is imported by gym.make; it cannot be checked without that
        return
    try:
        gym.spec(env)
    except gym.error.Error as exc:
        raise check.fail("train.envs", f"unknown environment {env!r} ({exc})") from None


def _excluded(cell: dict[str, Any], rules: list[dict[str, Any]]) -> bool:
    def matches(rule: dict[str, Any]) -> bool:
        for key, value in rule.items():
            allowed = value if isinstance(value, list) else [value]
            if cell[key] not in allowed:
                return False
        return True

    return any(matches(rule) for rule in rules)


def train_cell_id(env: str, algo: str, seed: int) -> str:
    return f"{_slug(env)}_{algo}_s{seed}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "-" for c in text)


def _train_cells(check: _Checker, section: Any) -> list[dict[str, Any]]:
    from robustrl.config import ALGOS, TrainConfig, apply_overrides, build_config

    section = check.mapping(section, "train", TRAIN_KEYS)
    for key in ("algos", "envs"):
        if key not in section:
            raise check.fail("train", f"missing {key!r}")
    algos = check.strings(section["algos"], "train.algos")
    for algo in algos:
        if algo not in ALGOS:
            raise check.fail(
                "train.algos", f"unknown algo {algo!r}; choose from {', '.join(ALGOS)}"
            )
    envs = check.strings(section["envs"], "train.envs")
    for env in envs:
        _check_env(check, env)
    seeds = _seeds(check, section.get("seeds"))
    preset = section.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise check.fail("train.preset", f"expected a preset name or null, got {preset!r}")
    steps = section.get("steps")
    if steps is not None:
        steps = check.integer(steps, "train.steps", 1)
    save_buffer = check.boolean(section.get("save_buffer", False), "train.save_buffer")

    overrides = check.any_mapping(section.get("overrides"), "train.overrides")
    per_env = check.dict_of_dicts(section.get("per_env"), "train.per_env")
    per_algo = check.dict_of_dicts(section.get("per_algo"), "train.per_algo")
    for env in per_env:
        if env not in envs:
            raise check.fail("train.per_env", f"{env!r} is not in train.envs")
    for algo in per_algo:
        if algo not in algos:
            raise check.fail("train.per_algo", f"{algo!r} is not in train.algos")
    # Key names and types, with the section in the message (build_config below says "--set").
    for where, values in [
        ("train.overrides", overrides),
        *((f"train.per_env.{e}", v) for e, v in per_env.items()),
        *((f"train.per_algo.{a}", v) for a, v in per_algo.items()),
    ]:
        if "seed" in values or "algo" in values or "env" in values:
            raise check.fail(where, "algo, env and seed come from the grid, not from overrides")
        try:
            apply_overrides(TrainConfig(), values, source=where)
        except ConfigError as exc:
            raise ConfigError(f"{check.source}: {exc}") from None

    rules = section.get("exclude") or []
    if not isinstance(rules, list):
        raise check.fail(
            "train.exclude", f"expected a list of {{algo, env, seed}} rules, got {rules!r}"
        )
    for rule in rules:
        check.mapping(rule, "train.exclude", EXCLUDE_KEYS)
        if not rule:
            raise check.fail("train.exclude", "an empty rule would exclude every cell")

    cells = []
    # seed-major order: the first seed of every method runs first, so a long sweep gives a
    # first comparison of all methods early, then the other seeds
    for env in envs:
        for seed in seeds:
            for algo in algos:
                merged = {**overrides, **per_env.get(env, {}), **per_algo.get(algo, {})}
                cell = {
                    "kind": "train",
                    "id": train_cell_id(env, algo, seed),
                    "algo": algo,
                    "env": env,
                    "seed": seed,
                    "preset": preset,
                    "steps": steps,
                    "overrides": merged,
                    "save_buffer": save_buffer,
                }
                if _excluded(cell, rules):
                    continue
                try:  # the full config: preset coverage, values, robust methods' eps
                    build_config(algo, env, preset=preset, overrides=merged, steps=steps, seed=seed)
                except ConfigError as exc:
                    raise ConfigError(f"{check.source}: train cell {cell['id']}: {exc}") from None
                cells.append(cell)
    if not cells:
        raise check.fail("train.exclude", "excludes every cell of the grid")
    return cells


def config_for(cell: dict[str, Any]):
    """The ``TrainConfig`` of a train cell."""
    from robustrl.config import build_config

    return build_config(
        cell["algo"],
        cell["env"],
        preset=cell["preset"],
        overrides=cell["overrides"],
        steps=cell["steps"],
        seed=cell["seed"],
    )


# ---------------------------------------------------------------- attack cells


def _eps_list(check: _Checker, value: Any, where: str) -> list[float | None]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise check.fail(where, "expected a number, a list of numbers, or null")
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        if not ok:
            raise check.fail(where, f"eps must be a finite number >= 0 (or null), got {v!r}")
        out.append(float(v))
    return out


def _attack_items(check: _Checker, value: Any) -> list[list[str]]:
    """``attacks`` as items (each a list of names run together), names checked."""
    from robustrl.attacks import ATTACKS
    from robustrl.attacks.action import ACTION_ATTACKS

    known = {*ATTACKS, *ACTION_ATTACKS, "all", "all-action"}
    items = check.strings(value, "attack.attacks")
    out = []
    for item in items:
        names = [n.strip() for n in item.split(",") if n.strip()]
        if not names:
            raise check.fail("attack.attacks", f"empty item {item!r}")
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise check.fail(
                    "attack.attacks",
                    f"unknown attack {name!r}{hint}; choose from {', '.join(sorted(known))}",
                )
        out.append(names)
    return out


def _check_settings(
    check: _Checker, settings: dict[str, dict], where: str, names: set[str]
) -> None:
    from robustrl.attacks import ATTACKS
    from robustrl.attacks.action import ACTION_ATTACKS
    from robustrl.attacks.base import parse_attack_config

    registry = {**ATTACKS, **ACTION_ATTACKS}
    for name, values in settings.items():
        if name not in registry:
            raise check.fail(where, f"unknown attack {name!r}")
        if name not in names and not ({"all", "all-action"} & names):
            raise check.fail(where, f"has settings for {name!r}, which attack.attacks does not run")
        try:
            parse_attack_config(registry[name].config_class, name, values)
        except ConfigError as exc:
            raise check.fail(where, str(exc)) from None


def _attack_cells(
    check: _Checker, section: Any, train_cells: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    from robustrl.attacks import ATTACKS
    from robustrl.threat import paper_eps

    section = check.mapping(section, "attack", ATTACK_KEYS)
    items = _attack_items(check, section.get("attacks", "all"))
    names = {n for item in items for n in item}
    split = check.boolean(section.get("split", False), "attack.split")
    if not split:
        items = [[n for item in items for n in item]]
    seed = check.integer(section.get("seed", 0), "attack.seed", 0)
    n_envs = check.integer(section.get("n_envs", 8), "attack.n_envs", 1)
    action_eps = section.get("action_eps")
    if action_eps is not None:
        action_eps = check.number(action_eps, "attack.action_eps", 0.0)
    per_env = check.dict_of_dicts(section.get("per_env"), "attack.per_env")
    envs = {cell["env"] for cell in train_cells}
    for env, values in per_env.items():
        if env not in envs:
            raise check.fail("attack.per_env", f"{env!r} is not in train.envs")
        check.mapping(values, f"attack.per_env.{env}", ATTACK_PER_ENV_KEYS)

    learned = sorted(n for n, c in ATTACKS.items() if c.learned)
    needs_budget = [n for n in learned if n in names] or (learned if "all" in names else [])

    def settings_for(env: str) -> dict[str, Any]:
        """eps list, episodes, budget, settings for one env (attack section + per_env)."""
        values = {**section, **per_env.get(env, {})}
        where = f"attack.per_env.{env}" if env in per_env else "attack"
        eps = _eps_list(check, values.get("eps"), f"{where}.eps")
        resolved = []
        for e in eps:
            if e is None:
                e = paper_eps(env)
                if e is None:
                    raise check.fail(
                        f"{where}.eps",
                        f"null means the paper's eps, but the paper has none for {env}; give a number",
                    )
            if e in resolved:
                raise check.fail(f"{where}.eps", f"lists eps {e} twice")
            resolved.append(e)
        episodes = check.integer(values.get("episodes", 20), f"{where}.episodes", 1)
        budget = values.get("budget")
        if budget is not None:
            budget = check.integer(budget, f"{where}.budget", 1)
        elif needs_budget:
            raise check.fail(
                f"{where}.budget",
                f"{', '.join(needs_budget)} need a budget (environment steps to train each attacker)",
            )
        settings = check.dict_of_dicts(values.get("settings"), f"{where}.settings")
        _check_settings(check, settings, f"{where}.settings", names)
        return {"eps": resolved, "episodes": episodes, "budget": budget, "settings": settings}

    per_env_values = {env: settings_for(env) for env in sorted(envs)}
    cells = []
    for train in train_cells:
        values = per_env_values[train["env"]]
        for eps in values["eps"]:
            for item in items:
                suffix = f"_{'_'.join(item)}" if split else ""
                cells.append(
                    {
                        "kind": "attack",
                        "id": f"{train['id']}_eps{eps:g}{_slug(suffix)}",
                        "train": train["id"],
                        "algo": train["algo"],
                        "env": train["env"],
                        "seed": train["seed"],
                        "eps": eps,
                        "attacks": item,
                        "episodes": values["episodes"],
                        "budget": values["budget"],
                        "attack_seed": seed,
                        "settings": values["settings"],
                        "action_eps": action_eps,
                        "n_envs": n_envs,
                    }
                )
    return cells


# ---------------------------------------------------------------- resources


def _resources(check: _Checker, section: Any) -> dict[str, Resources]:
    section = check.mapping(section, "resources", (*RESOURCE_KEYS, "train", "attack"))

    def parse(values: dict[str, Any], where: str, base: Resources | None) -> Resources:
        values = check.mapping(values, where, RESOURCE_KEYS)
        threads = check.integer(
            values.get("threads", base.threads if base else 1), f"{where}.threads", 1
        )
        default_cpus = base.num_cpus if base and "threads" not in values else threads
        num_cpus = check.number(
            values.get("num_cpus", default_cpus), f"{where}.num_cpus", 0.0, strict=True
        )
        num_gpus = check.number(
            values.get("num_gpus", base.num_gpus if base else 0.0), f"{where}.num_gpus", 0.0
        )
        return Resources(threads, num_cpus, num_gpus)

    common = parse({k: v for k, v in section.items() if k in RESOURCE_KEYS}, "resources", None)
    return {
        kind: parse(section.get(kind) or {}, f"resources.{kind}", common)
        for kind in ("train", "attack")
    }
