"""TD3 and OA-TD3 (ALGORITHMS.md §5, paper 000): losses, delayed updates, PGD, PCGrad,
checkpoints, CLI. Learning: ``test_learning.py``."""

import copy
import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import robustrl
from robustrl import checkpoint
from robustrl.algos.td3 import METRICS, OA_METRICS, OATD3, TD3, pcgrad, worst_delta
from robustrl.cli import main
from robustrl.config import OAConfig, TD3Config
from robustrl.errors import ConfigError
from robustrl.nets import TwinQ
from robustrl.threat import ActionBall
from robustrl.views import DETERMINISTIC_STD, load_view

OBS, ACT, B = 5, 2, 16
TIMING = {"steps_per_s", "time_s"}


def make_batch(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(b, OBS, generator=g),
        "action": torch.rand(b, ACT, generator=g) * 2 - 1,
        "reward": torch.randn(b, generator=g),
        "next_obs": torch.randn(b, OBS, generator=g),
        "terminated": (torch.rand(b, generator=g) < 0.3).float(),
        "weight": torch.rand(b, generator=g) + 0.5,
    }


def read_csv(path, drop=()):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def tiny_td3(algo="td3", **fields):
    """Pendulum with tiny networks for plumbing tests (a few hundred steps)."""
    settings_ = dict(
        steps=600,
        learning_starts=200,
        eval_every=300,
        eval_episodes=2,
        checkpoint_every=300,
        log_every=100,
        compile=False,
    )
    settings_.update(fields)
    overrides = {"td3.hidden_sizes": [32, 32], "td3.batch_size": 32, "oa.pgd_steps": 3}
    return robustrl.build_config(algo=algo, env="Pendulum-v1", overrides=overrides, **settings_)


