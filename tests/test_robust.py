"""The math of the robust SAC methods (ALGORITHMS.md §3): VALT-EPS, VALT-SOFT, the SA regulariser."""

import copy
import json

import numpy as np
import pytest
import torch

import robustrl
from robustrl.adversaries import Adversary, Mixture, linear_ramp
from robustrl.algos import make_agent
from robustrl.algos.sac import SAC
from robustrl.config import SACConfig
from robustrl.errors import ConfigError
from robustrl.robust import EpsWorstAdversary, SARegulariser, SoftWorstAdversary
from robustrl.robust.eps_worst import pgd_min_q
from robustrl.robust.sa_regulariser import gaussian_divergence

OBS, ACT, B = 4, 2, 64


def near_deterministic_sac(adversary=None) -> SAC:
    """A SAC whose policy samples are its mean (std e^-20) and whose temperature is ~0, so a soft
    value is a deterministic function of the observations."""
    torch.manual_seed(0)
    config = SACConfig(hidden_sizes=[32, 32], log_std_min=-20.0, log_std_max=-20.0, init_alpha=1e-9)
    return SAC(OBS, ACT, config, adversary=adversary)


def random_batch():
    return {
        "obs": torch.randn(B, OBS),
        "action": torch.rand(B, ACT) * 2 - 1,
        "reward": torch.randn(B),
        "next_obs": torch.randn(B, OBS),
        "terminated": torch.zeros(B),
        "weight": torch.ones(B),
    }


@pytest.fixture(scope="module")
def victim_batch(pendulum_victim):
    """The Pendulum victim's agent and 512 normalised observations from its own rollouts."""
    policy = robustrl.load(pendulum_victim)
    env = robustrl.envs.make_env("Pendulum-v1", seed=5)
    raw, obs = [], env.reset(seed=5)[0]
    for _ in range(512):
        raw.append(obs)
        obs, _, terminated, truncated, _ = env.step(policy.act(obs))
        if terminated or truncated:
            obs = env.reset()[0]
    batch = torch.from_numpy(policy.normalizer.normalize(np.array(raw, np.float32)))
    return policy.agent, batch


# ---------------------------------------------------------------- VALT-EPS


@pytest.mark.parametrize("kappa", [0.0, 0.25, 1.0])
def test_valt_eps_target_is_the_kappa_mixture(kappa):
    """E V = kappa V(õ*) + (1 - kappa) V(õ_unif); kappa = 0 is exactly the uniform-noise target
    (the PGD point, of weight 0, is not even computed), kappa = 1 the PGD point's."""
    adversary = EpsWorstAdversary(eps=0.3, ramp_end=100)
    agent = near_deterministic_sac(adversary)
    adversary.on_step(int(kappa * 100), 1000)
    assert adversary.kappa.item() == kappa
    obs = torch.randn(B, OBS)
    target, actor = adversary.observations(obs, torch.randn(B, OBS), agent)
    for mixture in (target, actor):
        weights = [w for w in (kappa, 1.0 - kappa) if w > 0]
        assert mixture.points.shape == (len(weights), B, OBS)
        assert mixture.weights.tolist() == weights
    mixture = adversary.target(obs, agent)
    values = [agent.soft_value(obs, p) for p in mixture.points]
    expected = sum(w * v for w, v in zip(mixture.weights, values))
    torch.testing.assert_close(agent.expected_soft_value(obs, mixture), expected)
    offsets = (mixture.points - obs).abs()
    assert offsets.max() <= 0.3 + 1e-6
    if kappa < 1.0:  # the uniform sample really spreads over the ball
        assert offsets[-1].mean() > 0.1
    if kappa > 0.0:  # the PGD point lowers the critic below the uniform one (on average)

        def q_mean(points):
            with torch.no_grad():
                return agent.critic(obs, agent.actor.mean_action(points)).mean().item()

        assert q_mean(mixture.points[0]) < q_mean(obs + (2 * torch.rand_like(obs) - 1) * 0.3)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_pgd_point_lowers_the_critic_and_stays_in_the_ball(victim_batch, precision):
    """Also with the network passes in bfloat16 (``adversary.inner_precision``)."""
    agent, obs = victim_batch
    eps = 0.2
    torch.manual_seed(1)
    worst = pgd_min_q(agent, obs, eps, steps=2, precision=precision)
    assert worst.dtype == torch.float32
    assert (worst - obs).abs().max() <= eps + 1e-6

    def q_mean(policy_obs):
        with torch.no_grad():
            return agent.critic(obs, agent.actor.mean_action(policy_obs)).mean(0)

    uniform = obs + (2 * torch.rand_like(obs) - 1) * eps
    clean, noisy, attacked = q_mean(obs), q_mean(uniform), q_mean(worst)
    assert attacked.mean() < noisy.mean() < clean.mean()
    assert (attacked < clean).float().mean() > 0.9


