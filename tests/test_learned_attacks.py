"""Learned attacks (SA-RL, PA-AD): the attacker's environment, the ball, learning beats random,
PA-AD's FGSM actor, the budget rule, caching, and fit-before-perturb.

A small SAC victim is trained once on Pendulum-v1 (solved is about -150, random about -1200).
"""

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

import robustrl.attacks.learned as learned
from robustrl.attacks import ATTACKS, make_attack
from robustrl.attacks.base import FitContext
from robustrl.envs import make_env
from robustrl.errors import ConfigError
from robustrl.evaluation import rollout
from robustrl.nets import mlp
from robustrl.threat import ObservationBall
from robustrl.views import PolicyView, load_view

ENV = "Pendulum-v1"
EPS = 0.4  # random noise costs this victim ~400 return; a learned attacker makes it fall
BUDGET = 3000  # env steps: 15 Pendulum episodes
TINY = 300  # a budget that only exercises the machinery (caching, shapes)
EVAL_SEED, EPISODES = 100, 10


def pendulum():
    return make_env(ENV)


def context(budget, cache_dir=None):
    return FitContext(make_env=pendulum, budget=budget, cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: on a busy machine two torch threads make a rollout ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def victim(shipped_victim):
    """The fixed-weight undefended SAC agent on Pendulum-v1 (``tests/data/victims``, 2x64)."""
    view = load_view(shipped_victim("pendulum_sac_64"))
    clean = rollout(view, pendulum, EPISODES, seed=EVAL_SEED)
    assert clean.mean > -400, f"the test victim does not solve the task: {clean.returns}"
    return SimpleNamespace(view=view, clean=clean)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("attack_cache")


@pytest.fixture(scope="module")
def sa_rl(victim, cache):
    """SA-RL trained with the small budget at EPS, cached in the module's cache folder."""
    attack = make_attack("sa-rl", victim.view, ObservationBall(EPS))
    start = time.perf_counter()
    info = attack.fit(context(BUDGET, cache))
    return SimpleNamespace(attack=attack, info=info, seconds=time.perf_counter() - start)


@pytest.fixture(scope="module")
def pa_ad(victim):
    """PA-AD trained with the small budget at EPS, without a cache folder."""
    attack = make_attack("pa-ad", victim.view, ObservationBall(EPS))
    info = attack.fit(context(BUDGET))
    assert info["run_dir"] is None and not info["cached"]
    return SimpleNamespace(attack=attack, info=info)


def standard_error(result):
    return float(np.std(result.returns, ddof=1) / np.sqrt(len(result.returns)))


# ---------------------------------------------------------------- registry and settings


def test_registered_as_learned_attacks_with_settings(victim):
    assert ATTACKS["sa-rl"] is learned.SARLAttack and ATTACKS["pa-ad"] is learned.PAADAttack
    ball = ObservationBall(EPS)
    sa = make_attack(
        "sa-rl", victim.view, ball, {"hidden_sizes": [32, 32], "overrides": {"sac.tau": 0.01}}
    )
    pa = make_attack("pa-ad", victim.view, ball, {"start_fraction": 0.2})
    assert sa.learned and pa.learned
    config = sa.train_config(1000)
    assert config.steps == 1000 and config.learning_starts == 250  # capped at budget // 4
    assert config.sac.hidden_sizes == [32, 32] and config.sac.tau == 0.01
    assert config.sac.actor_lr == config.sac.critic_lr == config.sac.alpha_lr == 1e-3
    assert config.sac.target_entropy == -3.0  # -dim(o): SA-RL's action is an observation
    assert config.normalizer.enabled and config.eval_every == 0
    assert pa.train_config(1000).sac.target_entropy == -1.0  # -act_dim: PA-AD's director
    with pytest.raises(ConfigError, match="steps"):
        make_attack("sa-rl", victim.view, ball, {"overrides": {"steps": 5}})
    with pytest.raises(ConfigError, match="no_such_key"):
        make_attack("sa-rl", victim.view, ball, {"overrides": {"no_such_key": 1}}).train_config(500)
    with pytest.raises(ConfigError, match="below the attacker's batch size"):
        make_attack("sa-rl", victim.view, ball).train_config(10)
    with pytest.raises(ConfigError, match="seeds"):
        make_attack("sa-rl", victim.view, ball, {"seeds": 0})


def test_variants_one_per_attacker_seed(victim):
    attack = make_attack("sa-rl", victim.view, ObservationBall(EPS), {"seeds": 3}, seed=5)
    variants = attack.variants()
    assert [v.label for v in variants] == ["sa-rl[seed=5]", "sa-rl[seed=6]", "sa-rl[seed=7]"]
    assert variants[0] is attack and len({v.cache_name() for v in variants}) == 3
    assert make_attack("pa-ad", victim.view, ObservationBall(EPS)).variants()[0].label == (
        "pa-ad[seed=0]"
    )


# ---------------------------------------------------------------- (1) the attacker's environment


@pytest.mark.parametrize("env_class", [learned.AttackerEnv, learned.DirectorEnv])
def test_attacker_env_negates_the_env_reward_and_feeds_the_victim_the_perturbation(
    victim, env_class
):
    view, ball = victim.view, ObservationBall(EPS)
    env = env_class(pendulum(), view, ball)
    plain = pendulum()
    k = 3 if env_class is learned.AttackerEnv else 1
    assert env.observation_space.shape == (3,) and env.action_space.shape == (k,)
    assert np.all(env.action_space.low == -1.0) and np.all(env.action_space.high == 1.0)
    obs, _ = env.reset(seed=7)
    raw, _ = plain.reset(seed=7)
    assert np.array_equal(obs, view.normalize(raw[None])[0])
    rng = np.random.default_rng(0)
    changed, episode_return, ended = 0, 0.0, 0
    for _ in range(230):  # crosses the 200-step episode end
        u = rng.uniform(-1.0, 1.0, k).astype(np.float32)
        o = torch.as_tensor(obs[None])
        obs, reward, terminated, truncated, info = env.step(u)
        adv = torch.as_tensor(info["perturbed_obs"][None])
        assert ball.contains(o, adv)
        if env_class is learned.AttackerEnv:  # õ = project(o + eps * u)
            assert torch.equal(adv, ball.project(o, o + EPS * torch.as_tensor(u[None])))
        victim_action = view.act(adv).numpy()[0]
        assert np.array_equal(info["victim_action"], victim_action)  # the victim saw õ
        changed += not np.array_equal(view.act(o).numpy()[0], victim_action)
        raw, env_reward, plain_terminated, plain_truncated, _ = plain.step(
            view.to_env(victim_action[None])[0]
        )
        assert reward == -float(env_reward)  # exactly the negated reward
        assert (terminated, truncated) == (plain_terminated, plain_truncated)
        assert np.array_equal(obs, view.normalize(raw[None])[0])
        episode_return += reward
        if terminated or truncated:
            ended += 1
            assert env.episode_returns == [pytest.approx(episode_return)]
            obs, _ = env.reset(seed=8)
            raw, _ = plain.reset(seed=8)
            episode_return = 0.0
    assert ended == 1
    assert changed > 20  # the perturbation matters: the victim would have acted otherwise on o


# ---------------------------------------------------------------- (2) perturbations stay in the ball


def with_ball(fitted, eps):
    """The fitted attacker's networks under another radius (no retraining)."""
    attack = type(fitted)(fitted.view, ObservationBall(eps), fitted.config, seed=1)
    attack.attacker, attack.fitted = fitted.attacker, True
    return attack


@pytest.mark.parametrize("which", ["sa-rl", "pa-ad"])
def test_perturbations_stay_in_the_ball(victim, sa_rl, pa_ad, which):
    fitted = (sa_rl if which == "sa-rl" else pa_ad).attack
    g = torch.Generator().manual_seed(0)
    obs = torch.cat([3.0 * torch.randn(500, 3, generator=g), torch.full((4, 3), 10.0)])
    obs[-2:] = -10.0
    for eps in (0.05, EPS, 2.0, (0.1, 0.5, 0.0)):
        attack = with_ball(fitted, eps)
        adv = attack.perturb(obs)
        assert attack.ball.contains(obs, adv), eps
        assert adv.shape == obs.shape and (adv - obs).abs().max() > 0
        if isinstance(eps, tuple):
            assert torch.equal(adv[:, 2], obs[:, 2])  # zero radius in that dimension
    zero = make_attack(which, victim.view, ObservationBall(0.0))
    info = zero.fit(context(BUDGET))  # nothing to learn: no training
    assert info["training_steps"] == 0
    assert torch.equal(zero.perturb(obs), obs)


def test_sa_rl_perturbation_is_eps_times_the_attackers_mean_action(sa_rl):
    attack = sa_rl.attack
    obs = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    u = attack.attacker_action(obs)
    assert u.abs().max() <= 1.0 and u.abs().max() > 0.5
    assert torch.allclose(attack.perturb(obs), obs + EPS * u, atol=1e-6)
    assert torch.equal(attack.perturb(obs), attack.perturb(obs))  # deterministic at test time


# ---------------------------------------------------------------- (3) learning beats random


@pytest.fixture(scope="module")
def random_noise(victim):
    ball = ObservationBall(EPS)
    random = make_attack("random", victim.view, ball, seed=0)
    return rollout(victim.view, pendulum, EPISODES, random.perturb, ball, seed=EVAL_SEED)


@pytest.mark.parametrize("which", ["sa-rl", "pa-ad"])
def test_a_learned_attacker_with_a_small_budget_beats_random(
    victim, sa_rl, pa_ad, random_noise, which, capsys
):
    fitted = sa_rl if which == "sa-rl" else pa_ad
    info, ball = fitted.info, ObservationBall(EPS)
    assert info["training_steps"] == BUDGET and not info["cached"] and info["episodes"] == 15
    assert info["final_episode_return"] == -info["victim_final_return"]
    attacked = rollout(victim.view, pendulum, EPISODES, fitted.attack.perturb, ball, seed=EVAL_SEED)
    noise = random_noise
    with capsys.disabled():
        print(
            f"\n[eps={EPS}, budget={BUDGET}] clean {victim.clean.mean:.0f}, "
            f"random {noise.mean:.0f} +- {standard_error(noise):.0f}, "
            f"{which} {attacked.mean:.0f} +- {standard_error(attacked):.0f} (mean +- s.e. over "
            f"{EPISODES} episodes); last training episode {info['victim_final_return']:.0f}"
        )
    margin = 4.0 * np.hypot(standard_error(noise), standard_error(attacked))
    assert attacked.mean < noise.mean - max(margin, 150.0), (noise.returns, attacked.returns)
    assert attacked.mean < victim.clean.mean - 300.0


# ---------------------------------------------------------------- (4) PA-AD's FGSM actor


class RandomMLPView(PolicyView):
    """A synthetic victim with a multi-dimensional action: tanh of a random MLP."""

    obs_dim, act_dim, env_id, kind = 8, 4, "none", "test mlp"
    action_low, action_high = -np.ones(4), np.ones(4)

    def __init__(self):
        torch.manual_seed(3)
        self.net = mlp(self.obs_dim, [32, 32], self.act_dim).requires_grad_(False)

    def normalize(self, raw_obs):
        return np.asarray(raw_obs, np.float32)

    def mean_action(self, obs):
        return torch.tanh(self.net(obs))

    def distribution(self, obs):
        return Normal(self.net(obs), torch.ones(obs.shape[0], self.act_dim))

    def act(self, obs, deterministic=True):
        with torch.no_grad():
            return self.mean_action(obs)


def direction_cosines(view, ball, obs, direction, generator, mirror=True):
    """Mean cosine between the victim's action change and ``direction``: FGSM actor, noise."""
    clean = view.mean_action(obs)
    fgsm = learned.fgsm_actor(view, ball, obs, direction, 0.1, generator, mirror)
    noise = ball.sample(obs, generator)
    assert ball.contains(obs, fgsm)
    return [
        F.cosine_similarity(view.mean_action(adv) - clean, direction, dim=-1).mean().item()
        for adv in (fgsm, noise)
    ]


@pytest.mark.parametrize("mirror", [True, False])
def test_fgsm_actor_moves_a_multidimensional_action_towards_the_direction(mirror):
    g = torch.Generator().manual_seed(0)
    view = RandomMLPView()
    obs = torch.randn(512, view.obs_dim, generator=g)
    direction = learned.unit_direction(torch.randn(512, view.act_dim, generator=g))
    fgsm, noise = direction_cosines(view, ObservationBall(0.1), obs, direction, g, mirror)
    assert fgsm > 0.5 and fgsm > noise + 0.4 and abs(noise) < 0.15, (fgsm, noise)


def test_fgsm_actor_with_one_action_dimension_needs_the_mirror(victim):
    """In 1-D the cosine is a sign with zero gradient: the plain step ignores the direction."""
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(512, 3, generator=g)
    direction = torch.where(torch.rand(512, 1, generator=g) < 0.5, -1.0, 1.0)
    ball = ObservationBall(EPS)
    fgsm, noise = direction_cosines(victim.view, ball, obs, direction, g)
    assert fgsm > 0.7 and fgsm > noise + 0.5, (fgsm, noise)
    plain, _ = direction_cosines(victim.view, ball, obs, direction, g, mirror=False)
    assert abs(plain) < 0.2, plain


def test_unit_direction_guards_zero():
    d = learned.unit_direction(torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-9, 0.0]]))
    assert torch.allclose(d, torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, 0.0]]))