def actor_grad(agent):
    return torch.cat([p.grad.reshape(-1) for p in agent.actor.parameters()])


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def perturb_targets(agent):
    """Make every target network differ from its online network, so a test can tell them apart."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, module in agent.named_children():
            if name.endswith("_target"):
                for p in module.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))


def changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# ---------------------------------------------------------------- 1. PCGrad

# gradient entries: 0 or magnitudes in [1e-3, 100] (no subnormals, whose squares underflow)
entries = st.just(0.0) | st.floats(1e-3, 100) | st.floats(-100, -1e-3)
vectors = st.integers(2, 12).flatmap(
    lambda n: st.tuples(
        st.lists(entries, min_size=n, max_size=n), st.lists(entries, min_size=n, max_size=n)
    )
)


@given(vectors)
@settings(max_examples=300, deadline=None)
def test_pcgrad_resolves_conflicts_and_passes_agreement_through(pair):
    g1 = torch.tensor(pair[0], dtype=torch.float64)
    g2 = torch.tensor(pair[1], dtype=torch.float64)
    if torch.dot(g1, g2) >= 0:  # non-conflicting: unchanged, bit for bit
        p1, p2 = pcgrad(g1, g2)
        assert torch.equal(p1, g1) and torch.equal(p2, g2)
        g2 = -g2  # make the pair conflict (unless orthogonal)
    if torch.dot(g1, g2) >= 0:
        return
    p1, p2 = pcgrad(g1, g2)
    scale = (g1.norm() * g2.norm()).item()
    for out in (p1, p2, p1 + p2):
        for original in (g1, g2):
            assert torch.dot(out, original).item() >= -1e-9 * scale * (1 + out.norm().item())
    # each is projected on the normal plane of the other ORIGINAL gradient
    torch.testing.assert_close(
        torch.dot(p1, g2), torch.tensor(0.0, dtype=torch.float64), atol=1e-9 * scale, rtol=0
    )
    torch.testing.assert_close(
        torch.dot(p2, g1), torch.tensor(0.0, dtype=torch.float64), atol=1e-9 * scale, rtol=0
    )


def test_pcgrad_on_a_worked_example():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1, |g2|^2 = 2
    p1, p2 = pcgrad(g1, g2)
    torch.testing.assert_close(p1, torch.tensor([0.5, 0.5]))  # g1 + 0.5 g2
    torch.testing.assert_close(p2, torch.tensor([0.0, 1.0]))  # g2 + 1.0 g1


def test_one_twin_member_equals_its_row_of_the_fused_pair():
    torch.manual_seed(0)
    critic = TwinQ(5, 3, [32, 32])
    obs, action = torch.randn(64, 5), torch.rand(64, 3) * 2 - 1
    both = critic(obs, action)
    for i in range(2):
        torch.testing.assert_close(critic.member(i, obs, action), both[i])
    # detach=True: input gradients flow, no weight gradient is made
    action.requires_grad_(True)
    critic.member(0, obs, action, detach=True).sum().backward()
    assert action.grad is not None and all(p.grad is None for p in critic.parameters())


# ---------------------------------------------------------------- 2. PGD and the OA target


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_pgd_stays_in_the_ball_and_finds_near_worst_actions(eps):
    torch.manual_seed(0)
    critic = TwinQ(4, 1, [32, 32])
    obs = torch.randn(512, 4)
    action = torch.rand(512, 1) * 2 - 1
    action[:40], action[40:80] = 1.0, -0.97  # at and near the bounds
    q = lambda x: critic(obs, x, detach=True).mean(0)  # noqa: E731
    delta, q_best = worst_delta(q, action, eps, 10, 2.5 * eps / 10)
    executed = ActionBall(eps).apply(action, delta)
    assert delta.abs().max() <= eps and ActionBall(eps).contains(action, executed)
    assert executed.min() >= -1.0 and executed.max() <= 1.0
    torch.testing.assert_close(q_best, q(executed))
    with torch.no_grad():
        q_clean = q(action)
        q_random = q(ActionBall(eps).apply(action, (torch.rand_like(action) * 2 - 1) * eps))
        grid = torch.linspace(-eps, eps, 801)
        q_grid = torch.stack([q((action + g).clamp(-1, 1)) for g in grid]).min(0).values
    assert (q_best <= q_clean).all()
    assert q_best.mean() < q_clean.mean() and q_best.mean() < q_random.mean()
    # PGD closes at least 90% of the gap between the clean action and the brute-force minimum
    assert (q_best - q_grid).mean() <= 0.1 * (q_clean - q_grid).mean()


def test_oa_target_is_below_the_clean_target_of_the_same_critic():
    torch.manual_seed(0)
    agent = OATD3(OBS, ACT, TD3Config(hidden_sizes=[32, 32]), OAConfig(action_eps=0.2))
    for seed in range(3):
        batch = make_batch(seed, b=256)
        y_oa = agent.oa_target(batch["reward"], batch["next_obs"], batch["terminated"])
        with torch.no_grad():
            next_action = agent.actor_target(batch["next_obs"])
            q_clean = agent.oa_critic_target(batch["next_obs"], next_action).min(0).values
            y_clean = batch["reward"] + agent.config.gamma * (1 - batch["terminated"]) * q_clean
        assert (y_oa <= y_clean + 1e-6).all()
        alive = batch["terminated"] == 0
        assert (y_clean - y_oa)[alive].mean() > 1e-4  # strictly lower on average
        # brute force over a 41 x 41 grid of the 2-D ball: the PGD target is no lower than the
        # grid's minimum (up to the grid's resolution) and closes most of the gap to it
        grid = torch.linspace(-0.2, 0.2, 41)
        deltas = torch.cartesian_prod(grid, grid)  # (1681, 2)
        with torch.no_grad():
            q_grid = (
                torch.stack(
                    [
                        agent.oa_critic_target(
                            batch["next_obs"], (next_action + d).clamp(-1.0, 1.0)
                        )
                        .min(0)
                        .values
                        for d in deltas
                    ]
                )
                .min(0)
                .values
            )
        y_grid = batch["reward"] + agent.config.gamma * (1 - batch["terminated"]) * q_grid
        assert (y_oa >= y_grid - 0.01 * (y_clean - y_grid).abs().max() - 1e-6).all()
        assert (y_oa - y_grid)[alive].mean() <= 0.2 * (y_clean - y_grid)[alive].mean()
        torch.testing.assert_close(y_oa[~alive], batch["reward"][~alive])


# ---------------------------------------------------------------- 3. TD3 update, delays


def expected_td3(agent, batch, seed):
    """TD3's losses written out, drawing the smoothing noise like the agent does."""
    cfg = agent.config
    torch.manual_seed(seed)
    with torch.no_grad():
        noise = (torch.randn(B, ACT) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
        a2 = (agent.actor_target(batch["next_obs"]) + noise).clamp(-1, 1)
        q_targ = agent.critic_target(batch["next_obs"], a2)
        y = batch["reward"] + cfg.gamma * (1 - batch["terminated"]) * torch.minimum(
            q_targ[0], q_targ[1]
        )
        q = agent.critic(batch["obs"], batch["action"])
        critic = sum(((q[i] - y) ** 2 * batch["weight"]).mean() for i in range(2))
    return {"critic_loss": critic, "target_q": y.mean(), "q_mean": q.mean()}, (q - y).abs().mean(0)


@pytest.mark.parametrize("order", ["sequential", "fused"])
def test_td3_update_matches_the_written_out_losses(order):
    torch.manual_seed(0)
    agent = TD3(OBS, ACT, TD3Config(hidden_sizes=[32, 32], policy_delay=1, update_order=order))
    perturb_targets(agent)
    batch = make_batch()
    before = copy.deepcopy(agent)
    expected, td_expected = expected_td3(agent, batch, seed=7)
    torch.manual_seed(7)
    metrics, td = agent.update(batch)
    got = dict(zip(METRICS, metrics.tolist()))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key
    torch.testing.assert_close(td, td_expected)
    # actor: the deterministic policy gradient of -Q_1(s, pi(s)), with the critic after this
    # step's update (sequential, the reference order) or before it (fused)
    critic = agent.critic if order == "sequential" else before.critic
    loss = -critic(batch["obs"], before.actor(batch["obs"]))[0].mean()
    loss.backward()
    assert got["actor_loss"] == pytest.approx(loss.item(), rel=1e-5)
    torch.testing.assert_close(actor_grad(agent), actor_grad(before))


def test_actor_and_targets_move_only_every_policy_delay_updates():
    torch.manual_seed(0)
    agent = TD3(OBS, ACT, TD3Config(hidden_sizes=[16], policy_delay=3))
    tau = agent.config.tau
    actor_losses = []
    for n in range(1, 8):
        actor, actor_t = params(agent.actor), params(agent.actor_target)
        critic, critic_t = params(agent.critic), params(agent.critic_target)
        metrics, _ = agent.update(make_batch(n))
        actor_losses.append(metrics[METRICS.index("actor_loss")].item())
        actor_step = n % 3 == 0
        assert agent.num_updates == n
        assert changed(critic, agent.critic)
        assert changed(actor, agent.actor) == actor_step, n
        assert changed(actor_t, agent.actor_target) == actor_step, n
        assert changed(critic_t, agent.critic_target) == actor_step, n
        if actor_step:  # Polyak towards the updated online networks
            for old, new, online in zip(
                critic_t, agent.critic_target.parameters(), agent.critic.parameters()
            ):
                torch.testing.assert_close(new, (1 - tau) * old + tau * online)
            for old, new, online in zip(
                actor_t, agent.actor_target.parameters(), agent.actor.parameters()
            ):
                torch.testing.assert_close(new, (1 - tau) * old + tau * online)
    # between actor steps the actor metric repeats the last actor step's value (0 before the first)
    assert actor_losses[:2] == [0.0, 0.0]
    assert actor_losses[2] != 0.0 and actor_losses[3] == actor_losses[4] == actor_losses[2]
    assert actor_losses[5] != actor_losses[2] and actor_losses[6] == actor_losses[5]


def test_exploration_noise_only_in_the_behaviour_policy():
    torch.manual_seed(0)
    agent = TD3(OBS, ACT, TD3Config(hidden_sizes=[16], exploration_noise=0.3))
    obs = torch.randn(4096, OBS)
    clean = agent.act(obs, deterministic=True)
    torch.testing.assert_close(clean, agent.actor(obs).detach())
    noisy = agent.act(obs)
    assert noisy.abs().max() <= 1.0
    inside = (clean.abs() < 0.2).all(1)  # where clipping cannot bite
    assert (noisy - clean)[inside].std().item() == pytest.approx(0.3, rel=0.05)


# ---------------------------------------------------------------- 4. OA-TD3 actor gradient


def expected_oa(agent, batch, seed):
    """OA-TD3's critic losses and the two actor gradients written out (same draws as the agent:
    smoothing noise, then the target PGD's start, then the actor PGD's start). In the
    sequential (reference) order the actor's gradients come from the critics after one Adam
    step on their losses; in the fused order, from the critics before the update. The inner
    minimum uses ``worst_delta``, checked on its own against a brute-force grid above."""
    cfg, oa = agent.config, agent.oa
    ball, step = ActionBall(oa.action_eps), agent.pgd_step_size
    ref = copy.deepcopy(agent)
    torch.manual_seed(seed)
    next_obs, obs = batch["next_obs"], batch["obs"]
    alive = cfg.gamma * (1 - batch["terminated"])
    with torch.no_grad():
        noise = (torch.randn(B, ACT) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
        a2 = (ref.actor_target(next_obs) + noise).clamp(-1, 1)
        y = batch["reward"] + alive * ref.critic_target(next_obs, a2).min(0).values
    q_t = lambda x: ref.oa_critic_target(next_obs, x).min(0).values  # noqa: E731
    _, worst = worst_delta(q_t, ref.actor_target(next_obs), oa.action_eps, oa.pgd_steps, step)
    y_oa = batch["reward"] + alive * worst
    q, oa_q = ref.critic(obs, batch["action"]), ref.oa_critic(obs, batch["action"])
    critic_loss = sum(((q[i] - y) ** 2 * batch["weight"]).mean() for i in range(2))
    oa_loss = sum(((oa_q[i] - y_oa) ** 2 * batch["weight"]).mean() for i in range(2))
    if cfg.update_order == "sequential":
        (critic_loss + oa_loss).backward()
        torch.optim.Adam(ref.critic.parameters(), lr=cfg.critic_lr).step()
        torch.optim.Adam(ref.oa_critic.parameters(), lr=cfg.critic_lr).step()
    q_oa = lambda x: ref.oa_critic(obs, x)[0]  # noqa: E731
    delta, _ = worst_delta(q_oa, ref.actor(obs), oa.action_eps, oa.pgd_steps, step)
    ref.actor.zero_grad()
    (-ref.critic(obs, ref.actor(obs))[0].mean()).backward()
    g_nom = actor_grad(ref)
    ref.actor.zero_grad()
    (-q_oa(ball.apply(ref.actor(obs), delta)).mean()).backward()
    g_oa = actor_grad(ref)
    return {"oa_critic_loss": oa_loss.item(), "oa_target_q": y_oa.mean().item()}, g_nom, g_oa


def oa_agent(surgery, oa_critic=None, weight=0.4, order="sequential"):
    torch.manual_seed(0)
    agent = OATD3(
        OBS,
        ACT,
        TD3Config(hidden_sizes=[32, 32], policy_delay=1, update_order=order),
        OAConfig(action_eps=0.1, weight=weight, surgery=surgery, pgd_steps=5),
    )
    if oa_critic == "same":  # Q_oa = Q: the two gradients agree
        agent.oa_critic.load_state_dict(agent.critic.state_dict())
    elif oa_critic == "negated":  # Q_oa = -Q: the two gradients conflict
        agent.oa_critic.load_state_dict(agent.critic.state_dict())
        with torch.no_grad():
            agent.oa_critic.layers[-1].weight.neg_()
            agent.oa_critic.layers[-1].bias.neg_()
    perturb_targets(agent)
    return agent


def run_oa_update(agent, seed=7):
    batch = make_batch(3)
    expected, g_nom, g_oa = expected_oa(agent, batch, seed)
    torch.manual_seed(seed)
    metrics, _ = agent.update(batch)
    got = dict(zip(OA_METRICS, metrics.tolist()))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    cos = torch.dot(g_nom, g_oa) / (g_nom.norm() * g_oa.norm())
    assert got["grad_cos"] == pytest.approx(cos.item(), abs=1e-5)
    return got, g_nom, g_oa


@pytest.mark.parametrize("order", ["sequential", "fused"])
@pytest.mark.parametrize("oa_critic", [None, "negated"])
def test_without_surgery_the_actor_follows_the_weighted_sum(oa_critic, order):
    agent = oa_agent(surgery=False, oa_critic=oa_critic, order=order)
    _, g_nom, g_oa = run_oa_update(agent)
    torch.testing.assert_close(actor_grad(agent), 0.6 * g_nom + 0.4 * g_oa)


def test_surgery_projects_conflicting_gradients():
    agent = oa_agent(surgery=True, oa_critic="negated")
    got, g_nom, g_oa = run_oa_update(agent)
    dot = torch.dot(g_nom, g_oa)
    assert dot < 0 and got["conflict"] == 1.0
    p_nom = g_nom - dot / g_oa.square().sum() * g_oa
    p_oa = g_oa - dot / g_nom.square().sum() * g_nom
    applied = actor_grad(agent)
    torch.testing.assert_close(applied, 0.6 * p_nom + 0.4 * p_oa)
    naive = 0.6 * g_nom + 0.4 * g_oa
    assert (applied - naive).norm() > 0.1 * naive.norm()
    assert torch.dot(applied, g_nom) >= 0 and torch.dot(applied, g_oa) >= 0


def test_surgery_leaves_agreeing_gradients_alone():
    agent = oa_agent(surgery=True, oa_critic="same")
    got, g_nom, g_oa = run_oa_update(agent)
    assert torch.dot(g_nom, g_oa) > 0 and got["conflict"] == 0.0
    torch.testing.assert_close(actor_grad(agent), 0.6 * g_nom + 0.4 * g_oa)


# ---------------------------------------------------------------- 5. checkpoints, resume, views


@pytest.mark.parametrize("algo", ["td3", "oa-td3"])
def test_checkpoint_load_gives_identical_actions_and_a_view(tmp_path, algo):
    from robustrl.training import Trainer

    trainer = Trainer(tiny_td3(algo), tmp_path / "run", progress=False)
    run_dir = trainer.run()
    policy = robustrl.load(run_dir)
    assert type(policy.agent) is type(trainer.agent)
    assert policy.agent.num_updates == trainer.agent.num_updates == 401
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 5
    np.testing.assert_array_equal(policy.act(obs), trainer.policy.act(obs))
    torch.manual_seed(5)
    noisy = policy.act(obs, deterministic=False)
    torch.manual_seed(5)
    np.testing.assert_array_equal(noisy, trainer.policy.act(obs, deterministic=False))
    assert not np.array_equal(noisy, policy.act(obs)) and np.all(np.abs(noisy) <= 2.0)

    view = load_view(run_dir)
    o = torch.as_tensor(view.normalize(obs))
    a = view.mean_action(o)
    torch.testing.assert_close(view.act(o, deterministic=False), a)  # no noise at evaluation
    dist = view.distribution(o)
    torch.testing.assert_close(dist.mean, a)
    assert torch.all(dist.stddev == DETERMINISTIC_STD)
    torch.testing.assert_close(view.q_value(o, a), policy.agent.critic(o, a).mean(0))
    assert view.has_q_value and view.has_oa_q_value == (algo == "oa-td3")
    if algo == "oa-td3":
        torch.testing.assert_close(view.oa_q_value(o, a), policy.agent.oa_critic(o, a).mean(0))
    else:
        with pytest.raises(ConfigError):
            view.oa_q_value(o, a)


@pytest.mark.parametrize("algo", ["td3", "oa-td3"])
def test_resume_reproduces_the_uninterrupted_run(algo, full_and_cut):
    # 201 updates by step 400: the delayed-update phase must survive the checkpoint
    config = tiny_td3(algo, steps=800, checkpoint_every=400, eval_every=400)
    full, cut = full_and_cut(config, 400)
    robustrl.resume(cut, save_buffer=True, progress=False)
    assert read_csv(cut / "metrics.csv", TIMING) == read_csv(full / "metrics.csv", TIMING)
    a = checkpoint.read_tensors(checkpoint.latest(full) / "model.safetensors")
    b = checkpoint.read_tensors(checkpoint.latest(cut) / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


# ---------------------------------------------------------------- 6. CLI


def test_cli_trains_oa_td3_with_aliases(tmp_path):
    rc = main(
        [
            "train",
            "--algo", "oa-td3",
            "--env", "Pendulum-v1",
            "--steps", "300",
            "--set", "action_eps=0.1",
            "--set", "surgery=false",
            "--set", "learning_starts=100",
            "--set", "td3.hidden_sizes=[16,16]",
            "--set", "td3.batch_size=16",
            "--set", "oa.pgd_steps=2",
            "--set", "eval_episodes=1",
            "--set", "eval_every=300",
            "--out", str(tmp_path),
            "--name", "cli",
            "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    config = json.loads((tmp_path / "cli" / "config.json").read_text())["config"]
    assert config["algo"] == "oa-td3" and config["oa"]["action_eps"] == 0.1
    assert config["oa"]["surgery"] is False
    rows = read_csv(tmp_path / "cli" / "metrics.csv")
    assert rows[-1]["step"] == "300" and float(rows[-1]["oa_critic_loss"]) >= 0
    assert set(OA_METRICS) <= set(rows[-1])
    agent = robustrl.load(tmp_path / "cli").agent
    assert isinstance(agent, OATD3) and agent.oa.surgery is False and agent.oa.action_eps == 0.1
