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


@pytest.fixture(scope="session")
def pendulum_config():
    """Factory of Pendulum-v1 configs for learning tests: seed 0, no periodic evaluation or
    checkpoints, eager; ``overrides`` are dotted keys (network sizes, learning rates, ...)."""
    import robustrl

    def make(algo: str = "sac", steps: int = 7000, learning_starts: int = 1000, **overrides):
        return robustrl.build_config(
            algo=algo,
            env="Pendulum-v1",
            steps=steps,
            seed=0,
            learning_starts=learning_starts,
            eval_every=0,
            checkpoint_every=0,
            log_every=1000,
            compile=False,
            overrides=overrides,
        )

    return make


@pytest.fixture(scope="session")
def pendulum_victim(tmp_path_factory, pendulum_config):
    """An undefended SAC agent that solves Pendulum-v1, trained once per test session (~15 s)."""
    import robustrl

    config = pendulum_config(**{"sac.hidden_sizes": [128, 128], "sac.batch_size": 128})
    state = torch.get_rng_state()
    run_dir = robustrl.train(
        config, out=tmp_path_factory.mktemp("victim"), name="sac", progress=False
    )
    torch.set_rng_state(state)
    return run_dir


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
