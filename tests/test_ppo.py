"""The reusable PPO (robustrl.ppo): GAE bootstrapping, learning a trivial task, the clipped update."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from robustrl.config import PPOConfig
from robustrl.ppo import PPO, Rollout, compute_gae

REWARDS = torch.tensor([1.0, 2.0, 3.0])
VALUES = torch.tensor([0.5, 1.0, 1.5])  # V(o_t)
NEXT_VALUES = torch.tensor([1.0, 1.5, 4.0])  # V(o_{t+1}), o_{t+1} the observation step t reached


def gae(terminated, done, next_values=NEXT_VALUES):
    return compute_gae(
        REWARDS,
        VALUES,
        next_values,
        torch.tensor(terminated, dtype=torch.float32),
        torch.tensor(done, dtype=torch.float32),
        gamma=0.5,
        lam=0.5,
    )


# Hand computation with gamma = lam = 0.5 (gamma * lam = 0.25):
#   bootstrapped deltas  d0 = 1 + 0.5*1.0 - 0.5 = 1.0, d1 = 2 + 0.5*1.5 - 1.0 = 1.75,
#                        d2 = 3 + 0.5*4.0 - 1.5 = 3.5 (the rollout's end bootstraps too)
#   terminated at t = 1: d1 = 2 - 1.0 = 1.0
@pytest.mark.parametrize(
    "terminated, done, expected",
    [
        # no episode boundary: A2 = 3.5, A1 = 1.75 + 0.25*3.5, A0 = 1 + 0.25*A1
        ([0, 0, 0], [0, 0, 0], [1.65625, 2.625, 3.5]),
        # time-limit truncation at t = 1: bootstrap from V(o_2) = 1.5 but stop the recursion
        ([0, 0, 0], [0, 1, 0], [1.4375, 1.75, 3.5]),
        # termination at t = 1: no bootstrap, stop the recursion
        ([0, 1, 0], [0, 1, 0], [1.25, 1.0, 3.5]),
    ],
)
def test_gae_matches_hand_computation(terminated, done, expected):
    advantages, returns = gae(terminated, done)
    torch.testing.assert_close(advantages, torch.tensor(expected))
    torch.testing.assert_close(returns, torch.tensor(expected) + VALUES)


def test_gae_ignores_the_value_after_a_termination_only():
    changed = NEXT_VALUES.clone()
    changed[1] = 100.0
    terminated = gae([0, 1, 0], [0, 1, 0])[0]
    torch.testing.assert_close(gae([0, 1, 0], [0, 1, 0], changed)[0], terminated)
    truncated = gae([0, 0, 0], [0, 1, 0])[0]
    assert gae([0, 0, 0], [0, 1, 0], changed)[0][1] == truncated[1] + 0.5 * (100.0 - 1.5)


def test_gae_with_gamma_and_lambda_one_is_the_bootstrapped_return():
    advantages, returns = compute_gae(
        REWARDS, VALUES, NEXT_VALUES, torch.zeros(3), torch.zeros(3), gamma=1.0, lam=1.0
    )
    torch.testing.assert_close(returns, torch.tensor([10.0, 9.0, 7.0]))  # sum r + V(o_3) = 4


class Target(gym.Env):
    """One-step episodes: observe a target in [-1, 1], reward ``-(action - target)^2``."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-1.0, 1.0, 1).astype(np.float32)
        return self.target.copy(), {}

    def step(self, action):
        reward = -float((action[0] - self.target[0]) ** 2)
        return self.target.copy(), reward, True, False, {}


def collect(ppo: PPO, env: gym.Env, steps: int) -> tuple[Rollout, float]:
    rollout, rewards = Rollout(steps, 1, 1), []
    obs = env.reset()[0]
    for _ in range(steps):
        action, log_prob, value = ppo.act(torch.as_tensor(obs)[None])
        next_obs, reward, terminated, truncated, _ = env.step(action[0].numpy())
        rollout.add(obs, action[0], log_prob[0], value[0], reward, next_obs, terminated, truncated)
        rewards.append(reward)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return rollout, float(np.mean(rewards))


def small_ppo(seed=0, **fields) -> PPO:
    torch.manual_seed(seed)
    config = PPOConfig(
        **{"steps_per_iteration": 256, "lr": 3e-3, "value_lr": 3e-3, "hidden_sizes": [32, 32]}
        | fields
    )
    return PPO(1, 1, config)


def test_ppo_learns_to_hit_the_target():
    """The initial policy (mean ~0, std 1) scores about -1.33 = -(1 + E[target^2]); PPO must
    shrink its std and track the target (~1 s)."""
    ppo, env = small_ppo(), Target()
    env.reset(seed=0)
    first = None
    for _ in range(15):
        rollout, mean_reward = collect(ppo, env, 256)
        first = mean_reward if first is None else first
        metrics = ppo.update(rollout)
    assert first < -1.0
    assert collect(ppo, env, 512)[1] > -0.2
    assert metrics["entropy"] < 0.5  # the std shrank (N(0, 1) has entropy 1.42)
    assert all(np.isfinite(v) for v in metrics.values())


def update_ratios(ppo: PPO, rollout: Rollout) -> torch.Tensor:
    """``pi_new(a|o) / pi_old(a|o)`` on every transition of ``rollout``, after one update."""
    ppo.update(rollout)
    with torch.no_grad():
        new = ppo.policy.distribution(rollout.obs).log_prob(rollout.actions).sum(-1)
    return (new - rollout.log_probs).exp()


@pytest.mark.parametrize("seed", [0, 1])
def test_clipping_bounds_the_policy_change(seed):
    """The same data and optimiser, with and without the clip: ten epochs move an unclipped policy
    far from the one that collected the data; the clipped one moves, but stays close."""
    env = Target()
    env.reset(seed=seed)
    rollout = collect(small_ppo(seed), env, 256)[0]
    clipped = update_ratios(small_ppo(seed, clip=0.2), rollout)
    free = update_ratios(small_ppo(seed, clip=1e9), rollout)
    clipped_change, free_change = clipped.log().abs().mean(), free.log().abs().mean()
    assert clipped_change > 0.02  # the policy did change
    assert clipped_change < 0.4 and (clipped - 1).abs().median() < 0.3
    assert free_change > 2 * clipped_change


def test_one_full_batch_update_starts_from_ratio_one():
    """With one epoch of one minibatch, the update sees exactly the policy that collected the
    data: every ratio is 1 (the stored log-probabilities are the policy's), nothing is clipped."""
    ppo, env = small_ppo(epochs=1, minibatch_size=256), Target()
    env.reset(seed=3)
    rollout = collect(ppo, env, 256)[0]
    assert rollout.full
    with pytest.raises(RuntimeError, match="full"):
        rollout.add(np.zeros(1), np.zeros(1), 0.0, 0.0, 0.0, np.zeros(1), True, False)
    metrics = ppo.update(rollout)
    assert metrics["ratio_min"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["ratio_max"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["clip_fraction"] == 0.0 and metrics["approx_kl"] > 0.0  # it did step
    assert set(metrics) == {
        "policy_loss",
        "value_loss",
        "entropy",
        "clip_fraction",
        "approx_kl",
        "ratio_min",
        "ratio_max",
    }
