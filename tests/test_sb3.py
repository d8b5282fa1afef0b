"""The SB3 policy views: agreement with SB3's own predict/critics, safe loading, clear errors."""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from robustrl.attacks import make_attack
from robustrl.envs import make_env
from robustrl.errors import ConfigError
from robustrl.evaluation import rollout
from robustrl.sb3 import (
    TD3_DISTRIBUTION_STD,
    load_sb3_view,
    load_vecnormalize_stats,
)
from robustrl.threat import ObservationBall

ENV = "Pendulum-v1"
ALGO_CLASSES = {"sac": SAC, "td3": TD3, "ppo": PPO}
CASES = ["sac", "td3", "ppo", "ppo-vn"]  # ppo-vn: PPO trained inside VecNormalize


class DictObsEnv(gym.Env):
    """A tiny env with a Dict observation (for SB3's MultiInputPolicy)."""

    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return {"x": np.zeros(2, np.float32)}, {}

    def step(self, action):
        return {"x": np.zeros(2, np.float32)}, 0.0, False, True, {}


class TwoDimEnv(gym.Env):
    """A 2-D observation env (for a VecNormalize file of the wrong shape)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, True, {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny SB3 models on Pendulum (a few hundred steps), saved; global RNGs left as found."""
    folder = tmp_path_factory.mktemp("sb3")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add overhead on a shared machine
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:

        def net():  # a fresh dict each: SB3 adds keys to policy_kwargs in place
            return dict(net_arch=[16, 16])

        off_policy = dict(learning_starts=50, batch_size=32, buffer_size=1000, seed=0)
        on_policy = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0)
        models = {
            "sac": SAC("MlpPolicy", ENV, policy_kwargs=net(), device="cpu", **off_policy),
            "td3": TD3("MlpPolicy", ENV, policy_kwargs=net(), device="cpu", **off_policy),
            "ppo": PPO("MlpPolicy", ENV, policy_kwargs=net(), device="cpu", **on_policy),
        }
        vec = VecNormalize(DummyVecEnv([lambda: gym.make(ENV)]))
        models["ppo-vn"] = PPO("MlpPolicy", vec, policy_kwargs=net(), device="cpu", **on_policy)
        paths = {}
        for name, model in models.items():
            model.learn(200 if name in ("sac", "td3") else 128)
            paths[name] = folder / f"{name}.zip"
            model.save(paths[name])
        vec_path = folder / "vecnormalize.pkl"
        vec.save(vec_path)
        yield dict(folder=folder, paths=paths, vec=vec, vec_path=vec_path)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        torch.set_num_threads(threads)


def open_view(trained, case):
    algo = case.split("-")[0]
    vecnormalize = trained["vec_path"] if case == "ppo-vn" else None
    return load_sb3_view(trained["paths"][case], algo, ENV, vecnormalize)


def reference(trained, case):
    """The same file opened independently by SB3 (never the view's own model object)."""
    return ALGO_CLASSES[case.split("-")[0]].load(trained["paths"][case], device="cpu")


def raw_observations(n=256, scale=1.0, seed=0):
    """Random raw Pendulum observations (cos, sin, angular velocity), (n, 3) float32."""
    bound = np.array([1.0, 1.0, 8.0]) * scale
    return np.random.default_rng(seed).uniform(-bound, bound, (n, 3)).astype(np.float32)


# --------------------------------------------------------------------------- (1) actions


@pytest.mark.parametrize("case", CASES)
def test_actions_match_sb3_predict(trained, case):
    view, ref = open_view(trained, case), reference(trained, case)
    raw = raw_observations()
    actions = view.act(torch.as_tensor(view.normalize(raw)), True)
    assert actions.shape == (256, 1) and actions.abs().max() <= 1.0
    ours = view.to_env(actions.numpy())
    sb3_input = trained["vec"].normalize_obs(raw) if case == "ppo-vn" else raw
    expected, _ = ref.predict(sb3_input, deterministic=True)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert np.ptp(expected) > 1e-3  # the comparison is not between constant outputs
    assert view.kind == f"sb3 {case.split('-')[0]}" and view.env_id == ENV
    assert (view.obs_dim, view.act_dim) == (3, 1)
    assert view.action_low.dtype == np.float32 and view.action_low.tolist() == [-2.0]
    assert view.action_high.tolist() == [2.0]


