"""Update order and gradient routing for every off-policy agent.

Reference SAC (Haarnoja et al. 2018; SB3, CleanRL) and TD3 step the critic first and then the
actor against the *updated* critic: that is ``update_order="sequential"``, the default. The fused
order (one backward pass for every loss) is kept as an option; the critic's step is the same in
both, only what the actor sees differs. Gradient routing: each loss reaches only its own
parameters (the actor loss never the critic, the temperature loss never the actor, ...).
"""

import copy

import pytest
import torch
from test_sac import ACT, OBS
from test_sac import make_batch as batch

from robustrl.algos import make_agent
from robustrl.config import build_config

SAC_FAMILY = ["sac", "robust-sac", "valt-eps-sac", "valt-soft-sac", "sac-ppo", "pa-sac-ppo"]
ALL = [*SAC_FAMILY, "td3", "oa-td3"]


def make(algo, order="sequential"):
    section = "td3" if algo in ("td3", "oa-td3") else "sac"
    overrides = {
        f"{section}.update_order": order,
        f"{section}.hidden_sizes": [16, 16],
        "adversary.eps": 0.2,
        "adversary.ramp_end": 0,  # kappa = 1 from the start: the PGD point is in play
        "regulariser.ramp_end": 0,  # full regulariser radius from the start
        "adversary.hidden_sizes": [16, 16],
        "td3.policy_delay": 1,  # an actor step at every update
    }
    torch.manual_seed(0)
    return make_agent(build_config(algo=algo, env="Pendulum-v1", overrides=overrides), OBS, ACT)


def weights(module):
    return [p.detach().clone() for p in module.parameters()]


def record_actor_side_critic(critic):
    """Make ``critic`` remember its weights at every weight-detached call (the actor's losses,
    and inner searches before them); returns the list of snapshots."""
    seen = []
    forward, member = critic.forward, critic.member

    def recording_forward(obs, action, detach=False):
        if detach:
            seen.append(weights(critic))
        return forward(obs, action, detach)

    def recording_member(index, obs, action, detach=False):
        if detach:
            seen.append(weights(critic))
        return member(index, obs, action, detach)

    critic.forward, critic.member = recording_forward, recording_member
    return seen


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("algo", ALL)
@pytest.mark.parametrize("order", ["sequential", "fused"])
def test_the_actor_sees_the_updated_critic_only_in_the_sequential_order(algo, order):
    agent = make(algo, order)
    critics = [agent.critic] + ([agent.oa_critic] if algo == "oa-td3" else [])
    snapshots = [record_actor_side_critic(c) for c in critics]
    before = [weights(c) for c in critics]
    agent.update(batch())
    for critic, seen, old in zip(critics, snapshots, before, strict=True):
        new = weights(critic)
        assert not same(new, old), "the critic did not move"
        # the last weight-detached evaluation of the update is the actor's loss
        assert same(seen[-1], new if order == "sequential" else old)


@pytest.mark.parametrize("algo", ALL)
def test_the_critic_step_is_the_same_in_both_orders(algo):
    """Same seed, same batch: the critics move identically whatever the order, so nothing but
    the critic loss reaches them (an actor loss leaking into the critic in the fused order, or
    a critic loss into the actor, would make them differ); the actors then differ."""
    sequential, fused = make(algo, "sequential"), make(algo, "fused")
    for agent in (sequential, fused):
        torch.manual_seed(3)
        agent.update(batch())
    torch.testing.assert_close(weights(sequential.critic), weights(fused.critic), rtol=0, atol=0)
    if algo == "oa-td3":
        torch.testing.assert_close(
            weights(sequential.oa_critic), weights(fused.oa_critic), rtol=0, atol=0
        )
    # the actor: Adam's first step is close to lr * sign(gradient), which the order rarely
    # flips, so the difference shows from the second update on
    for agent in (sequential, fused):
        torch.manual_seed(4)
        agent.update(batch(1))
    assert not same(weights(sequential.actor), weights(fused.actor))


def reached(loss, groups):
    """The names of the parameter groups ``loss`` has a nonzero gradient for."""
    names = []
    for name, params in groups.items():
        params = [p for p in params if p.requires_grad]
        if not params:
            continue
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        if any(g is not None and g.abs().sum() > 0 for g in grads):
            names.append(name)
    return set(names)


