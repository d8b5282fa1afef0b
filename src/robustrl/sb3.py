"""Policy views of Stable-Baselines3 agents: SAC, TD3 and PPO ``MlpPolicy`` models with Box spaces.

``load_sb3_view(path, algo, env_id, vecnormalize)`` opens a ``model.save`` zip (and optionally the
statistics file of a ``VecNormalize`` wrapper) and returns a ``PolicyView`` that attacks use like
any robustrl agent: observations in the agent's normalised space (VecNormalize's, or raw float32
without one), actions in [-1, 1]^act_dim.

Loading untrusted files. SB3 writes two kinds of pickle: the VecNormalize statistics file is a
plain pickle of the wrapper, and the ``data`` entry of a model zip holds cloudpickled objects (the
policy class, the spaces, the schedules). Unpickling either with ``pickle``/``cloudpickle`` runs
whatever callables the file names, so a crafted file executes code. Here both go through
``RestrictedUnpickler``, which resolves only an allowlist of globals (numpy array reconstruction,
gymnasium spaces, the SB3 classes a saved SAC/TD3/PPO references) and raises ``ConfigError`` for
any other. The model's objects are then handed to SB3's own ``load`` as ``custom_objects``, so
SB3 never unpickles them itself; SB3 reads the weights with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import pickle
import zipfile
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3  # ImportError: the CLI suggests robustrl[sb3]
from stable_baselines3.common import buffers, type_aliases
from stable_baselines3.common import policies as common_policies
from stable_baselines3.common import utils as sb3_utils
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.sac import policies as sac_policies
from stable_baselines3.td3 import policies as td3_policies
from torch.distributions import Normal

from robustrl.envs import make_env
from robustrl.errors import ConfigError
from robustrl.views import PolicyView

SUPPORTED = "robustrl attacks SAC, TD3 and PPO MlpPolicy agents with Box spaces"
ALGOS = {"sac": SAC, "td3": TD3, "ppo": PPO}
# The MlpPolicy class of each algorithm (SB3 pickles it under its defining name).
MLP_POLICY = {
    "sac": sac_policies.SACPolicy,
    "td3": td3_policies.TD3Policy,
    "ppo": common_policies.ActorCriticPolicy,
}
# std of the Gaussian a TD3 view reports: TD3 is deterministic (see SB3TD3View.distribution)
TD3_DISTRIBUTION_STD = 0.1


# --------------------------------------------------------------------------- restricted unpickling


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed`` and rejects all others.

    Pickle builds objects by calling the globals a file names (``os.system`` included), so the
    only safe way to read an untrusted pickle is to refuse every global not known to be a data
    constructor. ``allowed`` maps ``(module, name)`` to the object to use; ``what`` names the
    file in the error.
    """

    def __init__(self, file: io.BufferedIOBase, allowed: Mapping[tuple[str, str], Any], what: str):
        super().__init__(file)
        self.allowed, self.what = allowed, what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise ConfigError(
                f"{self.what} references {module}.{name}, which robustrl refuses to unpickle (only "
                "numpy arrays, gymnasium spaces and SB3's own SAC/TD3/PPO classes are loaded)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise ConfigError(f"{self.what} uses pickle persistent ids, which robustrl does not load")


def restricted_loads(data: bytes, allowed: Mapping[tuple[str, str], Any], what: str) -> Any:
    """Unpickle ``data`` with ``RestrictedUnpickler``; any failure is a ``ConfigError``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, what).load()
    except ConfigError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many exception types
        raise ConfigError(
            f"{what} is not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's array/dtype/scalar reconstruction functions, under numpy 1 and 2 module names."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # multiarray._reconstruct
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (protocol 5)
    scalar = np.float64(0).__reduce__()[0]  # multiarray.scalar
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


# What a seeded gymnasium space pickles for its numpy Generator.
_NUMPY_RANDOM = [
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
]
_SPACES = {
    ("gymnasium.spaces.box", "Box"): gym.spaces.Box,
    ("gymnasium.spaces.dict", "Dict"): gym.spaces.Dict,
    ("gymnasium.spaces.discrete", "Discrete"): gym.spaces.Discrete,
    ("gymnasium.spaces.multi_discrete", "MultiDiscrete"): gym.spaces.MultiDiscrete,
    ("gymnasium.spaces.multi_binary", "MultiBinary"): gym.spaces.MultiBinary,
}


def _existing(names: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """``{(module, name): object}`` for those fixed names this numpy version has."""
    found = {}
    for module, name in names:
        try:
            found[(module, name)] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return found


def _model_globals() -> dict[tuple[str, str], Any]:
    """Every global the ``data`` of an SB3 2.x SAC/TD3/PPO zip references (checked on 2.9).

    Classes are data here: a policy class is only *named* by the file (SB3 instantiates it; the
    Cnn/MultiInput ones are allowed so that they get the "unsupported policy" message); the
    others are constructors of plain data (spaces, schedules, buffers, optimisers, activations).
    """
    allowed = _numpy_globals()
    allowed.update(_existing(_NUMPY_RANDOM))
    allowed.update(_SPACES)
    allowed[("gymnasium.spaces.box", "Box")] = _CheckedBox  # shape checked before allocating
    allowed[("collections", "deque")] = deque
    allowed[("collections", "OrderedDict")] = OrderedDict
    for cls in (
        sac_policies.SACPolicy,
        sac_policies.CnnPolicy,
        sac_policies.MultiInputPolicy,
        td3_policies.TD3Policy,
        td3_policies.CnnPolicy,
        td3_policies.MultiInputPolicy,
        common_policies.ActorCriticPolicy,
        common_policies.ActorCriticCnnPolicy,
        common_policies.MultiInputActorCriticPolicy,
    ):
        allowed[(cls.__module__, cls.__qualname__)] = cls
    for cls in (
        buffers.ReplayBuffer,
        buffers.DictReplayBuffer,
        buffers.RolloutBuffer,
        buffers.DictRolloutBuffer,
        type_aliases.TrainFreq,
        type_aliases.TrainFrequencyUnit,
        FlattenExtractor,
        torch.optim.Adam,
        torch.optim.AdamW,
        torch.optim.RMSprop,
        torch.optim.SGD,
        torch.nn.ReLU,
        torch.nn.Tanh,
        torch.nn.ELU,
        torch.nn.LeakyReLU,
        torch.nn.GELU,
        torch.nn.SiLU,
        torch.nn.Sigmoid,
        torch.nn.Softplus,
        torch.nn.Mish,
    ):
        allowed[(cls.__module__, cls.__qualname__)] = cls
    for name in ("FloatSchedule", "ConstantSchedule", "LinearSchedule"):
        cls = getattr(sb3_utils, name, None)  # schedule classes since SB3 2.6
        if cls is not None:
            allowed[(cls.__module__, cls.__qualname__)] = cls
    return allowed


class _VecNormalizeState:
    """Stand-in for ``VecNormalize`` while unpickling: keeps the state dict, runs nothing.

    ``VecNormalize.__setstate__`` expects to be followed by ``set_venv`` (a live environment);
    reading the state dict ourselves needs neither.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


class _Unused:
    """Inert stand-in for the parts of a VecNormalize pickle robustrl does not read.

    The wrapper pickles its gymnasium spaces with their numpy random generators; the view needs
    only ``obs_rms``, so those objects are replaced by this placeholder instead of being built.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> _Unused:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _vecnormalize_globals() -> dict[tuple[str, str], Any]:
    allowed = _numpy_globals()
    allowed[("stable_baselines3.common.running_mean_std", "RunningMeanStd")] = RunningMeanStd
    allowed[("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize")] = _VecNormalizeState
    allowed.update({key: _Unused for key in [*_NUMPY_RANDOM, *_SPACES]})
    return allowed


# --------------------------------------------------------------------------- VecNormalize statistics


@dataclass(frozen=True)
class VecNormalizeStats:
    """The observation statistics of an SB3 ``VecNormalize`` (float64 ``mean``/``var`` (obs_dim,)).

    ``normalize`` reproduces ``VecNormalize.normalize_obs``: ``clip((s - mean) / sqrt(var + eps),
    -clip_obs, clip_obs)`` in float64, cast to float32; with ``norm_obs`` False it is the identity.
    """

    mean: np.ndarray
    var: np.ndarray
    epsilon: float
    clip_obs: float
    norm_obs: bool

    def normalize(self, raw_obs: np.ndarray) -> np.ndarray:
        """Raw observations (B, obs_dim) -> normalised float32 (B, obs_dim)."""
        if not self.norm_obs:
            return np.asarray(raw_obs, dtype=np.float32)
        scaled = (raw_obs - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip_obs, self.clip_obs).astype(np.float32)

    @property
    def std(self) -> np.ndarray:
        """Raw units per normalised unit, (obs_dim,): ``sqrt(var + epsilon)``, or ones."""
        if not self.norm_obs:
            return np.ones_like(self.mean)
        return np.sqrt(self.var + self.epsilon)


def load_vecnormalize_stats(path: str | Path) -> VecNormalizeStats:
    """Read the statistics file ``VecNormalize.save`` wrote, without SB3's plain ``pickle.load``.

    A plain unpickle of an untrusted file can run arbitrary code, and ``VecNormalize.load`` also
    needs a live vectorised env; ``RestrictedUnpickler`` resolves only numpy arrays,
    ``RunningMeanStd`` and a ``VecNormalize`` stand-in that keeps the state dict
    (``VecNormalize.__setstate__`` never runs); the pickled spaces and their random generators
    become inert placeholders, so only the saved numbers are read.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"no such file: {path} (give the VecNormalize statistics file vec_normalize.save wrote)"
        )
    what = f"VecNormalize file {path}"
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise ConfigError(
            f"{what} is {path.stat().st_size // 2**20} MiB; statistics files are a few KB "
            f"(robustrl reads at most {MAX_PICKLE_BYTES // 2**20} MiB)"
        )
    loaded = restricted_loads(path.read_bytes(), _vecnormalize_globals(), what)
    if not isinstance(loaded, _VecNormalizeState):
        raise ConfigError(
            f"{what} is not a VecNormalize statistics file (it holds a {type(loaded).__name__}); "
            "give the file vec_normalize.save wrote"
        )
    state = getattr(loaded, "state", None)
    if not isinstance(state, dict):
        raise ConfigError(f"{what} holds a VecNormalize without its saved state")
    obs_rms = state.get("obs_rms")
    if isinstance(obs_rms, dict):
        raise ConfigError(f"{what} normalises Dict observations; {SUPPORTED}")
    if not isinstance(obs_rms, RunningMeanStd):
        raise ConfigError(f"{what} has no observation statistics (obs_rms)")
    try:
        mean = np.asarray(obs_rms.mean, dtype=np.float64)
        var = np.asarray(obs_rms.var, dtype=np.float64)
        stats = VecNormalizeStats(
            mean=mean,
            var=var,
            epsilon=float(state["epsilon"]),
            clip_obs=float(state["clip_obs"]),
            norm_obs=bool(state.get("norm_obs", True)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{what} is missing or has malformed statistics ({exc})") from None
    if mean.ndim != 1 or mean.shape != var.shape:
        raise ConfigError(
            f"{what} has observation statistics of shapes {mean.shape} and {var.shape}; "
            "expected flat (obs_dim,) vectors"
        )
    return stats


# --------------------------------------------------------------------------- the model zip


# Training-only entries SB3 < 2.6 saved as cloudpickled closures (code, which is refused): the
# view never trains, so they become a zero schedule instead of an error.
_TRAINING_ONLY = frozenset({"learning_rate", "lr_schedule", "clip_range", "clip_range_vf"})


# Bounds on untrusted files, checked before anything of that size is allocated: far above any
# MlpPolicy model (a 2x256 SAC zip is ~3 MB), far below what would exhaust a machine.
MAX_DATA_BYTES = 64 * 2**20  # the zip's JSON ``data`` entry, decompressed
MAX_MEMBER_BYTES = 512 * 2**20  # any other zip member, decompressed
MAX_TOTAL_BYTES = 1024 * 2**20  # all members together, decompressed
MAX_PICKLE_BYTES = 64 * 2**20  # a VecNormalize statistics file
MAX_SPACE_ELEMENTS = 1_000_000  # elements of an observation / action space
MAX_POLICY_PARAMETERS = 50_000_000  # parameters of the networks ``policy_kwargs`` asks for


class _CheckedBox(gym.spaces.Box):
    """``gymnasium.spaces.Box`` as an untrusted pickle may build it: the shape is checked before
    the bounds arrays are allocated (a 61-byte pickle can ask for ``Box(0, 1, (10**8,))``)."""

    def __init__(self, low: Any, high: Any, shape: Any = None, *args: Any, **kwargs: Any):
        _check_space_size(shape if shape is not None else np.shape(low))
        super().__init__(low, high, shape, *args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        shape = dict(state).get("_shape") if isinstance(state, Mapping | list) else None
        if shape is not None:
            _check_space_size(shape)
        super().__setstate__(state)


def _check_space_size(shape: Any) -> None:
    try:
        elements = int(np.prod([int(n) for n in shape], dtype=np.float64))
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"a space in the model has an invalid shape {shape!r}") from None
    if elements > MAX_SPACE_ELEMENTS:
        raise ConfigError(
            f"a space in the model has {elements} elements (shape {tuple(shape)}); robustrl "
            f"loads at most {MAX_SPACE_ELEMENTS}"
        )


def _check_zip_members(archive: zipfile.ZipFile, path: Path) -> bytes:
    """Refuse encrypted members, unknown compression and oversized contents (zip bombs: the
    sizes are measured while decompressing, not trusted from the header); return ``data``."""
    total, data = 0, b""
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise ConfigError(
                f"{path}: member {info.filename!r} is encrypted; SB3 never writes that"
            )
        limit = MAX_DATA_BYTES if info.filename == "data" else MAX_MEMBER_BYTES
        size = 0
        try:
            with archive.open(info) as member:
                while chunk := member.read(1 << 20):
                    size += len(chunk)
                    total += len(chunk)
                    if size > limit or total > MAX_TOTAL_BYTES:
                        raise ConfigError(
                            f"{path}: member {info.filename!r} decompresses to more than "
                            f"{min(limit, MAX_TOTAL_BYTES) // 2**20} MiB; not an SB3 MlpPolicy model"
                        )
                    if info.filename == "data":
                        data += chunk
        except NotImplementedError as exc:  # a compression method zipfile does not know
            raise ConfigError(f"{path}: member {info.filename!r}: {exc}") from None
    return data


def _check_network_size(kwargs: Any, objects: Mapping[str, Any], path: Path) -> None:
    """Estimate the parameters ``policy_kwargs['net_arch']`` asks SB3 to allocate."""
    arch = kwargs.get("net_arch") if isinstance(kwargs, dict) else None
    if arch is None:
        return
    heads = arch.values() if isinstance(arch, dict) else [arch]
    inputs = sum(int(np.prod(objects[k].shape)) for k in ("observation_space", "action_space"))
    total = 0
    for widths in heads:
        if not isinstance(widths, list | tuple) or not all(
            isinstance(w, int) and 0 < w <= 65536 for w in widths
        ):
            raise ConfigError(f"{path}: policy_kwargs net_arch {arch!r} is not a list of widths")
        sizes = [inputs, *widths, 1]
        total += 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # twins / targets
    if total > MAX_POLICY_PARAMETERS:
        raise ConfigError(
            f"{path}: net_arch {arch!r} asks for about {total:.2e} parameters; robustrl loads "
            f"MlpPolicy models up to {MAX_POLICY_PARAMETERS:.0e}"
        )


def _zero_schedule(progress_remaining: float) -> float:
    """Placeholder for a training schedule the view never uses."""
    return 0.0


def _read_model_data(path: Path, algo: str) -> dict[str, Any]:
    """Check the zip is an SB3 ``algo`` MlpPolicy model; its safely unpickled objects by key.

    Every cloudpickled entry of ``data`` goes through ``RestrictedUnpickler``; the result is
    passed to SB3's ``load`` as ``custom_objects`` so SB3 does not unpickle anything itself.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "data" not in names or "policy.pth" not in names:
                raise ConfigError(
                    f"{path} is a zip but not an SB3 model (no data/policy.pth entries); "
                    "give the .zip that model.save wrote"
                )
            raw = _check_zip_members(archive, path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ConfigError(
            f"{path} is not a readable zip file ({exc}); give the .zip an SB3 model.save wrote"
        ) from None
    try:
        entries = json.loads(raw.decode())
    except RecursionError:
        raise ConfigError(
            f"{path} is not an SB3 model: its data entry is nested too deeply"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is not an SB3 model: its data entry is not JSON ({exc})"
        ) from None
    if not isinstance(entries, dict):
        raise ConfigError(f"{path} is not an SB3 model: its data entry is not a JSON object")

    allowed = _model_globals()

    def serialized(key: str) -> bool:
        item = entries.get(key)
        return isinstance(item, dict) and isinstance(item.get(":serialized:"), str)

    def unpickle(key: str) -> Any:
        """The object of a cloudpickled entry; ConfigError (message without the path) if refused."""
        try:
            blob = base64.b64decode(entries[key][":serialized:"].encode(), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ConfigError(f"entry {key!r} is not valid base64 ({exc})") from None
        return restricted_loads(blob, allowed, f"entry {key!r}")

    if not serialized("policy_class"):
        raise ConfigError(f"{path} is not an SB3 model: its data has no policy_class")
    try:
        policy_class = unpickle("policy_class")
    except ConfigError as exc:
        raise ConfigError(f"unsupported SB3 policy in {path}: {exc}; {SUPPORTED}") from None
    found = _algo_of(policy_class, entries)
    if found is None:
        raise ConfigError(f"unsupported SB3 policy {policy_class!r} in {path}; {SUPPORTED}")
    if found != algo:
        hint = f"load it with algo '{found}'" if found in ALGOS else SUPPORTED
        raise ConfigError(f"{path} holds an SB3 {found.upper()} model, not {algo.upper()}; {hint}")
    if policy_class is not MLP_POLICY[algo]:
        raise ConfigError(
            f"unsupported SB3 policy {policy_class.__name__} ({algo.upper()}) in {path}; {SUPPORTED}"
        )
    plain_kwargs = entries.get("policy_kwargs")
    if entries.get("use_sde") or (isinstance(plain_kwargs, dict) and plain_kwargs.get("use_sde")):
        raise ConfigError(
            f"unsupported SB3 policy in {path}: it uses gSDE exploration (use_sde=True); "
            f"{SUPPORTED} and default (non-gSDE) Gaussian exploration"
        )

    objects: dict[str, Any] = {"policy_class": policy_class}
    for key in entries:
        if key == "policy_class" or not serialized(key):
            continue
        try:
            objects[key] = unpickle(key)
        except ConfigError as exc:
            if key in _TRAINING_ONLY:
                objects[key] = _zero_schedule
            elif key == "policy_kwargs":
                raise ConfigError(
                    f"unsupported SB3 policy settings in {path}: {exc}; {SUPPORTED}"
                ) from None
            else:
                raise ConfigError(f"{path}: {exc}") from None
    if "env" in entries:  # never saved by SB3; a string here would make SB3 call gym.make on it
        objects["env"] = None
    if "buffer_size" in entries:
        objects["buffer_size"] = 1  # SB3's load allocates a replay buffer the view never uses

    for key in ("observation_space", "action_space"):
        space = objects.get(key)
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ConfigError(
                f"unsupported SB3 policy in {path}: its {key.replace('_', ' ')} is {space}; "
                f"{SUPPORTED}"
            )
    kwargs = objects.get("policy_kwargs", plain_kwargs)
    _check_network_size(kwargs, objects, path)
    extractor = kwargs.get("features_extractor_class") if isinstance(kwargs, dict) else None
    if extractor not in (None, FlattenExtractor):
        raise ConfigError(
            f"unsupported SB3 policy in {path}: features extractor {extractor}; {SUPPORTED}"
        )
    return objects


def _algo_of(policy_class: Any, entries: Mapping[str, Any]) -> str | None:
    """Which algorithm saved a zip, from its policy class (and PPO's settings vs A2C's)."""
    if not isinstance(policy_class, type):
        return None
    if issubclass(policy_class, sac_policies.SACPolicy):
        return "sac"
    if issubclass(policy_class, td3_policies.TD3Policy):
        return "td3"  # DDPG saves a TD3Policy too; its deterministic actor is read the same way
    if issubclass(policy_class, common_policies.ActorCriticPolicy):
        return "ppo" if "clip_range" in entries else "a2c"
    return None


# --------------------------------------------------------------------------- the views


class SB3View(PolicyView):
    """Common part of the SB3 views: the normaliser, the frozen policy, the env's action bounds.

    The networks take normalised observations (B, obs_dim) float32 tensors directly: for an
    ``MlpPolicy`` on a flat Box space SB3's ``preprocess_obs`` is ``obs.float()`` and its
    ``FlattenExtractor`` a flatten, so no rescaling happens inside (``policy.obs_to_tensor``,
    which goes through numpy, is not used).
    """

    def __init__(
        self,
        model: Any,
        algo: str,
        env_id: str,
        action_low: np.ndarray,
        action_high: np.ndarray,
        normalizer: VecNormalizeStats | None = None,
    ):
        self.model = model
        self.policy = model.policy
        self.policy.set_training_mode(False)
        self.policy.eval()  # every submodule, targets included
        self.policy.float()
        self.policy.requires_grad_(False)  # attacks differentiate w.r.t. observations only
        self.device = model.device
        self.kind = f"sb3 {algo}"
        self.env_id = env_id
        self.env_kwargs: dict[str, Any] = {}
        self.obs_dim = int(model.observation_space.shape[0])
        self.act_dim = int(model.action_space.shape[0])
        self.action_low = np.asarray(action_low, dtype=np.float32)
        self.action_high = np.asarray(action_high, dtype=np.float32)
        self.normalizer = normalizer

    def normalize(self, raw_obs: np.ndarray) -> np.ndarray:
        if self.normalizer is None:
            return np.asarray(raw_obs, dtype=np.float32)
        return self.normalizer.normalize(raw_obs)

    @property
    def obs_std(self) -> np.ndarray:
        if self.normalizer is None:
            return np.ones(self.obs_dim)
        return self.normalizer.std

    def _input(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.to(device=self.device, dtype=torch.float32)


def _critic_mean(critic: Any, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Mean over SB3's Q networks (B,), differentiable in ``obs`` and ``action``.

    Equal to ``mean(critic(obs, action))``; computed from ``q_networks`` because SB3's forward
    detaches the features when the critic shares the actor's extractor.
    """
    features = critic.extract_features(obs, critic.features_extractor)
    x = torch.cat([features, action], dim=1)
    return torch.stack([q(x).squeeze(-1) for q in critic.q_networks]).mean(0)


class SB3SACView(SB3View):
    """SB3 SAC: tanh-squashed Gaussian actor, twin Q critics on [-1, 1] actions."""

    has_q_value = True

    def _gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std, _ = self.policy.actor.get_action_dist_params(self._input(obs))
        return mean, log_std  # (B, act_dim) each; log_std already clamped by SB3

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self._gaussian(obs)[0])

    def distribution(self, obs: torch.Tensor) -> Normal:
        """The pre-tanh Gaussian, batch shape (B, act_dim)."""
        mean, log_std = self._gaussian(obs)
        return Normal(mean, log_std.exp())

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        with torch.no_grad():
            if deterministic:
                return self.mean_action(obs)
            return torch.tanh(self.distribution(obs).sample())  # as SB3 samples

    def q_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return _critic_mean(self.policy.critic, self._input(obs), action.to(self.device))


class SB3TD3View(SB3View):
    """SB3 TD3: deterministic tanh actor, twin Q critics on [-1, 1] actions."""

    has_q_value = True

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.actor(self._input(obs))  # ends in tanh (squash_output)

    def distribution(self, obs: torch.Tensor) -> Normal:
        """TD3 has no distribution: a Normal centred on the action with a fixed small std.

        The std (``TD3_DISTRIBUTION_STD``) is a convention, not part of the agent. The KL
        between two such Normals is ``|a - a'|^2 / (2 std^2)``, so MAD on a TD3 view maximises
        the squared action difference, which is what MAD reduces to on a deterministic policy.
        """
        mean = self.mean_action(obs)
        return Normal(mean, torch.full_like(mean, TD3_DISTRIBUTION_STD))

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """The deterministic action whatever ``deterministic`` says (as SB3's TD3 predict)."""
        with torch.no_grad():
            return self.mean_action(obs)

    def q_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return _critic_mean(self.policy.critic, self._input(obs), action.to(self.device))


class SB3PPOView(SB3View):
    """SB3 PPO: a Gaussian in env units (SB3 clips samples to the bounds) and a state value.

    The view maps actions to [-1, 1] with ``2 (a - low) / (high - low) - 1`` and clips, which is
    SB3's clip expressed in normalised units.
    """

    has_state_value = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        low = torch.as_tensor(self.action_low, device=self.device)
        high = torch.as_tensor(self.action_high, device=self.device)
        self._low, self._scale = low, 2.0 / (high - low)

    def _gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (B, act_dim) of the action Gaussian in [-1, 1]-mapped units."""
        normal = self.policy.get_distribution(self._input(obs)).distribution
        return (normal.mean - self._low) * self._scale - 1.0, normal.stddev * self._scale

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The Gaussian's mean mapped to [-1, 1] and clamped (zero gradient where clamped)."""
        return self._gaussian(obs)[0].clamp(-1.0, 1.0)

    def distribution(self, obs: torch.Tensor) -> Normal:
        """The action Gaussian in mapped units (unclamped), batch shape (B, act_dim)."""
        return Normal(*self._gaussian(obs))

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        with torch.no_grad():
            if deterministic:
                return self.mean_action(obs)
            return self.distribution(obs).sample().clamp(-1.0, 1.0)

    def state_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.predict_values(self._input(obs)).squeeze(-1)


VIEWS: dict[str, type[SB3View]] = {"sac": SB3SACView, "td3": SB3TD3View, "ppo": SB3PPOView}


def load_sb3_view(
    path: str | Path,
    algo: str,
    env_id: str,
    vecnormalize: str | Path | None = None,
    device: str = "cpu",
) -> SB3View:
    """The policy view of an SB3 ``SAC``/``TD3``/``PPO`` MlpPolicy model saved with ``model.save``.

    ``algo`` names the algorithm (sac, td3, ppo); ``env_id`` is the gymnasium id the model was
    trained on (its spaces must match the model's); ``vecnormalize`` is the statistics file
    ``VecNormalize.save`` wrote when the model was trained inside one. Everything a user can get
    wrong raises ``ConfigError`` with a one-line message.
    """
    algo_name = str(algo).strip().lower()
    if algo_name not in ALGOS:
        raise ConfigError(
            f"unsupported SB3 algorithm {algo!r}; choose sac, td3 or ppo ({SUPPORTED})"
        )
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such file: {path} (give the .zip an SB3 model.save wrote)")
    objects = _read_model_data(path, algo_name)

    env = make_env(env_id)
    try:
        env_obs, env_act = env.observation_space, env.action_space
    finally:
        env.close()
    model_obs, model_act = objects["observation_space"], objects["action_space"]
    if env_obs.shape != model_obs.shape:
        raise ConfigError(
            f"{path} was trained on observations of shape {model_obs.shape} but {env_id} has "
            f"{env_obs.shape}; give the env id the model was trained on"
        )
    if env_act.shape != model_act.shape:
        raise ConfigError(
            f"{path} was trained on actions of shape {model_act.shape} but {env_id} has "
            f"{env_act.shape}; give the env id the model was trained on"
        )
    if not (np.allclose(env_act.low, model_act.low) and np.allclose(env_act.high, model_act.high)):
        raise ConfigError(
            f"{path} was trained with action bounds [{model_act.low}, {model_act.high}] but {env_id} "
            f"has [{env_act.low}, {env_act.high}]; give the env id the model was trained on"
        )

    normalizer = None
    if vecnormalize is not None:
        normalizer = load_vecnormalize_stats(vecnormalize)
        if normalizer.mean.shape != model_obs.shape:
            raise ConfigError(
                f"VecNormalize file {vecnormalize} has statistics of shape {normalizer.mean.shape} "
                f"but the model's observations have shape {model_obs.shape}; give the file saved "
                "with this model"
            )

    try:
        model = ALGOS[algo_name].load(path, device=device, custom_objects=objects)
    except ConfigError:
        raise
    except Exception as exc:  # mismatched weights, truncated .pth entries, ...
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot load SB3 {algo_name.upper()} model {path}: {message}") from None
    extractors = [
        module for module in model.policy.modules() if isinstance(module, BaseFeaturesExtractor)
    ]
    if not all(isinstance(module, FlattenExtractor) for module in extractors):
        raise ConfigError(
            f"unsupported SB3 policy in {path} (custom features extractor); {SUPPORTED}"
        )
    return VIEWS[algo_name](model, algo_name, env_id, env_act.low, env_act.high, normalizer)