@pytest.mark.parametrize("case", ["sac", "ppo"])
def test_stochastic_actions_stay_in_range_and_vary(trained, case):
    view = open_view(trained, case)
    obs = torch.as_tensor(view.normalize(raw_observations(64)))
    a, b = view.act(obs, False), view.act(obs, False)
    assert a.shape == (64, 1) and a.abs().max() <= 1.0
    assert not torch.equal(a, b)


@pytest.mark.parametrize("case", ["sac", "ppo-vn"])
def test_rollout_matches_an_sb3_predict_loop(trained, case):
    view, ref = open_view(trained, case), reference(trained, case)
    result = rollout(view, lambda: make_env(ENV), episodes=1, seed=3, n_envs=1)
    env = gym.make(ENV)
    obs, _ = env.reset(seed=3)
    total, done = 0.0, False
    while not done:
        sb3_obs = trained["vec"].normalize_obs(obs[None]) if case == "ppo-vn" else obs[None]
        action, _ = ref.predict(sb3_obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action[0])
        total, done = total + float(reward), terminated or truncated
    assert result.returns[0] == pytest.approx(total, abs=1e-3)


# --------------------------------------------------------------------------- (2) gradients, distributions


@pytest.mark.parametrize("case", CASES)
def test_mean_action_is_differentiable_and_networks_frozen(trained, case):
    view = open_view(trained, case)
    obs = torch.as_tensor(view.normalize(raw_observations(32))).requires_grad_(True)
    action = view.mean_action(obs)
    (grad,) = torch.autograd.grad(action.sum(), obs)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(action.detach(), view.act(obs.detach(), True))
    params = list(view.policy.parameters())
    assert params and all(not p.requires_grad and p.dtype == torch.float32 for p in params)
    assert not any(module.training for module in view.policy.modules())


def test_sac_distribution_is_the_pre_tanh_gaussian(trained):
    view, ref = open_view(trained, "sac"), reference(trained, "sac")
    obs = torch.as_tensor(raw_observations(16))
    dist = view.distribution(obs)
    assert dist.batch_shape == (16, 1)
    mean, log_std, _ = ref.policy.actor.get_action_dist_params(obs)
    torch.testing.assert_close(dist.mean, mean)
    torch.testing.assert_close(dist.stddev, log_std.exp())
    torch.testing.assert_close(torch.tanh(dist.mean), view.mean_action(obs))


def test_ppo_distribution_in_normalised_action_units(trained):
    view, ref = open_view(trained, "ppo"), reference(trained, "ppo")
    obs = torch.as_tensor(raw_observations(16))
    dist = view.distribution(obs)
    sb3 = ref.policy.get_distribution(obs).distribution  # env units, bounds [-2, 2]
    assert dist.batch_shape == (16, 1)
    torch.testing.assert_close(dist.mean, (sb3.mean + 2.0) * 0.5 - 1.0)
    torch.testing.assert_close(dist.stddev, sb3.stddev * 0.5)
    torch.testing.assert_close(view.mean_action(obs), dist.mean.clamp(-1, 1))


def test_td3_distribution_is_centred_on_the_action(trained):
    view = open_view(trained, "td3")
    obs = torch.as_tensor(raw_observations(16))
    dist = view.distribution(obs)
    assert dist.batch_shape == (16, 1)
    torch.testing.assert_close(dist.mean, view.mean_action(obs))
    assert torch.all(dist.stddev == TD3_DISTRIBUTION_STD)


# --------------------------------------------------------------------------- (3) critics


@pytest.mark.parametrize("case", ["sac", "td3"])
def test_q_value_is_the_mean_of_sb3_critics(trained, case):
    view, ref = open_view(trained, case), reference(trained, case)
    assert view.has_q_value and not view.has_state_value
    obs = torch.as_tensor(raw_observations(32))
    action = torch.rand(32, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = torch.cat(ref.policy.critic(obs, action), dim=1).mean(1)
    q = view.q_value(obs, action)
    assert q.shape == (32,)
    torch.testing.assert_close(q, expected)
    obs.requires_grad_(True)  # differentiable in the observation as well as the action
    (grad,) = torch.autograd.grad(view.q_value(obs, action).sum(), obs)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["ppo", "ppo-vn"])