def test_valt_eps_behaviour_noise_ratio():
    adversary = EpsWorstAdversary(eps=0.5, behaviour_ratio=0.3)
    obs = torch.zeros(4000, OBS)
    seen = adversary.behaviour(obs)
    perturbed = (seen != 0).any(-1).float().mean().item()
    assert perturbed == pytest.approx(0.3, abs=0.03)
    assert seen.abs().max() <= 0.5


def test_kappa_schedule():
    adversary = EpsWorstAdversary(eps=0.1, ramp_end=400)
    for step, kappa in [(0, 0.0), (100, 0.25), (400, 1.0), (10_000, 1.0)]:
        adversary.on_step(step, 10_000)
        assert adversary.kappa.item() == pytest.approx(kappa)
    assert linear_ramp(50, 100, 200) == 0.0 and linear_ramp(150, 100, 200) == 0.5


# ---------------------------------------------------------------- VALT-SOFT


def online_value(agent, obs, policy_obs, seed=123):
    """``E_{a~pi(.|õ)}[min_i Q_i(o, a) - alpha log pi(a|õ)]`` with the online critics (B,)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        action, log_prob = agent.actor.sample(policy_obs)
        q = agent.critic(obs, action).min(0).values
        return q - agent.log_alpha.exp() * log_prob


@pytest.mark.parametrize("in_actor", [True, False])
def test_soft_adversary_learns_to_lower_the_agents_value(victim_batch, in_actor):
    """On a fixed agent (its optimisers' learning rates at 0), training nu_psi through SAC's
    update lowers E_{õ~nu} V(o, õ): from the value under a fresh (near-uniform) adversary to below
    the value at VALT-EPS's 2-step PGD point. in_actor=True: nu_psi's gradients come from SAC's
    own backward pass (gradient reversal); False: from its separate pass."""
    victim, obs = victim_batch
    agent = copy.deepcopy(victim)
    for optimizer in agent.optimizers().values():
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    torch.manual_seed(0)
    adversary = SoftWorstAdversary(
        OBS - 1, eps=0.3, hidden_sizes=[64, 64], lr=1e-3, temperature=0.1, in_actor=in_actor
    )
    agent.adversary = adversary
    batch = {
        "obs": obs,
        "action": torch.rand(len(obs), 1) * 2 - 1,
        "reward": torch.zeros(len(obs)),
        "next_obs": obs,
        "terminated": torch.zeros(len(obs)),
        "weight": torch.ones(len(obs)),
    }

    def value():
        torch.manual_seed(7)
        with torch.no_grad():
            return online_value(agent, obs, adversary.sample(obs)[0]).mean().item()

    before = value()
    torch.manual_seed(1)
    pgd = online_value(agent, obs, pgd_min_q(agent, obs, 0.3, steps=2)).mean().item()
    actor_before = [p.clone() for p in agent.actor.parameters()]
    critic_before = [p.clone() for p in agent.critic.parameters()]
    for _ in range(300):
        agent.update(batch)
    after = value()
    assert after < before - 1.0 and after < pgd, (before, pgd, after)
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    perturbation = adversary.sample(obs)[0] - obs
    assert perturbation.abs().max() <= 0.3 + 1e-6


def test_gradient_reversal_gives_the_adversary_the_gradient_of_its_own_objective():
    """The fused path (SAC's actor loss through a gradient reversal + ``loss``) and the separate
    pass give nu_psi the same gradient of L_nu = E[V(o, õ) + lambda log nu]."""
    adversary = SoftWorstAdversary(OBS, eps=0.2, hidden_sizes=[16], temperature=0.7)
    agent = near_deterministic_sac(adversary)
    with torch.no_grad():
        agent.log_alpha.fill_(np.log(0.3))
    obs = torch.randn(B, OBS)
    params = list(adversary.parameters())
    torch.manual_seed(3)
    seen = adversary.actor(obs, agent)
    action, log_prob = agent.actor.sample(seen.flat())
    q = agent.critic(seen.tile(obs), action, detach=True).min(0).values
    actor_loss = (agent.log_alpha.exp().detach() * log_prob - q).mean()
    fused = torch.autograd.grad(actor_loss + adversary.loss(), params)
    torch.manual_seed(3)
    adversary.gradient_pass(obs, agent)
    for a, b in zip(fused, params):
        torch.testing.assert_close(a, b.grad)
    assert any(g.abs().sum() > 0 for g in fused)


def test_soft_adversary_resets_and_anneals():
    adversary = SoftWorstAdversary(
        OBS,
        eps=0.1,
        hidden_sizes=[16],
        temperature=4.0,
        temperature_start=1000.0,
        ramp_end=100,
        reset_every=50,
    )
    agent = near_deterministic_sac(adversary)
    adversary.on_step(0, 200)
    assert adversary.temperature.item() == pytest.approx(1000.0)
    adversary.on_step(50, 200)  # geometric midpoint of 1000 -> 4 at half the ramp
    assert adversary.temperature.item() == pytest.approx((1000.0 * 4.0) ** 0.5, rel=1e-5)
    adversary.on_step(100, 200)
    assert adversary.temperature.item() == pytest.approx(4.0)
    agent.update(random_batch())
    weights = [p.clone() for p in adversary.parameters()]
    assert adversary.optim.state
    adversary.on_step(149, 200)  # not a multiple of reset_every: unchanged
    assert all(torch.equal(a, b) for a, b in zip(weights, adversary.parameters()))
    adversary.on_step(150, 200)
    assert not any(torch.equal(a, b) for a, b in zip(weights, adversary.parameters()))
    assert not adversary.optim.state


def test_soft_target_kl_bonus():
    """With kl_in_target the target carries lambda * (log nu(u) + D log 2) per sample."""
    adversary = SoftWorstAdversary(
        OBS, eps=0.2, hidden_sizes=[16], temperature=3.0, kl_in_target=True
    )
    agent = near_deterministic_sac(adversary)
    obs = torch.randn(B, OBS)
    torch.manual_seed(4)
    mixture = adversary.target(obs, agent)
    torch.manual_seed(4)
    _, log_prob = adversary.net.sample(obs)
    torch.testing.assert_close(mixture.bonus, 3.0 * (log_prob + OBS * np.log(2.0)))
    assert adversary.actor(obs, agent).bonus is None


# ---------------------------------------------------------------- SA regulariser


def test_sa_regulariser_is_zero_at_eps_zero_and_grows_with_eps(victim_batch):
    agent, obs = victim_batch
    values = []
    for eps in (0.0, 0.05, 0.2):
        regulariser = SARegulariser(eps=eps, coef=1.0, sgld_steps=2)
        values.append(regulariser(obs, agent).item())
    assert values[0] == 0.0
    assert 0.0 < values[1] < values[2]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_sgld_finds_a_larger_divergence_than_random_points(victim_batch, precision):
    agent, obs = victim_batch
    eps = torch.tensor(0.2)
    clean = tuple(t.detach() for t in agent.actor.gaussian(obs))
    from robustrl.robust.sa_regulariser import sgld_max_divergence

    torch.manual_seed(0)
    worst = sgld_max_divergence(agent.actor, obs, clean, eps, steps=5, precision=precision)
    assert (worst - obs).abs().max() <= 0.2 + 1e-6
    uniform = obs + (2 * torch.rand_like(obs) - 1) * 0.2
    with torch.no_grad():
        found = gaussian_divergence(clean, agent.actor.gaussian(worst)).mean()
        random = gaussian_divergence(clean, agent.actor.gaussian(uniform)).mean()
    assert found > 2 * random


def test_gaussian_divergences():
    mu0, log_s0 = torch.zeros(1, 2), torch.zeros(1, 2)
    mu1, log_s1 = torch.tensor([[1.0, 0.0]]), torch.log(torch.tensor([[1.0, 2.0]]))
    kl = gaussian_divergence((mu0, log_s0), (mu1, log_s1)).item()
    # closed form per dimension: log(s1/s0) + (s0^2 + (mu0-mu1)^2) / (2 s1^2) - 1/2
    assert kl == pytest.approx(0.5 + (np.log(2) + 1 / 8 - 0.5))
    mean = gaussian_divergence((mu0, log_s0), (mu1, log_s1), kind="mean").item()
    assert mean == pytest.approx(1.0)


def test_regulariser_schedule_and_gradient_only_to_the_actor():
    regulariser = SARegulariser(eps=0.3, coef=5.0, sgld_steps=2, ramp_start=100, ramp_end=300)
    agent = near_deterministic_sac()
    agent.regulariser = regulariser
    for step, eps in [(0, 0.0), (100, 0.0), (200, 0.15), (300, 0.3)]:
        regulariser.on_step(step, 1000)
        assert regulariser.eps.item() == pytest.approx(eps)
    loss = regulariser(torch.randn(B, OBS), agent)
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


# ---------------------------------------------------------------- wiring


class Spy(Adversary):
    def __init__(self, **switches):
        super().__init__(**switches)
        self.calls = []

    def target(self, next_obs, agent):
        self.calls.append("target")
        return Mixture.point(next_obs + 1.0)

    def actor(self, obs, agent):
        self.calls.append("actor")
        return Mixture.point(obs + 1.0)


@pytest.mark.parametrize("in_target, in_actor", [(True, True), (False, True), (True, False)])
def test_ablation_switches_remove_the_adversary_from_target_or_actor(in_target, in_actor):
    spy = Spy(in_target=in_target, in_actor=in_actor)
    agent = near_deterministic_sac(spy)
    agent.update(random_batch())
    assert spy.calls == [name for name, on in (("target", in_target), ("actor", in_actor)) if on]


@pytest.mark.parametrize(
    "algo, adversary, regulariser, sgld",
    [
        ("robust-sac", Adversary, SARegulariser, 5),
        ("valt-eps-sac", EpsWorstAdversary, SARegulariser, 2),
        ("valt-soft-sac", SoftWorstAdversary, SARegulariser, 2),
    ],
)
def test_algo_names_build_sac_plus_parts(algo, adversary, regulariser, sgld):
    config = robustrl.build_config(algo, "Hopper-v5")
    assert config.adversary.eps == 0.075  # the paper's Hopper budget
    agent = make_agent(config, 11, 3)
    assert type(agent) is SAC and type(agent.adversary) is adversary
    assert type(agent.regulariser) is regulariser and agent.regulariser.sgld_steps == sgld
    off = robustrl.build_config(algo, "Hopper-v5", overrides={"regulariser.enabled": False})
    assert not make_agent(off, 11, 3).regulariser.active


def test_robust_config_errors():
    with pytest.raises(ConfigError, match="adversary.eps"):
        robustrl.build_config("valt-eps-sac", "Pendulum-v1")
    with pytest.raises(ConfigError, match="adversary.eps must be"):
        robustrl.build_config("valt-eps-sac", "Hopper-v5", overrides={"eps": -0.1})
    with pytest.raises(ConfigError, match="behaviour_ratio"):
        robustrl.build_config(
            "valt-soft-sac", "Hopper-v5", overrides={"adversary.behaviour_ratio": 2}
        )
    with pytest.raises(ConfigError, match="inner_precision"):
        robustrl.build_config(
            "valt-eps-sac", "Hopper-v5", overrides={"adversary.inner_precision": "fp8"}
        )
    with pytest.raises(ConfigError, match="divergence"):
        robustrl.build_config("robust-sac", "Hopper-v5", overrides={"regulariser.divergence": "l2"})
    assert robustrl.build_config("sac", "Pendulum-v1").adversary.eps is None  # SAC needs none


# ---------------------------------------------------------------- resume


RESUME_SETTINGS = {
    # the default schedules, fractions of the 800-step run: eps_reg ramps 80 -> 640, kappa and
    # lambda reach their targets at 640
    "robust-sac": {},
    "valt-eps-sac": {},
    # lambda annealed 50 -> 2; the adversary re-initialised every 300 steps (at 300, 600: one
    # reset before the cut at 400, one after it)
    "valt-soft-sac": {
        "adversary.temperature_start": 50.0,
        "adversary.reset_every": 300,
        "adversary.hidden_sizes": [16, 16],
    },
}


@pytest.mark.parametrize("extend", [False, True], ids=["same-steps", "extended"])
@pytest.mark.parametrize("algo", list(RESUME_SETTINGS))
def test_interrupted_robust_run_resumes_exactly(algo, extend, full_and_cut):
    """A robust run cut at step 400 (an episode boundary) and resumed with its buffer ends with
    the same metrics (adversary and regulariser terms included), weights, adversary weights
    and optimiser states as the uninterrupted run: schedules, resets and adversary state
    continue exactly. Resumed with ``--steps 1200`` instead, it is the same run up to step 800:
    schedules were resolved to steps when the run started and are not stretched."""
    from test_training import TIMING, read_csv

    from robustrl import checkpoint

    config = robustrl.build_config(
        algo=algo,
        env="Pendulum-v1",
        steps=800,
        learning_starts=200,
        eval_every=400,
        eval_episodes=1,
        checkpoint_every=400,
        log_every=100,
        compile=False,
        overrides={
            "sac.hidden_sizes": [16, 16],
            "sac.batch_size": 32,
            "adversary.eps": 0.1,
            **RESUME_SETTINGS[algo],
        },
    )
    full, cut = full_and_cut(config, 400)
    robustrl.resume(cut, steps=1200 if extend else None, save_buffer=True, progress=False)
    rows = read_csv(cut / "metrics.csv", TIMING)
    assert [int(r["step"]) for r in rows][-1] == (1200 if extend else 800)
    rows = [r for r in rows if int(r["step"]) <= 800]
    assert rows == read_csv(full / "metrics.csv", TIMING)
    assert float(rows[-1]["reg_loss"]) > 0  # the regulariser was active at the end
    resolved = json.loads((cut / "config.json").read_text())["config"]
    assert resolved["regulariser"]["ramp_end"] == 640 and resolved["adversary"]["ramp_end"] == 640
    assert resolved["replay"]["importance_steps"] == 800
    at_800 = cut / "checkpoints" / "step_000000800"
    for name in ("model.safetensors", "optim.safetensors"):
        a = checkpoint.read_tensors(checkpoint.latest(full) / name)
        b = checkpoint.read_tensors(at_800 / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    if algo == "valt-eps-sac":
        assert float(rows[-1]["adversary_kappa"]) == 1.0
    if algo == "valt-soft-sac":
        temperatures = [
            float(r["adversary_temperature"]) for r in rows if r["adversary_temperature"]
        ]
        assert temperatures[0] > 10 and temperatures[-1] == pytest.approx(2.0)
