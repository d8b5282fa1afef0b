"""The attack suite: every attack stays in its ball, uses the agent's normaliser, and hurts."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustrl.attacks import ATTACKS, make_attack, resolve_names
from robustrl.cli import main
from robustrl.envs import make_env
from robustrl.errors import ConfigError
from robustrl.evaluation import rollout
from robustrl.threat import ActionBall, ObservationBall, paper_eps
from robustrl.views import load_view

GRADIENT_ATTACKS = ["random", "mad", "pgd-minq"]


@pytest.fixture(scope="module")
def view(pendulum_victim):
    return load_view(pendulum_victim)


@given(
    batch=st.integers(1, 9),
    eps=st.floats(0.0, 2.0),
    scale=st.floats(0.1, 20.0),
    name=st.sampled_from(GRADIENT_ATTACKS),
    seed=st.integers(0, 1000),
)
@settings(max_examples=40, deadline=None)
def test_gradient_attacks_stay_in_the_ball(view, batch, eps, scale, name, seed):
    obs = torch.randn(batch, view.obs_dim, generator=torch.Generator().manual_seed(seed)) * scale
    ball = ObservationBall(eps)
    adv = make_attack(name, view, ball, seed=seed).perturb(obs)
    assert adv.shape == obs.shape and adv.dtype == torch.float32
    assert ball.contains(obs, adv)
    assert torch.all((adv - obs).abs() <= eps + 1e-6 * (1 + obs.abs()))
    if eps == 0.0:
        assert torch.equal(adv, obs)


@given(radii=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), seed=st.integers(0, 100))
@settings(max_examples=30, deadline=None)
def test_per_dimension_radius(view, radii, seed):
    obs = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))
    ball = ObservationBall(tuple(radii))
    adv = make_attack("pgd-minq", view, ball, seed=seed).perturb(obs)
    assert ball.contains(obs, adv)
    assert torch.all((adv - obs).abs() <= torch.tensor(radii) + 1e-6)


def test_raw_eps_uses_the_agents_normaliser(view):
    """A raw-unit budget becomes eps_raw / std per dimension of the victim's own normaliser."""
    std = view.policy.normalizer.std
    ball = ObservationBall.from_raw(0.2, view.obs_std)
    np.testing.assert_allclose(ball.eps, 0.2 / std)
    raw = np.random.default_rng(0).normal(size=(4, 3)) * 2
    np.testing.assert_array_equal(view.normalize(raw), view.policy.normalizer.normalize(raw))
    # raw perturbations just inside / just outside 0.2 in every coordinate
    o = torch.as_tensor(view.normalize(raw))
    assert ball.contains(o, torch.as_tensor(view.normalize(raw + 0.199)))
    assert not ball.contains(o, torch.as_tensor(view.normalize(raw + 0.201)))


def test_pgd_lowers_the_critic_and_mad_raises_the_kl(view):
    obs = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    ball = ObservationBall(0.2)
    q = lambda o, adv: view.q_value(o, view.mean_action(adv))  # noqa: E731
    with torch.no_grad():
        pgd = make_attack("pgd-minq", view, ball, seed=0).perturb(obs)
        rnd = make_attack("random", view, ball, seed=0).perturb(obs)
        assert q(obs, pgd).mean() < q(obs, rnd).mean() < q(obs, obs).mean() + 1.0
    mad = make_attack("mad", view, ball, seed=0).perturb(obs)

    def kl(adv):
        return torch.distributions.kl_divergence(
            view.distribution(obs), view.distribution(adv)
        ).sum(-1)  # noqa: E731

    with torch.no_grad():
        assert kl(mad).mean() > 3 * kl(rnd).mean()