def test_state_value_is_sb3_predict_values(trained, case):
    view, ref = open_view(trained, case), reference(trained, case)
    assert view.has_state_value and not view.has_q_value
    obs = torch.as_tensor(view.normalize(raw_observations(32)))
    value = view.state_value(obs)
    assert value.shape == (32,)
    torch.testing.assert_close(value, ref.policy.predict_values(obs).squeeze(-1))
    with pytest.raises(ConfigError, match="no Q critic"):
        view.q_value(obs, torch.zeros(32, 1))


# --------------------------------------------------------------------------- (4) normalisation


def test_vecnormalize_normaliser_equals_sb3(trained):
    view, vec = open_view(trained, "ppo-vn"), trained["vec"]
    raw = raw_observations(512, scale=30.0)  # far outside the data: exercises clip_obs
    expected = vec.normalize_obs(raw)
    ours = view.normalize(raw)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)
    assert (np.abs(expected) == vec.clip_obs).any() and (np.abs(expected) < vec.clip_obs).any()
    np.testing.assert_allclose(view.obs_std, np.sqrt(vec.obs_rms.var + vec.epsilon))
    stats = load_vecnormalize_stats(trained["vec_path"])
    np.testing.assert_array_equal(stats.mean, vec.obs_rms.mean)
    assert (stats.epsilon, stats.clip_obs) == (vec.epsilon, vec.clip_obs)


def test_without_vecnormalize_observations_are_raw_float32(trained):
    view = open_view(trained, "sac")
    raw = raw_observations(8).astype(np.float64)
    out = view.normalize(raw)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, raw.astype(np.float32))
    np.testing.assert_array_equal(view.obs_std, np.ones(3))


# --------------------------------------------------------------------------- (5) restricted unpickling


