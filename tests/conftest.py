import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from robustrl.config import build_config


class NanAfter(gym.Env):
    """A 2-D point env whose observation turns NaN (or reward inf) after ``bad_at`` steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, bad_at=300, what="obs"):
        self.bad_at, self.what, self.t = bad_at, what, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(2, float(action[0]), np.float32)
        reward = -float(action[0] ** 2)
        if self.t >= self.bad_at:
            if self.what == "obs":
                obs[0] = np.nan
            else:
                reward = float("inf")
        return obs, reward, False, self.t % 50 == 0, {}


class TerminatesOrTruncates(gym.Env):
    """Episodes of a 1-D walk that *terminate* at step 5 of every third episode and are
    *truncated* by the time limit (10 steps) otherwise. The observation is (step in episode,
    episode index), so a stored transition says which of the two it was."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.episode, self.t = -1, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([0.0, self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode % 3 == 0 and self.t == 5
        return np.array([self.t, self.episode], np.float32), 1.0, terminated, False, {}


gym.register("NanObs-v0", entry_point=lambda **kw: NanAfter(what="obs", **kw))
gym.register("InfReward-v0", entry_point=lambda **kw: NanAfter(what="reward", **kw))
gym.register("TerminatesOrTruncates-v0", entry_point=TerminatesOrTruncates, max_episode_steps=10)


def tiny_config(**overrides):
    """Pendulum with small networks: a run of a few hundred steps takes a second or two."""
    fields = dict(
        steps=600,
        learning_starts=200,
        eval_every=300,
        eval_episodes=2,
        checkpoint_every=300,
        log_every=100,
        compile=False,
    )
    fields.update({k: v for k, v in overrides.items() if "." not in k})
    dotted = {"sac.hidden_sizes": [32, 32], "sac.batch_size": 32}
    dotted.update({k: v for k, v in overrides.items() if "." in k})
    return build_config(
        algo="sac", env=fields.pop("env", "Pendulum-v1"), overrides=dotted, **fields
    )


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


VICTIMS = Path(__file__).resolve().parent / "data" / "victims"


@pytest.fixture(scope="session")
def shipped_victim(tmp_path_factory):
    """``shipped_victim(name)``: a fresh copy of the fixed-weight victim run directory
    ``tests/data/victims/<name>`` (made by ``tests/data/make_victims.py``; tests write results
    and caches into a run directory, so they get a copy). Attack tests attack these, so they
    test the same agent on every machine."""

    def copy(name: str) -> Path:
        dest = tmp_path_factory.mktemp(name) / name
        shutil.copytree(VICTIMS / name, dest)
        return dest

    return copy


@pytest.fixture(scope="session")
def pendulum_victim(shipped_victim):
    """An undefended SAC agent that solves Pendulum-v1 (2x128; deterministic mean -172 over 10
    episodes, every start swung up; a random policy scores about -1200)."""
    return shipped_victim("pendulum_sac_128")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use small networks: one intra-op thread is as fast, and it cannot stall when the
    machine is shared (two processes with two spinning OpenMP threads each on two cores were
    measured 10-30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def interrupt_after(monkeypatch):
    """``interrupt_after(step)`` makes a run stop with KeyboardInterrupt right after it
    checkpoints ``step``; returns the original ``checkpoint.save``."""
    from robustrl import checkpoint

    original = checkpoint.save

    def arm(step):
        def save(run_dir, at, *args, **kwargs):
            out = original(run_dir, at, *args, **kwargs)
            if at == step:
                raise KeyboardInterrupt
            return out

        monkeypatch.setattr(checkpoint, "save", save)
        return original

    return arm


@pytest.fixture
def full_and_cut(tmp_path, monkeypatch, interrupt_after):
    """``full_and_cut(config, at)``: the run trained to its end with its replay buffer ("full"),
    and the same run stopped as by Ctrl-C right after its checkpoint at step ``at`` ("cut"),
    ready to resume: the pair every exact-resume test compares."""
    import robustrl
    from robustrl import checkpoint

    def make(config, at):
        full = robustrl.train(config, out=tmp_path, name="full", save_buffer=True, progress=False)
        original = interrupt_after(at)
        with pytest.raises(KeyboardInterrupt):
            robustrl.train(config, out=tmp_path, name="cut", save_buffer=True, progress=False)
        monkeypatch.setattr(checkpoint, "save", original)
        return full, tmp_path / "cut"

    return make