# ---------------------------------------------------------------- (5) budget and caching


@pytest.mark.parametrize("name", ["sa-rl", "pa-ad"])
def test_a_learned_attack_needs_a_budget(victim, name):
    attack = make_attack(name, victim.view, ObservationBall(EPS))
    with pytest.raises(ConfigError) as err:
        attack.fit(context(None))
    assert str(err.value) == (
        f"attack {name!r} is learned: give a training budget in environment steps, "
        "e.g. --budget 50000"
    )
    for bad in (0, -5, 2.5):
        with pytest.raises(ConfigError, match="budget"):
            attack.fit(context(bad))


def test_second_fit_reuses_the_cached_attacker(victim, sa_rl, cache):
    again = make_attack("sa-rl", victim.view, ObservationBall(EPS))
    start = time.perf_counter()
    info = again.fit(context(BUDGET, cache))
    seconds = time.perf_counter() - start
    assert info["cached"] and info["training_steps"] == BUDGET
    assert info["final_episode_return"] == sa_rl.info["final_episode_return"]
    assert info["run_dir"] == str(cache / f"sa-rl_{EPS:g}_0")
    assert seconds < sa_rl.seconds / 5, (seconds, sa_rl.seconds)
    obs = torch.randn(128, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again.perturb(obs), sa_rl.attack.perturb(obs))


