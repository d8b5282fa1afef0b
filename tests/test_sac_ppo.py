"""SAC-PPO and PA-SAC-PPO (ALGORITHMS.md §3): the PPO adversary's bounds, learning, schedule, resume."""

import csv
import json

import pytest
import torch

import robustrl
from robustrl import checkpoint
from robustrl.adversaries import TrainingContext
from robustrl.algos import make_agent
from robustrl.envs import RunningNormalizer, make_env
from robustrl.robust.ppo_adversary import PPOAdversary
from robustrl.threat import ObservationBall

ALGOS = ("sac-ppo", "pa-sac-ppo")
TIMING = {"steps_per_s", "time_s"}


def read_csv(path, drop=()):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def context(normalizer=None, seed=0):
    normalizer = normalizer if normalizer is not None else RunningNormalizer(3)
    return TrainingContext(lambda: make_env("Pendulum-v1"), normalizer, 10_000, seed)


def attached_agent(algo, eps=0.2, **overrides):
    """A fresh Pendulum agent of ``algo`` with its PPO adversary attached."""
    torch.manual_seed(0)
    config = robustrl.build_config(
        algo, "Pendulum-v1", overrides={"adversary.eps": eps, **overrides}
    )
    agent = make_agent(config, 3, 1)
    agent.attach(context())
    return agent


@pytest.mark.parametrize("algo", ALGOS)
def test_every_perturbation_stays_in_the_ball(algo):
    eps = 0.2
    agent = attached_agent(algo, eps)
    adversary = agent.adversary
    assert isinstance(adversary, PPOAdversary) and adversary.director == (algo == "pa-sac-ppo")
    ball = ObservationBall(eps)
    obs = torch.randn(512, 3) * 3
    behaviour = adversary.behaviour(obs)
    target = adversary.target(obs, agent)
    actor = adversary.actor(obs, agent)
    for mixture in (target, actor):
        assert mixture.points.shape == (1, 512, 3) and mixture.weights.tolist() == [1.0]
        assert not mixture.points.requires_grad
    for adv in (behaviour, target.points[0], actor.points[0]):
        assert adv.shape == obs.shape and ball.contains(obs, adv)
    for adv in (target.points[0], actor.points[0]):  # (E) and (I) perturb every row, and far
        assert ((adv - obs).abs().amax(-1) > 0.5 * eps).float().mean() > 0.9
    # (B) perturbs a fraction rho = 0.5 of the rows
    perturbed = (behaviour != obs).any(-1).float().mean()
    assert 0.4 < perturbed < 0.6


def test_sac_ppo_perturbation_is_eps_hardtanh():
    agent = attached_agent("sac-ppo", eps=0.25)
    obs = torch.randn(64, 3)
    u = torch.tensor([[-5.0, 0.4, 3.0]]).expand(64, 3)
    adv = agent.adversary.perturb(obs, u, agent)
    torch.testing.assert_close(adv - obs, torch.tensor([[-0.25, 0.1, 0.25]]).expand(64, 3))


def test_director_pushes_the_action_along_its_direction():
    """PA-SAC-PPO: u > 0 asks for a larger action, u < 0 for a smaller one (1-D action)."""
    agent = attached_agent("pa-sac-ppo", eps=0.3)
    obs = torch.randn(256, 3)
    with torch.no_grad():
        clean = agent.actor.mean_action(obs)
        up = agent.actor.mean_action(agent.adversary.perturb(obs, torch.ones(256, 1), agent))
        down = agent.actor.mean_action(agent.adversary.perturb(obs, -torch.ones(256, 1), agent))
    assert (up > clean).float().mean() > 0.9 and (down < clean).float().mean() > 0.9


def test_director_behaviour_is_clean_before_attach():
    config = robustrl.build_config("pa-sac-ppo", "Pendulum-v1", overrides={"adversary.eps": 0.2})
    agent = make_agent(config, 3, 1)
    obs = torch.randn(8, 3)
    assert torch.equal(agent.adversary.behaviour(obs), obs)
    agent.adversary.on_step(10_000, 20_000)  # not attached: no iteration, no error
    assert int(agent.adversary.env_steps) == 0


