"""A trained agent as a policy on raw environment observations: ``robustrl.load(run_dir)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustrl import checkpoint
from robustrl.algos import SAC, make_agent
from robustrl.config import TrainConfig
from robustrl.envs import RunningNormalizer
from robustrl.errors import CheckpointError


class Policy:
    """Acts on raw observations: applies the agent's saved normaliser, then its actor.

    ``act`` returns actions in the environment's units; ``agent`` and ``normalizer`` are exposed
    for attacks, which work in normalised observation space.
    """

    def __init__(
        self,
        agent: SAC,
        normalizer: RunningNormalizer,
        action_low: np.ndarray,
        action_high: np.ndarray,
        config: TrainConfig,
        step: int = 0,
    ):
        self.agent, self.normalizer, self.config, self.step = agent, normalizer, config, step
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)

    @property
    def env_id(self) -> str:
        return self.config.env

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Action for a raw observation (obs_dim,) or a batch (B, obs_dim), in env units."""
        obs = np.asarray(obs, np.float32)
        if obs.shape[-1] != self.agent.obs_dim:
            raise ValueError(
                f"observation has {obs.shape[-1]} values, the policy expects {self.agent.obs_dim}"
            )
        batch = torch.as_tensor(
            self.normalizer.normalize(obs.reshape(-1, self.agent.obs_dim)), device=self.agent.device
        )
        action = self.agent.act(batch, deterministic).cpu().numpy()
        action = self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)
        return action.reshape(*obs.shape[:-1], self.agent.act_dim)


def load_model(
    agent: SAC, normalizer: RunningNormalizer, tensors: dict[str, torch.Tensor], source: Path
) -> None:
    """Load networks and normaliser statistics, naming the first mismatch if shapes differ."""
    expected = agent.state_dict()
    for key, value in expected.items():
        if key not in tensors:
            raise CheckpointError(f"{source}: missing tensor {key!r}")
        if tensors[key].is_floating_point() and not torch.isfinite(tensors[key]).all():
            raise CheckpointError(f"{source}: tensor {key!r} holds NaN or infinite values")
        if tensors[key].shape != value.shape:
            raise CheckpointError(
                f"{source} does not fit this environment/config: {key} has shape "
                f"{tuple(tensors[key].shape)}, expected {tuple(value.shape)} "
                f"(obs_dim={agent.obs_dim}, act_dim={agent.act_dim})"
            )
    agent.load_state_dict({k: tensors[k] for k in expected})
    try:
        normalizer.load_state_dict(
            {k: tensors[f"normalizer.{k}"].numpy() for k in ("count", "mean", "var")}
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{source}: bad normaliser statistics: {exc}") from None


def model_tensors(agent: SAC, normalizer: RunningNormalizer) -> dict[str, torch.Tensor]:
    tensors = dict(agent.state_dict())
    for key, value in normalizer.state_dict().items():
        tensors[f"normalizer.{key}"] = torch.from_numpy(value)
    return tensors


def read_run_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's config and its recorded spaces, from ``config.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a robustrl run directory (no config.json)")
    data = checkpoint.read_json(run_dir / "config.json")
    if "config" not in data or "spaces" not in data:
        raise CheckpointError(f"{run_dir}/config.json is not a robustrl run config")
    try:
        config = TrainConfig.from_dict(data["config"])
    except Exception as exc:  # a hand-edited or foreign file
        raise CheckpointError(f"{run_dir}/config.json: {exc}") from None
    spaces = data["spaces"]
    valid = (
        isinstance(spaces, dict)
        and all(isinstance(spaces.get(k), int) and spaces[k] > 0 for k in ("obs_dim", "act_dim"))
        and all(
            isinstance(spaces.get(k), list) and len(spaces[k]) == spaces["act_dim"]
            for k in ("action_low", "action_high")
        )
    )
    if not valid:
        raise CheckpointError(
            f"{run_dir}/config.json: 'spaces' must give obs_dim, act_dim and the action bounds, "
            f"got {str(spaces)[:120]}"
        )
    return config, spaces


def load(run_dir: str | Path, device: str = "cpu") -> Policy:
    """Load the newest checkpoint of a run directory as a ``Policy`` on ``device``."""
    run_dir = Path(run_dir)
    config, spaces = read_run_config(run_dir)
    config.device = device
    folder = checkpoint.latest(run_dir)
    state = checkpoint.read_json(folder / "state.json")
    agent = make_agent(config, spaces["obs_dim"], spaces["act_dim"])
    normalizer = RunningNormalizer(
        spaces["obs_dim"], config.normalizer.clip, config.normalizer.enabled
    )
    load_model(agent, normalizer, checkpoint.read_tensors(folder / "model.safetensors"), folder)
    agent.eval()
    return Policy(
        agent,
        normalizer,
        np.array(spaces["action_low"]),
        np.array(spaces["action_high"]),
        config,
        int(state.get("step", 0)),
    )