def test_gradient_attacks_lower_the_return_more_than_random(view):
    """Undefended SAC on Pendulum, eps 0.3, 10 episodes with the same seeds for every attack."""
    make = lambda: make_env("Pendulum-v1")  # noqa: E731
    ball = ObservationBall(0.3)
    clean = rollout(view, make, 10, seed=0)
    returns = {"none": clean}
    for name in GRADIENT_ATTACKS:
        attack = make_attack(name, view, ball, seed=0)
        returns[name] = rollout(view, make, 10, perturb=attack.perturb, ball=ball, seed=0)
    rnd = returns["random"]
    for name in ("mad", "pgd-minq"):
        r = returns[name]
        # a gap of several standard errors of the difference, and at least 200 return
        stderr = np.sqrt(r.std**2 / 10 + rnd.std**2 / 10)
        assert rnd.mean - r.mean > max(200.0, 4 * stderr), (name, r.mean, rnd.mean)
    assert clean.mean > rnd.mean - 100  # random noise of this size barely matters


def test_rollout_is_reproducible_and_independent_of_batching(view):
    make = lambda: make_env("Pendulum-v1")  # noqa: E731
    ball = ObservationBall(0.2)
    a = rollout(
        view,
        make,
        5,
        perturb=make_attack("random", view, ball, seed=3).perturb,
        ball=ball,
        seed=7,
        n_envs=5,
    )
    b = rollout(
        view,
        make,
        5,
        perturb=make_attack("random", view, ball, seed=3).perturb,
        ball=ball,
        seed=7,
        n_envs=5,
    )
    assert a.returns == b.returns
    clean1 = rollout(view, make, 6, seed=2, n_envs=1)
    clean6 = rollout(view, make, 6, seed=2, n_envs=6)
    np.testing.assert_allclose(clean1.returns, clean6.returns, rtol=1e-6)


def test_rollout_refuses_an_attack_that_leaves_the_ball(view):
    make = lambda: make_env("Pendulum-v1")  # noqa: E731
    with pytest.raises(RuntimeError, match="left its threat model's ball"):
        rollout(view, make, 1, perturb=lambda o: o + 0.5, ball=ObservationBall(0.1))


def test_action_ball():
    ball = ActionBall(0.1)
    a = torch.tensor([[0.95, -0.5, 0.0]])
    executed = ball.apply(a, torch.tensor([[0.3, -0.3, 0.05]]))
    torch.testing.assert_close(executed, torch.tensor([[1.0, -0.6, 0.05]]))
    assert ball.contains(a, executed)


def test_registry_and_bad_attack_input(view):
    assert set(GRADIENT_ATTACKS + ["pgd-minv"]) <= set(ATTACKS)
    assert "pgd-minv" not in resolve_names("all", view)  # SAC has no state-value critic
    with pytest.raises(ConfigError, match="unknown attack 'fgsm'"):
        resolve_names("random,fgsm", view)
    with pytest.raises(ConfigError, match="needs the victim's state_value.*pgd-minq"):
        make_attack("pgd-minv", view, ObservationBall(0.1))
    with pytest.raises(ConfigError, match="attack 'mad' has no setting 'stepz'"):
        make_attack("mad", view, ObservationBall(0.1), {"stepz": 3})
    with pytest.raises(ConfigError, match="mad.steps expects int"):
        make_attack("mad", view, ObservationBall(0.1), {"steps": "many"})
    with pytest.raises(ConfigError, match="eps must be a finite number >= 0"):
        ObservationBall(-0.1)
    assert paper_eps("Hopper-v5") == 0.075 and paper_eps("HalfCheetah-v4") == 0.15
    assert paper_eps("Pendulum-v1") is None