def victim_adversary(policy, eps):
    config = robustrl.build_config(
        "sac-ppo",
        "Pendulum-v1",
        overrides={
            "adversary.eps": eps,
            "adversary.ppo.steps_per_iteration": 1000,
            "adversary.ppo.lr": 1e-3,
            "adversary.ppo.value_lr": 1e-3,
        },
    )
    adversary = PPOAdversary(config, 3, 1)
    adversary.attach(policy.agent, context(policy.normalizer))
    return adversary


@pytest.mark.slow
def test_ppo_adversary_learns_to_hurt_the_victim(pendulum_victim):
    """Against a SAC agent that swings Pendulum up from most initial states, the untrained
    adversary (random perturbations of eps 0.3) costs some return; a dozen PPO iterations of 1000
    steps (~5 s) find perturbations that make it fail from every state (about -1200)."""
    policy = robustrl.load(pendulum_victim)
    torch.manual_seed(0)
    adversary = victim_adversary(policy, eps=0.3)
    returns = [adversary.iterate()["agent_return"] for _ in range(12)]
    first, last = sum(returns[:2]) / 2, sum(returns[-2:]) / 2
    assert last < first - 200, returns
    # the clean return on the same episodes (iterations 10 and 11 reset with the same seeds)
    clean = victim_adversary(policy, eps=0.0)
    clean.iterations.fill_(10)
    clean_return = sum(clean.iterate()["agent_return"] for _ in range(2)) / 2
    assert last < clean_return - 500, (clean_return, returns)
    assert int(adversary.env_steps) == 12_000 and int(adversary.iterations) == 12
    # learn() reports the last iteration's return and the extra env steps (no learning there)
    metrics = adversary.learn({}, policy.agent)
    assert metrics.dtype == torch.float32
    torch.testing.assert_close(metrics, torch.tensor([returns[-1], 12_000.0]))


def tiny_ppo_config(algo, **overrides):
    fields = dict(
        steps=1500,
        learning_starts=500,
        eval_every=0,
        eval_episodes=2,
        checkpoint_every=0,
        log_every=100,
        compile=False,
    )
    fields.update({k: v for k, v in overrides.items() if "." not in k})
    dotted = {
        "adversary.eps": 0.2,
        "sac.hidden_sizes": [32, 32],
        "sac.batch_size": 32,
        "adversary.ppo.steps_per_iteration": 128,
        "adversary.ppo.hidden_sizes": [32, 32],
        "adversary.ppo_iterations": 5,
    }
    dotted.update({k: v for k, v in overrides.items() if "." in k})
    return robustrl.build_config(algo, "Pendulum-v1", overrides=dotted, **fields)


def env_steps_column(run_dir):
    return {
        int(r["step"]): float(r["adversary_env_steps"])
        for r in read_csv(run_dir / "metrics.csv")
        if r["adversary_env_steps"]
    }


