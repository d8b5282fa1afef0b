"""Roll a policy out for a number of episodes and summarise the returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from robustrl.errors import ConfigError


class Actor(Protocol):
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Action in the env's units for one raw observation."""


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    deterministic: bool
    seed: int
    mean: float = field(init=False)
    std: float = field(init=False)
    min: float = field(init=False)
    max: float = field(init=False)

    def __post_init__(self) -> None:
        r = np.asarray(self.returns, np.float64)
        self.mean, self.std = float(r.mean()), float(r.std())
        self.min, self.max = float(r.min()), float(r.max())

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    policy: Actor, env: gym.Env, episodes: int = 10, deterministic: bool = True, seed: int = 0
) -> EvalResult:
    """Run ``episodes`` full episodes; the env is reset with ``seed`` once, then continues.

    Stochastic actions draw from a torch RNG forked and seeded here, so an evaluation is
    reproducible and leaves the caller's (training) random stream untouched.
    """
    returns, lengths = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        obs, _ = env.reset(seed=seed)
        for _ in range(episodes):
            done, total, length = False, 0.0, 0
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy.act(obs, deterministic))
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
            obs, _ = env.reset()
    return EvalResult(returns, lengths, deterministic, seed)


def evaluate_run(
    run_dir: str | Path, episodes: int = 20, deterministic: bool = False, seed: int = 0
) -> EvalResult:
    """Evaluate a run's newest checkpoint on its own environment; write ``eval/clean.json``."""
    from robustrl import checkpoint, runlock
    from robustrl.envs import make_env
    from robustrl.policy import load

    if episodes <= 0:
        raise ConfigError(f"episodes must be > 0, got {episodes}")
    run_dir = Path(run_dir)
    policy = load(run_dir)
    with runlock.locked(run_dir, "evaluating"):
        env = make_env(policy.config.env, **policy.config.env_kwargs)
        try:
            result = evaluate(policy, env, episodes, deterministic, seed)
        finally:
            env.close()
        (run_dir / "eval").mkdir(exist_ok=True)
        record = {
            "env": policy.config.env,
            "checkpoint_step": policy.step,
            "episodes": episodes,
            **result.to_dict(),
        }
        checkpoint.write_json(run_dir / "eval" / "clean.json", record)
    return result


def rollout(
    view,
    make_env: Callable[[], gym.Env],
    episodes: int,
    perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ball=None,
    deterministic: bool = True,
    seed: int = 0,
    n_envs: int = 8,
    on_episode_end: Callable[[torch.Tensor], None] | None = None,
    action_perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    action_ball=None,
) -> EvalResult:
    """Episodes of a policy view, optionally under an observation perturbation, on parallel envs.

    Episode ``k`` starts from ``reset(seed=seed + k)`` whatever the batching, so clean and
    attacked evaluations with the same seed face the same initial states. ``perturb`` maps the
    batch of normalised observations of the running episodes (B, obs_dim) to perturbed ones;
    with ``ball`` every perturbed batch is checked to lie inside it (the instrument checks itself).
    ``on_episode_end(rows)`` tells a stateful attack which rows' episodes ended.
    ``action_perturb(o, a)`` replaces the agent's actions (B, act_dim, in [-1, 1]) by the executed
    ones (action threat model, checked against ``action_ball``); it sees the clean ``o``.
    """
    if episodes <= 0:
        raise ConfigError(f"episodes must be > 0, got {episodes}")
    envs = [make_env() for _ in range(min(n_envs, episodes))]
    slot_episode = list(range(len(envs)))  # which episode each slot runs
    next_episode = len(envs)
    obs = [env.reset(seed=seed + k)[0] for k, env in enumerate(envs)]
    totals = [0.0] * len(envs)
    lengths = [0] * len(envs)
    returns: dict[int, float] = {}
    steps: dict[int, int] = {}
    active = list(range(len(envs)))
    # Batches of a few observations through small networks: a second intra-op thread only adds
    # synchronisation, and on a busy machine it was measured to stall rollouts by 10x or more.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            while active:
                clean = torch.as_tensor(view.normalize(np.stack([obs[i] for i in active])))
                seen = clean
                if perturb is not None:
                    seen = perturb(clean)
                    if ball is not None and not ball.contains(clean, seen):
                        raise RuntimeError(
                            "attack left its threat model's ball"
                        )  # a bug, not input
                action = view.act(seen, deterministic)
                if action_perturb is not None:
                    executed = action_perturb(clean, action)
                    if action_ball is not None and not action_ball.contains(action, executed):
                        raise RuntimeError("action attack left its threat model's ball")
                    action = executed
                actions = view.to_env(action.cpu().numpy())
                ended = []
                for row, i in enumerate(active):
                    obs[i], reward, terminated, truncated, _ = envs[i].step(actions[row])
                    totals[i] += float(reward)
                    lengths[i] += 1
                    if terminated or truncated:
                        ended.append(row)
                        returns[slot_episode[i]], steps[slot_episode[i]] = totals[i], lengths[i]
                        totals[i], lengths[i] = 0.0, 0
                        if next_episode < episodes:
                            slot_episode[i] = next_episode
                            obs[i] = envs[i].reset(seed=seed + next_episode)[0]
                            next_episode += 1
                        else:
                            slot_episode[i] = -1
                if ended and on_episode_end is not None:
                    on_episode_end(torch.tensor(ended))
                active = [i for i in active if slot_episode[i] >= 0]
    finally:
        torch.set_num_threads(threads)
        for env in envs:
            env.close()
    order = sorted(returns)
    return EvalResult([returns[k] for k in order], [steps[k] for k in order], deterministic, seed)