def test_attack_cli_writes_results_sweep_and_report(pendulum_victim, tmp_path, capsys):
    out = tmp_path / "att.json"
    args = [
        "attack",
        str(pendulum_victim),
        "--attacks",
        "random,pgd-minq",
        "--eps",
        "0.3",
        "--episodes",
        "4",
    ]
    args += [
        "--json",
        str(out),
        "--eps-sweep",
        "0,0.3",
        "--quiet",
        "--attack-set",
        "pgd-minq.steps=5",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "<- worst" in printed and "pgd-minq" in printed
    record = json.loads(out.read_text())
    assert record["eps"] == 0.3 and record["episodes"] == 4 and record["env"] == "Pendulum-v1"
    assert set(record["results"]) == {"none", "random", "pgd-minq"}
    assert len(record["results"]["none"]["returns"]) == 4
    assert record["worst"]["attack"] == min(
        ("random", "pgd-minq"), key=lambda k: record["results"][k]["mean"]
    )
    sweep = (tmp_path / "att_eps_sweep.csv").read_text().splitlines()
    assert sweep[0] == "eps,attack,mean,std" and len(sweep) == 1 + 2 * 3
    assert (tmp_path / "att_eps_sweep.png").stat().st_size > 1000
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep" / "report.md").read_text()
    assert "| natural |" in table.replace("natural |", "natural |") and "pgd-minq" in table
    assert (tmp_path / "rep" / "report.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--attacks", "fgsm"], "unknown attack 'fgsm'"),
        (["--eps", "-0.1"], "--eps must be a finite number >= 0, got -0.1"),
        (["--attacks", "pgd-minv"], "needs the victim's state_value"),
        (["--episodes", "0"], "--episodes must be > 0"),
        (
            ["--attack-set", "mad.steps=3", "--attacks", "random"],
            "--attack-set names mad, which --attacks does not run",
        ),
        (["--eps-sweep", "0,x", "--attacks", "random"], "--eps-sweep expects numbers"),
        (["--attacks", "all"], "sa-rl, pa-ad are learned attacks: give --budget STEPS"),
        (["--attacks", "sa-rl", "--budget", "0"], "--budget must be > 0"),
        (["--env", "Hopper-v5"], "describe --sb3 models"),
    ],
)
def test_attack_cli_bad_input(pendulum_victim, capsys, extra, fragment):
    args = [
        "attack",
        str(pendulum_victim),
        "--episodes",
        "1",
        "--eps",
        "0.1",
        "--quiet",
        "--json",
        "/dev/null",
    ]
    code = main(args + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err


def test_attack_cli_needs_eps_for_envs_without_a_paper_budget(pendulum_victim, capsys):
    assert main(["attack", str(pendulum_victim), "--episodes", "1", "--quiet"]) == 2
    assert "no paper eps for Pendulum-v1; give --eps" in capsys.readouterr().err


def test_action_attacks_share_the_evaluation_path_and_report(pendulum_victim, tmp_path, capsys):
    out = tmp_path / "act.json"
    args = [
        "attack",
        str(pendulum_victim),
        "--attacks",
        "random,a-random,a-biggest,a-minq",
        "--eps",
        "0.1",
    ]
    args += ["--action-eps", "0.3", "--episodes", "4", "--json", str(out), "--quiet"]
    assert main(args) == 0
    record = json.loads(out.read_text())
    assert record["action_eps"] == 0.3 and record["eps"] == 0.1
    assert set(record["results"]) == {"none", "random", "a-random", "a-biggest", "a-minq"}
    attacked = {k: v["mean"] for k, v in record["results"].items() if k != "none"}
    assert record["worst"]["attack"] == min(attacked, key=attacked.get)
    assert "a-minq" in capsys.readouterr().out


def test_action_eps_without_action_attacks_is_an_error(pendulum_victim, capsys):
    args = [
        "attack",
        str(pendulum_victim),
        "--attacks",
        "random",
        "--eps",
        "0.1",
        "--action-eps",
        "0.2",
    ]
    assert main([*args, "--episodes", "1", "--quiet", "--json", "/dev/null"]) == 2
    assert "--action-eps is for action attacks" in capsys.readouterr().err
    bad = [
        "attack",
        str(pendulum_victim),
        "--attacks",
        "a-random",
        "--eps",
        "0.1",
        "--action-eps",
        "-1",
    ]
    assert main([*bad, "--quiet"]) == 2
    assert "--action-eps must be a finite number >= 0" in capsys.readouterr().err