def test_cache_retrains_when_eps_budget_or_victim_change(victim, tmp_path):
    cache = tmp_path / "cache"

    def fit(name, eps, budget, view=victim.view):
        attack = make_attack(name, view, ObservationBall(eps), {"batch_size": 32})
        return attack, attack.fit(context(budget, cache))

    first, info = fit("pa-ad", EPS, TINY)
    assert not info["cached"] and info["training_steps"] == TINY
    assert (cache / f"pa-ad_{EPS:g}_0" / learned.META_FILE).is_file()
    assert fit("pa-ad", EPS, TINY)[1]["cached"]
    assert not fit("pa-ad", 0.3, TINY)[1]["cached"]  # another eps: its own attacker
    assert fit("pa-ad", EPS, TINY)[1]["cached"]  # ... which left the first one alone
    assert not fit("pa-ad", EPS, TINY + 100)[1]["cached"]  # another budget: retrained
    assert not fit("sa-rl", EPS, TINY)[1]["cached"]  # another attack
    weight = victim.view.actor.net[0].weight  # the same victim with other weights
    original = weight.clone()
    try:
        with torch.no_grad():
            weight += 1e-3
        assert not fit("pa-ad", EPS, TINY + 100)[1]["cached"]
    finally:
        with torch.no_grad():
            weight.copy_(original)


def test_victim_fingerprint_follows_weights_and_normalizer(victim):
    view = victim.view
    before = learned.victim_fingerprint(view)
    assert learned.victim_fingerprint(view) == before
    weight = view.actor.net[-1].bias
    with torch.no_grad():
        weight[0] += 1e-4
    try:
        assert learned.victim_fingerprint(view) != before
    finally:
        with torch.no_grad():
            weight[0] -= 1e-4
    normalizer = view.policy.normalizer
    mean = normalizer.mean.copy()
    normalizer.load_state_dict({**normalizer.state_dict(), "mean": mean + 1e-3})
    try:
        assert learned.victim_fingerprint(view) != before
    finally:
        normalizer.load_state_dict({**normalizer.state_dict(), "mean": mean})
    assert learned.victim_fingerprint(view) == before
    assert learned.victim_fingerprint(RandomMLPView()) != before  # a view without .actor


# ---------------------------------------------------------------- (6) fit before perturb


@pytest.mark.parametrize("name", ["sa-rl", "pa-ad"])
def test_perturb_before_fit_is_an_error(victim, name):
    attack = make_attack(name, victim.view, ObservationBall(EPS))
    with pytest.raises(ConfigError, match="fit"):
        attack.perturb(torch.zeros(2, 3))
