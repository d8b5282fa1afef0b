"""Config: defaults follow the paper, presets resolve, overrides are checked by name and type."""

import pytest

from robustrl.config import TrainConfig, build_config, parse_set_args, preset_overrides
from robustrl.errors import ConfigError


def test_defaults_are_the_papers_sac():
    c = TrainConfig()
    assert c.sac.hidden_sizes == [256, 256] and c.sac.batch_size == 256
    assert (c.sac.actor_lr, c.sac.critic_lr, c.sac.alpha_lr) == (3e-4, 3e-4, 3e-4)
    assert (c.sac.gamma, c.sac.tau) == (0.99, 0.005)
    assert c.replay.capacity == 1_000_000 and c.replay.prioritized
    assert (c.replay.priority_exponent, c.replay.importance_start, c.replay.importance_end) == (
        0.6,
        0.4,
        1.0,
    )
    assert c.normalizer.clip == 10.0 and c.sac.target_entropy is None


def test_paper_preset_per_environment():
    hopper = build_config(env="Hopper-v5", preset="paper")
    assert hopper.steps == 500_000 and hopper.sac.target_entropy == -1.0
    assert build_config(env="HalfCheetah-v5", preset="paper").steps == 1_000_000
    assert build_config(env="Walker2d-v5", preset="paper").steps == 1_500_000
    assert build_config(env="Ant-v5", preset="paper").steps == 3_000_000
    # explicit arguments and --set win over the preset
    assert build_config(env="Hopper-v5", preset="paper", steps=10).steps == 10
    assert (
        build_config(
            env="Hopper-v5", preset="paper", overrides={"sac.target_entropy": -2}
        ).sac.target_entropy
        == -2.0
    )
    assert preset_overrides("paper", "Hopper-v5", "sac")["sac.target_entropy"] == -1.0


def test_set_parses_yaml_values_and_types():
    o = parse_set_args(["sac.hidden_sizes=[64, 64]", "compile=false", "sac.tau=0.01", "steps=1e4"])
    c = build_config(overrides=o)
    assert c.sac.hidden_sizes == [64, 64] and c.compile is False and c.sac.tau == 0.01
    assert c.steps == 10_000 and isinstance(c.steps, int)
    assert build_config(overrides={"sac.target_entropy": None}).sac.target_entropy is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"sac.batch_sise": 3},
            "unknown --set key 'sac.batch_sise' (did you mean 'sac.batch_size'?)",
        ),
        ({"steps": "many"}, "steps expects int, got 'many'"),
        ({"steps": 1.5}, "steps expects int, got 1.5"),
        ({"compile": "yes please"}, "compile expects bool"),
        ({"sac.hidden_sizes": 64}, "sac.hidden_sizes expects list"),
        ({"steps": 0}, "steps must be > 0, got 0"),
        ({"steps": -5}, "steps must be > 0, got -5"),
        ({"sac.tau": 2.0}, "sac.tau must be in (0, 1]"),
        ({"sac.hidden_sizes": [0]}, "sac.hidden_sizes must be widths in [1, 65536]"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError) as info:
        build_config(overrides=overrides)
    assert message in str(info.value)


def test_bad_algo_preset_and_set_syntax():
    with pytest.raises(ConfigError, match="unknown algo 'ppo-magic'"):
        build_config(algo="ppo-magic")
    with pytest.raises(ConfigError, match="unknown preset 'fancy'"):
        build_config(env="Hopper-v5", preset="fancy")
    with pytest.raises(ConfigError, match="has no settings for 'Pendulum-v1'"):
        build_config(env="Pendulum-v1", preset="paper")
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set_args(["steps"])


def test_config_round_trips_through_a_dict():
    c = build_config(env="Hopper-v5", preset="paper", overrides={"sac.hidden_sizes": [32]})
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_paper_preset_robust_methods():
    """Paper Tables 3-6: regulariser coefficients, schedules, rho, lambda, resets, per env."""
    cheetah = build_config("valt-soft-sac", "HalfCheetah-v5", preset="paper")
    assert cheetah.adversary.eps == 0.15 and cheetah.adversary.temperature == 8
    assert cheetah.adversary.behaviour_ratio == 1.0 and cheetah.regulariser.coef == 1
    assert (cheetah.regulariser.ramp_start, cheetah.regulariser.ramp_end) == (100_000, 800_000)
    hopper = build_config("robust-sac", "Hopper-v5", preset="paper")
    assert hopper.regulariser.coef == 300 and hopper.regulariser.sgld_steps == 5
    assert hopper.adversary.eps == 0.075 and hopper.adversary.ramp_end == 400_000
    walker = build_config("valt-eps-sac", "Walker2d-v5", preset="paper")
    assert not walker.regulariser.enabled and walker.regulariser.sgld_steps == 2
    ant = build_config("valt-eps-sac", "Ant-v5", preset="paper")
    assert ant.adversary.behaviour_ratio == 1.0 and ant.adversary.ramp_end == 2_700_000
    assert build_config("valt-soft-sac", "Ant-v5", preset="paper").adversary.reset_every == 1000
    ppo = build_config("pa-sac-ppo", "HalfCheetah-v5", preset="paper").adversary.ppo
    assert (ppo.lr, ppo.value_lr, ppo.entropy_coef) == (3e-5, 1e-5, 1e-3)
    assert build_config("sac-ppo", "Ant-v5", preset="paper").adversary.ppo_iterations == 4882


