"""SAC's update computes the paper's losses, and adversary/regulariser hooks plug in where stated."""

import copy

import pytest
import torch
import torch.nn.functional as F

from robustrl.adversaries import Adversary, Mixture, Regulariser
from robustrl.algos.sac import METRICS, SAC
from robustrl.config import SACConfig

OBS, ACT, B = 5, 2, 16


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(B, OBS, generator=g),
        "action": torch.rand(B, ACT, generator=g) * 2 - 1,
        "reward": torch.randn(B, generator=g),
        "next_obs": torch.randn(B, OBS, generator=g),
        "terminated": (torch.rand(B, generator=g) < 0.3).float(),
        "weight": torch.rand(B, generator=g) + 0.5,
    }


class ShiftAdversary(Adversary):
    """Shifts the policy's observation by fixed offsets at (E) and (I)."""

    def target(self, next_obs, agent):
        return Mixture.point(next_obs + 0.5)

    def actor(self, obs, agent):
        return Mixture.point(obs - 0.25)


class MeanSquareRegulariser(Regulariser):
    def forward(self, obs, agent):
        return 3.0 * agent.actor.gaussian(obs)[0].pow(2).mean()


def expected_losses(agent: SAC, batch, seed):
    """The losses of ALGORITHMS.md §2-3 written out directly, drawing noise in the same order.

    In the sequential (reference) order the actor loss sees the critic after one Adam step on
    the critic loss; in the fused order, the critic as it was before the update."""
    cfg, adv = agent.config, agent.adversary
    alpha = agent.log_alpha.exp()
    torch.manual_seed(seed)
    with torch.no_grad():
        a2, logp2 = agent.actor.sample(adv.target(batch["next_obs"], agent).flat())
        q_targ = agent.critic_target(batch["next_obs"], a2)  # critic at the TRUE next state
        v = torch.minimum(q_targ[0], q_targ[1]) - alpha * logp2
        y = batch["reward"] + cfg.gamma * (1 - batch["terminated"]) * v
    actor_critic = copy.deepcopy(agent.critic)
    q = actor_critic(batch["obs"], batch["action"])
    critic = sum(
        (F.huber_loss(q[i], y, reduction="none", delta=cfg.huber_delta) * batch["weight"]).mean()
        for i in range(2)
    )
    if cfg.update_order == "sequential":
        critic.backward()
        torch.optim.Adam(actor_critic.parameters(), lr=cfg.critic_lr).step()
    with torch.no_grad():
        a, logp = agent.actor.sample(adv.actor(batch["obs"], agent).flat())
        q_pi = actor_critic(batch["obs"], a)  # critic at the TRUE state, policy at õ
        actor = (alpha * logp - torch.minimum(q_pi[0], q_pi[1])).mean() + agent.regulariser(
            batch["obs"], agent
        )
        alpha_loss = -(agent.log_alpha * (logp + agent.target_entropy)).mean()
    return {
        "critic_loss": critic.detach(),
        "actor_loss": actor,
        "alpha_loss": alpha_loss,
        "target_q": y.mean(),
        "entropy": -logp.mean(),
    }


@pytest.mark.parametrize("order", ["sequential", "fused"])
@pytest.mark.parametrize(
    "adversary, regulariser", [(None, None), (ShiftAdversary(), MeanSquareRegulariser())]
)
def test_update_matches_the_written_out_losses(adversary, regulariser, order):
    torch.manual_seed(0)
    config = SACConfig(hidden_sizes=[32, 32], update_order=order)
    agent = SAC(OBS, ACT, config, adversary=adversary, regulariser=regulariser)
    batch = make_batch()
    expected = expected_losses(agent, batch, seed=7)
    torch.manual_seed(7)
    metrics, td = agent.update(batch)
    got = dict(zip(METRICS, metrics.tolist()))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key
    assert td.shape == (B,)


def test_adversary_changes_the_losses():
    torch.manual_seed(0)
    clean = SAC(OBS, ACT, SACConfig(hidden_sizes=[32, 32]))
    shifted = copy.deepcopy(clean)
    shifted.adversary = ShiftAdversary()
    batch = make_batch()
    torch.manual_seed(1)
    m_clean = clean._update(**{k: batch[k] for k in batch})[0]
    torch.manual_seed(1)
    m_adv = shifted._update(**{k: batch[k] for k in batch})[0]
    assert m_clean[METRICS.index("target_q")] != m_adv[METRICS.index("target_q")]
    assert m_clean[METRICS.index("actor_loss")] != m_adv[METRICS.index("actor_loss")]


def test_polyak_target_and_separate_gradients():
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(hidden_sizes=[16]))
    target_before = copy.deepcopy(agent.critic_target.state_dict())
    actor_before = copy.deepcopy(agent.actor.state_dict())
    agent.update(make_batch())
    tau = agent.config.tau
    for key, new_online in agent.critic.state_dict().items():
        expected = (1 - tau) * target_before[key] + tau * new_online
        torch.testing.assert_close(agent.critic_target.state_dict()[key], expected)
    # the critic gradient did not leak into the actor and vice versa: all three moved
    assert any(not torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in agent.parameters())


def test_temperature_moves_towards_the_target_entropy():
    torch.manual_seed(0)
    low = SAC(OBS, ACT, SACConfig(hidden_sizes=[16], target_entropy=-50.0))  # entropy above target
    high = SAC(OBS, ACT, SACConfig(hidden_sizes=[16], target_entropy=50.0))  # entropy below target
    for _ in range(3):
        low.update(make_batch())
        high.update(make_batch())
    assert low.log_alpha.item() < 0.0 < high.log_alpha.item()
    fixed = SAC(OBS, ACT, SACConfig(hidden_sizes=[16], autotune_alpha=False, init_alpha=0.2))
    fixed.update(make_batch())
    assert fixed.log_alpha.exp().item() == pytest.approx(0.2)


def test_compiled_update_matches_eager():
    torch.manual_seed(0)
    eager = SAC(OBS, ACT, SACConfig(hidden_sizes=[32, 32]))
    compiled = SAC(OBS, ACT, SACConfig(hidden_sizes=[32, 32]), compile=True)
    compiled.load_state_dict(eager.state_dict())
    for i in range(3):
        batch = make_batch(i)
        torch.manual_seed(i)
        m_e, td_e = eager.update(batch)
        torch.manual_seed(i)
        m_c, td_c = compiled.update(batch)
        torch.testing.assert_close(m_c, m_e, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(td_c, td_e, rtol=1e-4, atol=1e-4)
    assert compiled.compile_seconds > 0.0