class Exploit:
    """Unpickles to ``os.system(command)``: what a malicious pickle looks like."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def rewrite_zip(source: Path, target: Path, **entries) -> Path:
    """A copy of an SB3 zip with ``data`` entries replaced by cloudpickled bytes."""
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    for key, blob in entries.items():
        data[key] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(blob).decode()}
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return target


def test_vecnormalize_pickle_with_os_system_is_refused(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "vecnormalize.pkl"
    evil.write_bytes(pickle.dumps(Exploit(f"touch {marker}")))
    with pytest.raises(ConfigError, match=r"system, which robustrl refuses to unpickle"):
        load_vecnormalize_stats(evil)
    assert not marker.exists()
    # the payload is live: a plain unpickle would have run it
    pickle.loads(evil.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("entry", ["policy_class", "observation_space", "lr_schedule"])
def test_model_zip_with_os_system_is_refused(trained, tmp_path, entry):
    marker = tmp_path / "executed"
    evil = rewrite_zip(
        trained["paths"]["sac"],
        tmp_path / "evil.zip",
        **{entry: pickle.dumps(Exploit(f"touch {marker}"))},
    )
    if entry == "lr_schedule":  # training-only: replaced by a placeholder, never unpickled
        view = load_sb3_view(evil, "sac", ENV)
        assert view.act(torch.zeros(1, 3)).shape == (1, 1)
    else:
        with pytest.raises(ConfigError, match=r"system, which robustrl refuses to unpickle"):
            load_sb3_view(evil, "sac", ENV)
    assert not marker.exists()


def test_old_style_closure_schedule_is_replaced_not_run(trained, tmp_path):
    # SB3 < 2.6 saved schedules as cloudpickled closures (code objects): refused, replaced
    patched = rewrite_zip(
        trained["paths"]["ppo"],
        tmp_path / "old.zip",
        lr_schedule=cloudpickle.dumps(lambda _: 3e-4),
        clip_range=cloudpickle.dumps(lambda _: 0.2),
    )
    view, ref = load_sb3_view(patched, "ppo", ENV), reference(trained, "ppo")
    raw = raw_observations(16)
    np.testing.assert_allclose(
        view.to_env(view.act(torch.as_tensor(raw)).numpy()),
        ref.predict(raw, deterministic=True)[0],
        atol=1e-5,
    )


def test_not_a_vecnormalize_pickle(tmp_path):
    other = tmp_path / "stats.pkl"
    other.write_bytes(pickle.dumps({"obs_rms": [1.0, 2.0]}))
    with pytest.raises(ConfigError, match="not a VecNormalize statistics file"):
        load_vecnormalize_stats(other)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x00not a pickle at all")
    with pytest.raises(ConfigError, match="not a readable pickle"):
        load_vecnormalize_stats(garbage)


# --------------------------------------------------------------------------- (6) bad inputs


def assert_one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        load_sb3_view(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_missing_file(tmp_path):
    assert_one_line_error("no such file", tmp_path / "nope.zip", "sac", ENV)


def test_not_a_zip(tmp_path):
    garbage = tmp_path / "model.zip"
    garbage.write_bytes(os.urandom(256))
    assert_one_line_error("not a readable zip", garbage, "sac", ENV)


def test_zip_that_is_not_an_sb3_model(tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert_one_line_error("not an SB3 model", other, "sac", ENV)


def test_sac_zip_loaded_as_td3(trained):
    message = assert_one_line_error(
        "holds an SB3 SAC model, not TD3", trained["paths"]["sac"], "td3", ENV
    )
    assert "algo 'sac'" in message


def test_ppo_zip_loaded_as_sac(trained):
    assert_one_line_error("holds an SB3 PPO model, not SAC", trained["paths"]["ppo"], "sac", ENV)


def test_env_with_other_observation_shape(trained):
    message = assert_one_line_error(
        "observations of shape", trained["paths"]["sac"], "sac", "InvertedPendulum-v5"
    )
    assert "(3,)" in message and "(4,)" in message


def test_unsupported_algorithm_name(trained):
    assert_one_line_error(
        "unsupported SB3 algorithm 'dqn'.*sac, td3 or ppo", trained["paths"]["sac"], "dqn", ENV
    )


def test_multi_input_policy_is_unsupported(tmp_path):
    path = tmp_path / "dict.zip"
    SAC("MultiInputPolicy", DictObsEnv(), buffer_size=10, device="cpu").save(path)
    assert_one_line_error(
        "unsupported SB3 policy MultiInputPolicy.*MlpPolicy agents with Box spaces",
        path,
        "sac",
        ENV,
    )


def test_gsde_ppo_is_unsupported(tmp_path):
    path = tmp_path / "sde.zip"
    PPO("MlpPolicy", ENV, use_sde=True, n_steps=64, device="cpu").save(path)
    assert_one_line_error("gSDE", path, "ppo", ENV)


def test_discrete_actions_are_unsupported(tmp_path):
    path = tmp_path / "cartpole.zip"
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, device="cpu").save(path)
    assert_one_line_error("action space is Discrete.*Box spaces", path, "ppo", "CartPole-v1")


def test_vecnormalize_problems(trained, tmp_path):
    assert_one_line_error(
        "no such file", trained["paths"]["ppo"], "ppo", ENV, vecnormalize=tmp_path / "none.pkl"
    )
    wrong = tmp_path / "two_dim.pkl"
    VecNormalize(DummyVecEnv([TwoDimEnv])).save(wrong)
    message = assert_one_line_error(
        "statistics of shape", trained["paths"]["ppo"], "ppo", ENV, vecnormalize=wrong
    )
    assert "(2,)" in message and "(3,)" in message


# --------------------------------------------------------------------------- (7) attacks


def test_pgd_minq_on_sb3_sac_stays_in_the_ball(trained):
    view, ball = open_view(trained, "sac"), ObservationBall(0.1)
    obs = torch.as_tensor(view.normalize(raw_observations(32)))
    attack = make_attack("pgd-minq", view, ball)
    adv = attack.perturb(obs)
    assert adv.shape == obs.shape and ball.contains(obs, adv) and not torch.equal(adv, obs)
    # the attack found observations whose actions the critic values lower than the clean ones
    with torch.no_grad():
        clean = view.q_value(obs, view.mean_action(obs))
        attacked = view.q_value(obs, view.mean_action(adv))
    assert attacked.mean() < clean.mean()


def test_other_attacks_on_sb3_views(trained):
    ball = ObservationBall(0.1)
    for case, name in (("ppo-vn", "pgd-minv"), ("td3", "mad"), ("sac", "mad")):
        view = open_view(trained, case)
        obs = torch.as_tensor(view.normalize(raw_observations(16)))
        adv = make_attack(name, view, ball).perturb(obs)
        assert ball.contains(obs, adv) and not torch.equal(adv, obs)


def test_pgd_minq_on_ppo_points_to_pgd_minv(trained):
    with pytest.raises(ConfigError, match="pgd-minv"):
        make_attack("pgd-minq", open_view(trained, "ppo"), ObservationBall(0.1))


# --------------------------------------------------------------------------- (6) bounded untrusted files


class HugeBox:
    """Unpickles to ``Box(0.0, 1.0, (100_000_000,))``: 61 bytes that would allocate 1.3 GB."""

    def __reduce__(self):
        return (gym.spaces.Box, (0.0, 1.0, (100_000_000,)))


def test_a_space_asking_for_a_huge_shape_is_refused_before_allocating(trained, tmp_path):
    import resource

    evil = rewrite_zip(
        trained["paths"]["sac"], tmp_path / "box.zip", observation_space=pickle.dumps(HugeBox())
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="has 100000000 elements"):
        load_sb3_view(evil, "sac", ENV)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # nothing near the 800 MB the arrays would take


def test_a_zip_bomb_is_refused_while_decompressing(trained, tmp_path, monkeypatch):
    """A member that decompresses beyond the limit (lowered here to keep the test fast: the
    real limit is hundreds of MB) is refused during decompression, without trusting the sizes
    the zip's headers declare."""
    import robustrl.sb3 as sb3

    monkeypatch.setattr(sb3, "MAX_MEMBER_BYTES", 4 * 2**20)
    bomb = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(trained["paths"]["sac"]) as source,
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for name in source.namelist():
            archive.writestr(name, source.read(name))
        archive.writestr("padding.bin", bytes(16 * 2**20))  # 16 MB of zeros: ~16 KB compressed
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ConfigError, match="'padding.bin' decompresses to more than 4 MiB"):
        load_sb3_view(bomb, "sac", ENV)