@pytest.mark.parametrize("algo", SAC_FAMILY)
def test_sac_losses_reach_only_their_own_parameters(algo):
    agent = make(algo)
    b = batch()
    groups = {
        "critic": list(agent.critic.parameters()),
        "actor": list(agent.actor.parameters()),
        "alpha": [agent.log_alpha],
        "adversary": list(agent.adversary.parameters()),
        "regulariser": list(agent.regulariser.parameters()),
    }
    seen_next, seen = agent.adversary.observations(b["obs"], b["next_obs"], agent)
    critic_loss, _, _ = agent.critic_loss(
        b["obs"], b["action"], b["reward"], b["next_obs"], b["terminated"], b["weight"], seen_next
    )
    actor_loss, alpha_loss, reg_loss, _ = agent.actor_losses(b["obs"], seen)
    assert reached(critic_loss, groups) == {"critic"}
    # VALT-SOFT's adversary gets the actor loss's gradient through a reversal, by design
    expected_actor = {"actor", "adversary"} if algo == "valt-soft-sac" else {"actor"}
    assert reached(actor_loss, groups) == expected_actor
    assert reached(alpha_loss, groups) == {"alpha"}
    if agent.regulariser.active:
        assert reg_loss.item() > 0 and reached(reg_loss, groups) == {"actor"}
    adversary_loss = agent.adversary.loss()
    if algo == "valt-soft-sac":
        assert reached(adversary_loss, groups) == {"adversary"}
    else:
        assert adversary_loss is None


def test_valt_soft_adversary_descends_what_the_actor_ascends():
    """The reversal: the adversary's gradient from the actor loss is minus the gradient of the
    same loss without the reversal (the adversary minimises the value the actor maximises)."""
    agent = make("valt-soft-sac")
    obs = batch()["obs"]
    params = list(agent.adversary.parameters())
    torch.manual_seed(5)
    reversed_loss = agent.actor_losses(obs, agent.adversary.actor(obs, agent))[0]
    agent.adversary.loss()  # consume the stored log-probabilities
    reversed_grads = torch.autograd.grad(reversed_loss, params)
    torch.manual_seed(5)
    adv, _ = agent.adversary.sample(obs)
    from robustrl.adversaries import Mixture

    plain_loss = agent.actor_losses(obs, Mixture.point(adv))[0]
    plain_grads = torch.autograd.grad(plain_loss, params)
    for r, p in zip(reversed_grads, plain_grads, strict=True):
        torch.testing.assert_close(r, -p)
    assert any(p.abs().sum() > 0 for p in plain_grads)


@pytest.mark.parametrize("algo", ["td3", "oa-td3"])
def test_td3_losses_reach_only_their_own_parameters(algo):
    agent = make(algo)
    b = batch()
    groups = {"critic": list(agent.critic.parameters()), "actor": list(agent.actor.parameters())}
    if algo == "oa-td3":
        groups["oa_critic"] = list(agent.oa_critic.parameters())
    critic_loss = agent._critic_loss(
        b["obs"], b["action"], b["reward"], b["next_obs"], b["terminated"], b["weight"]
    )[0]
    assert reached(critic_loss, groups) == {"critic"}
    assert reached(agent.actor_loss(b["obs"]), groups) == {"actor"}
    if algo == "oa-td3":
        oa_target = agent.oa_target(b["reward"], b["next_obs"], b["terminated"])
        assert not oa_target.requires_grad
        # the two actor gradients are taken with respect to the actor alone: no critic .grad
        for p in agent.parameters():
            p.grad = None
        g_nom, g_oa, _, _ = agent.actor_gradients(b["obs"])
        assert g_nom.abs().sum() > 0 and g_oa.abs().sum() > 0
        assert all(p.grad is None for p in agent.parameters())


def test_bad_update_order_is_a_one_line_error():
    from robustrl.errors import ConfigError

    with pytest.raises(ConfigError, match="sac.update_order must be 'sequential' or 'fused'"):
        build_config(overrides={"sac.update_order": "actor-first"})


def test_the_fused_order_is_kept_in_a_copy():
    """``copy.deepcopy`` of an agent (used by attacks and tests) keeps its order."""
    agent = make("sac", "fused")
    assert copy.deepcopy(agent).config.update_order == "fused"