@pytest.mark.parametrize("algo", ALGOS)
def test_training_logs_the_extra_env_steps(tmp_path, algo):
    """1500 steps, 5 iterations planned: interval 300, iterations before steps 600, 900, 1200
    (learning starts at 500), 128 extra env steps each."""
    run_dir = robustrl.train(tiny_ppo_config(algo), out=tmp_path, name=algo, progress=False)
    iterations = [600, 900, 1200]
    column = env_steps_column(run_dir)
    assert sorted(column) == list(range(500, 1501, 100))
    for step, value in column.items():  # every update of a logged window saw the same count
        assert value == 128 * sum(1 for s in iterations if s < step), (step, column)
    # adversary_return is the agent's return in the last iteration's episodes: 0 before the
    # first iteration, then a Pendulum return (always < 0) that changes with each iteration
    returns_by_count: dict[float, set[float]] = {}
    for r in read_csv(run_dir / "metrics.csv"):
        if r["adversary_return"]:
            count = float(r["adversary_env_steps"])
            returns_by_count.setdefault(count, set()).add(float(r["adversary_return"]))
    assert sorted(returns_by_count) == [0.0, 128.0, 256.0, 384.0]
    assert all(len(values) == 1 for values in returns_by_count.values())
    returns = [values.pop() for _, values in sorted(returns_by_count.items())]
    assert returns[0] == 0.0 and all(r < 0 for r in returns[1:]) and len(set(returns)) == 4
    model = checkpoint.read_tensors(checkpoint.latest(run_dir) / "model.safetensors")
    assert int(model["adversary.env_steps"]) == 384 and int(model["adversary.iterations"]) == 3
    assert "adversary.ppo.policy.log_std" in model and "adversary.ppo.value.0.weight" in model
    optim = checkpoint.read_tensors(checkpoint.latest(run_dir) / "optim.safetensors")
    for name in ("adversary.policy", "adversary.value"):
        assert any(k.startswith(f"{name}.") and k.endswith(".exp_avg") for k in optim), name


def test_resume_reproduces_the_uninterrupted_run(full_and_cut):
    """Interrupted at step 400 (an episode boundary) and resumed with its replay buffer, a run
    continues exactly: same metrics (adversary's included), same final weights and counters.
    Interval 100: iterations before steps 200, ..., 700; the one before 400 runs after resume."""
    config = tiny_ppo_config(
        "sac-ppo",
        steps=800,
        learning_starts=200,
        checkpoint_every=400,
        **{"adversary.ppo_iterations": 8, "adversary.ppo.steps_per_iteration": 64},
    )
    full, cut = full_and_cut(config, 400)
    at_cut = checkpoint.read_tensors(checkpoint.latest(cut) / "model.safetensors")
    assert int(at_cut["adversary.env_steps"]) == 64 * 2  # before steps 200 and 300
    robustrl.resume(cut, save_buffer=True, progress=False)
    assert read_csv(cut / "metrics.csv", TIMING) == read_csv(full / "metrics.csv", TIMING)
    a = checkpoint.read_tensors(checkpoint.latest(full) / "model.safetensors")
    b = checkpoint.read_tensors(checkpoint.latest(cut) / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert int(b["adversary.env_steps"]) == 64 * 6  # before steps 200, 300, ..., 700


def test_resume_to_more_steps_continues_the_adversary(tmp_path):
    """PA-SAC-PPO trained to 600 steps (interval 200: iterations before 200 and 400), resumed
    without its buffer to 1000 steps (interval 333 from then on: before 666 and 999)."""
    config = tiny_ppo_config(
        "pa-sac-ppo",
        steps=600,
        learning_starts=200,
        checkpoint_every=300,
        **{"adversary.ppo_iterations": 3, "adversary.ppo.steps_per_iteration": 64},
    )
    run_dir = robustrl.train(config, out=tmp_path, name="r", progress=False)
    before = checkpoint.read_tensors(checkpoint.latest(run_dir) / "model.safetensors")
    assert int(before["adversary.env_steps"]) == 64 * 2  # before steps 200 and 400
    robustrl.resume(run_dir, steps=1000, progress=False)
    state = json.loads((checkpoint.latest(run_dir) / "state.json").read_text())
    after = checkpoint.read_tensors(checkpoint.latest(run_dir) / "model.safetensors")
    assert state["step"] == 1000
    assert int(after["adversary.env_steps"]) == 128 + 2 * 64
    assert int(after["adversary.iterations"]) == 4 and int(after["adversary.last_step"]) == 999
    assert not torch.equal(
        before["adversary.ppo.policy.log_std"], after["adversary.ppo.policy.log_std"]
    )
    column = env_steps_column(run_dir)
    # windows of 100 steps; the iteration before 666 is mid-window, the one before 999 in the last
    assert column[600] == 128.0 and column[800] == column[900] == 192.0
    assert column[1000] == pytest.approx((99 * 192 + 256) / 100)