def test_encrypted_members_and_unknown_compression_are_one_line_errors(trained, tmp_path):
    def patched(name, offsets, value):
        """The model zip with a 2-byte header field of every member set to ``value``
        (``offsets``: in the local and the central headers)."""
        raw = bytearray(trained["paths"]["sac"].read_bytes())
        for signature, offset in zip((b"PK\x03\x04", b"PK\x01\x02"), offsets):
            start = 0
            while (start := raw.find(signature, start)) != -1:
                field = int.from_bytes(raw[start + offset : start + offset + 2], "little")
                new = field | value if name == "flags" else value
                raw[start + offset : start + offset + 2] = new.to_bytes(2, "little")
                start += 4
        target = tmp_path / f"{name}.zip"
        target.write_bytes(bytes(raw))
        return target

    with pytest.raises(ConfigError, match="is encrypted"):
        load_sb3_view(patched("flags", (6, 8), 0x1), "sac", ENV)
    with pytest.raises(ConfigError, match="compression"):
        load_sb3_view(patched("method", (8, 10), 99), "sac", ENV)


def test_networks_too_large_to_allocate_are_refused(trained, tmp_path):
    with zipfile.ZipFile(trained["paths"]["sac"]) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    data["policy_kwargs"]["net_arch"] = [8000, 8000]  # ~1.6 GB of parameters and moments
    files["data"] = json.dumps(data).encode()
    target = tmp_path / "wide.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    with pytest.raises(ConfigError, match=r"net_arch \[8000, 8000\] asks for about"):
        load_sb3_view(target, "sac", ENV)


def test_deeply_nested_json_is_a_one_line_error(trained, tmp_path):
    with zipfile.ZipFile(trained["paths"]["sac"]) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["data"] = b"[" * 200_000 + b"]" * 200_000
    target = tmp_path / "nested.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_sb3_view(target, "sac", ENV)
