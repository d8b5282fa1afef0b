"""Environments: creation with clear errors, action scaling, and the running observation normaliser.

The agent works in normalised units: observations ``o = clip((s - mean) / std, -clip, clip)``
(ALGORITHMS.md §1) and actions in [-1, 1]^dim(A), mapped affinely to the env's bounds.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from robustrl.errors import EnvError


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """Create ``env_id``, checking it has bounded Box observation and action spaces."""
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:  # unknown id, wrong version, missing dependency
        raise EnvError(f"cannot create environment {env_id!r}: {exc}") from None
    except TypeError as exc:  # bad env_kwargs
        raise EnvError(f"cannot create environment {env_id!r} with {kwargs}: {exc}") from None
    except ImportError as exc:  # an optional dependency of the environment is missing
        raise EnvError(
            f"cannot create environment {env_id!r}: missing dependency ({exc})"
        ) from None
    check_spaces(env, env_id)
    if seed is not None:
        env.action_space.seed(seed)
    return FiniteCheck(env)


def check_spaces(env: gym.Env, env_id: str) -> None:
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise EnvError(f"{env_id}: observation space must be a 1-D Box, got {obs_space}")
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        env.close()
        raise EnvError(f"{env_id}: action space must be a 1-D Box, got {act_space}")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        env.close()
        raise EnvError(f"{env_id}: action space must be bounded, got {act_space}")


class FiniteCheck(gym.Wrapper):
    """Fail with a clear error when the environment returns NaN or inf observations or rewards."""

    def _check(self, obs: np.ndarray, reward: float | None = None) -> None:
        if not np.all(np.isfinite(obs)):
            raise EnvError(
                f"{self.spec.id if self.spec else 'env'} returned a non-finite observation: {obs}"
            )
        if reward is not None and not np.isfinite(reward):
            raise EnvError(
                f"{self.spec.id if self.spec else 'env'} returned a non-finite reward: {reward}"
            )

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._check(obs)
        return obs, info

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._check(obs, reward)
        return obs, reward, terminated, truncated, info


def scale_action(action: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """Map an action from [-1, 1] to the space's [low, high]."""
    return space.low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (space.high - space.low)


class RunningNormalizer:
    """Running mean/std of observations (Chan et al. parallel update), in float64.

    ``normalize`` gives ``clip((s - mean) / sqrt(var + 1e-8), -clip, clip)`` as float32. The
    statistics are part of every checkpoint; ``frozen`` stops updates (evaluation and attacks).
    """

    def __init__(self, dim: int, clip: float = 10.0, enabled: bool = True):
        self.dim, self.clip, self.enabled = dim, clip, enabled
        self.count = 0
        self.mean = np.zeros(dim, np.float64)
        self.var = np.ones(dim, np.float64)
        self._refresh()

    def _refresh(self) -> None:
        self._shift = self.mean.astype(np.float32)
        self._scale = (1.0 / np.sqrt(self.var + 1e-8)).astype(np.float32)

    def update(self, batch: np.ndarray) -> None:
        """Add observations, shape (N, dim) or (dim,)."""
        if not self.enabled:
            return
        batch = np.asarray(batch, np.float64).reshape(-1, self.dim)
        n = batch.shape[0]
        batch_mean, batch_var = batch.mean(0), batch.var(0)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total
        self._refresh()

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if not self.enabled:
            return obs
        return np.clip((obs - self._shift) * self._scale, -self.clip, self.clip)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + 1e-8)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "count": np.array([self.count], np.int64),
            "mean": self.mean.copy(),
            "var": self.var.copy(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state["mean"].shape != (self.dim,):
            raise ValueError(f"normaliser has dim {state['mean'].shape}, expected ({self.dim},)")
        self.count = int(state["count"][0])
        self.mean = np.asarray(state["mean"], np.float64).copy()
        self.var = np.asarray(state["var"], np.float64).copy()
        self._refresh()