@pytest.mark.parametrize(
    "env, steps, kappa_end, reg_ramp",
    [
        # the paper's lengths give the paper's steps
        ("HalfCheetah-v5", None, 800_000, (100_000, 800_000)),
        ("Hopper-v5", None, 400_000, (100_000, 400_000)),
        ("Walker2d-v5", None, 1_300_000, (100_000, 1_300_000)),
        ("Ant-v5", None, 2_700_000, (100_000, 2_700_000)),
        # a shorter run keeps the paper's shape (before: eps_reg stayed 0 on Hopper at 100k,
        # whose ramp started at 100k, and kappa ended at 0.25)
        ("Hopper-v5", 100_000, 80_000, (20_000, 80_000)),
        ("HalfCheetah-v5", 300_000, 240_000, (30_000, 240_000)),
    ],
)
def test_preset_schedules_keep_the_papers_shape(env, steps, kappa_end, reg_ramp):
    config = build_config("valt-eps-sac", env, preset="paper", steps=steps)
    assert config.adversary.ramp_end == kappa_end
    assert (config.regulariser.ramp_start, config.regulariser.ramp_end) == reg_ramp
    from robustrl.robust import make_parts

    adversary, regulariser = make_parts(config, 3, 1)
    total = config.steps
    for part in (adversary, regulariser):
        if part is not None:
            part.on_step(int(0.9 * total), total)
    assert adversary.kappa_value == 1.0
    if regulariser is not None:  # Walker2d's VALT-EPS has none (paper)
        assert float(regulariser.eps) == pytest.approx(config.adversary.eps)
        regulariser.on_step(int(0.5 * total), total)
        assert 0.0 < float(regulariser.eps) < config.adversary.eps


def test_absolute_schedule_steps_win_over_fractions():
    config = build_config(
        "valt-eps-sac",
        "Hopper-v5",
        preset="paper",
        steps=100_000,
        overrides={"adversary.ramp_end": 5000, "regulariser.ramp_end_fraction": 0.5},
    )
    assert config.adversary.ramp_end == 5000 and config.regulariser.ramp_end == 50_000


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("adversary.ramp_end_fraction", 1.5, "adversary.ramp_end_fraction must be in [0, 1]"),
        ("regulariser.ramp_start_fraction", 0.9, "must not exceed regulariser.ramp_end_fraction"),
    ],
)
def test_bad_schedule_fractions(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_config("valt-eps-sac", "Hopper-v5", overrides={key: value})


# The bad inputs of the fault-injection pass (issue 13) that used to give a traceback, a
# misleading error or silent acceptance: each is now refused before anything is created.
BAD_INPUTS = [
    ({"sac.actor_lr": "nan"}, "sac.actor_lr must be a finite number > 0, got nan"),
    ({"sac.init_alpha": "nan"}, "sac.init_alpha must be a finite number > 0, got nan"),
    ({"normalizer.clip": "nan"}, "normalizer.clip must be a finite number > 0, got nan"),
    ({"sac.huber_delta": 0}, "sac.huber_delta must be > 0, got 0.0"),
    ({"td3.gamma": 5}, "td3.gamma must be in [0, 1], got 5.0"),
    ({"sac.log_std_min": 5}, "sac.log_std_min must be below sac.log_std_max, got 5.0 >= 2.0"),
    ({"replay.capacity": 1}, "replay.capacity (1) must hold at least one batch (256)"),
    ({"regulariser.coef": "nan"}, "regulariser.coef must be a finite number >= 0, got nan"),
    ({"adversary.eps": 1e9}, "adversary.eps must be at most 2 * normalizer.clip = 20"),
    ({"steps": 1e30}, "steps must be at most 1e+10"),
    ({"threads": 1e12}, "threads must be in [0, 1024]"),
    ({"seed": -1}, "seed must be in [0, 4294967295], got -1"),
    ({"seed": 2**64}, "seed must be in [0, 4294967295]"),
    ({"sac.target_entropy": "inf"}, "sac.target_entropy must be a finite number, got inf"),
    ({"adversary.ppo.clip": 0}, "adversary.ppo.clip must be > 0"),
    ({"oa.action_eps": 5}, "oa.action_eps must be in [0, 2], got 5.0"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUTS)
def test_every_key_is_range_and_finiteness_checked(overrides, message):
    with pytest.raises(ConfigError) as info:
        build_config("valt-eps-sac", "Hopper-v5", overrides=overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cuda_on_a_build_without_cuda_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="has no CUDA"):
        build_config(overrides={"device": "cuda"})


def test_every_numeric_key_has_a_declared_range_or_is_explained():
    """New numeric keys must be added to LIMITS (or to the list of keys checked elsewhere)."""
    from robustrl.config import LIMITS, TrainConfig, _all_keys

    config = TrainConfig()
    elsewhere = {
        "adversary.eps",  # finite >= 0 and <= 2 * clip, with the attack commands' message
        "regulariser.eps",
        "sac.target_entropy",  # any finite number
        "sac.log_std_min",  # finite, below log_std_max
        "sac.log_std_max",
        "adversary.ppo.init_log_std",  # any finite number
    }
    for key in _all_keys(config):
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        hint = typing_hint(config, key)
        if numeric or hint in ("int", "float"):
            assert key in LIMITS or key in elsewhere, key


def typing_hint(config, key):
    import typing

    *parents, name = key.split(".")
    target = config
    for parent in parents:
        target = getattr(target, parent)
    hint = typing.get_type_hints(type(target))[name]
    if typing.get_origin(hint) in (list, dict):
        return "container"
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return getattr(args[0], "__name__", "")
