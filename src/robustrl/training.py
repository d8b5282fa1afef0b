"""The training loop: config -> env + normaliser -> agent -> (collect, update, log, evaluate,
checkpoint) -> run directory. ``train`` starts a run, ``resume`` continues one.

Run directory::

    config.json        resolved config, spaces, library versions, and one ``sessions`` entry per
                       start or resume (git commit, CPU model, torch threads, resolved inner
                       precision, update order)
    metrics.csv        training log every ``log_every`` steps (losses, alpha, Q, returns, steps/s)
    evaluations.csv    periodic clean evaluations (deterministic policy)
    tb/                TensorBoard events (the same scalars)
    checkpoints/       see ``robustrl.checkpoint``
    eval/              ``robustrl evaluate`` results
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from robustrl import checkpoint, runlock
from robustrl.adversaries import TrainingContext, resolve_precision
from robustrl.algos import make_agent
from robustrl.config import ROBUST_SAC_ALGOS, TrainConfig
from robustrl.envs import RunningNormalizer, make_env, scale_action
from robustrl.errors import CheckpointError, ConfigError, RobustRLError
from robustrl.evaluation import evaluate
from robustrl.policy import Policy, load_model, model_tensors, read_run_config
from robustrl.replay import make_replay

LOG_COLUMNS = (
    "step",
    "episodes",
    "episode_return",
    "steps_per_s",
    "time_s",
)  # + the agent's metrics
EVAL_COLUMNS = ("step", "mean", "std", "min", "max")


class TrainingDiverged(RobustRLError):
    """A loss became NaN or infinite."""


def versions() -> dict[str, str]:
    import mujoco

    import robustrl

    return {
        "robustrl": robustrl.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
        "mujoco": mujoco.__version__,
    }


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The commit of the robustrl source tree when it is a git checkout (``+dirty`` when it has
    uncommitted changes), else None (an installed wheel)."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "."],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def session_record(config: TrainConfig, from_step: int) -> dict[str, Any]:
    """Where and how this stretch of the run computes: numbers differ between CPUs and thread
    counts, and ``inner_precision: auto`` resolves per machine, so every start and resume of a
    run appends one of these to ``config.json``'s ``sessions``."""
    precision = None
    if config.algo in ROBUST_SAC_ALGOS:
        precision = resolve_precision(config.adversary.inner_precision, torch.device(config.device))
    return {
        "from_step": from_step,
        "started": datetime.now().isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "device": config.device,
        "inner_precision": precision,
        "update_order": (
            config.td3 if config.algo in ("td3", "oa-td3") else config.sac
        ).update_order,
    }


def default_run_name(config: TrainConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.env}_{config.algo}_s{config.seed}_{stamp}"


def train(
    config: TrainConfig,
    out: str | Path = "runs",
    name: str | None = None,
    save_buffer: bool = False,
    progress: bool = True,
) -> Path:
    """Train a new run in ``out/name`` and return its run directory."""
    config.validate()
    run_dir = Path(out) / (name or default_run_name(config))
    _refuse_existing(run_dir)  # before anything is created; checked again under the lock
    return Trainer(config, run_dir, save_buffer=save_buffer, progress=progress).run()


def _refuse_existing(run_dir: Path) -> None:
    if run_dir.is_dir() and any(p.name != runlock.LOCK_NAME for p in run_dir.iterdir()):
        raise ConfigError(
            f"run directory {run_dir} already exists; use --resume {run_dir} to continue it"
        )


def resume(
    run_dir: str | Path, steps: int | None = None, save_buffer: bool = False, progress: bool = True
) -> Path:
    """Continue an interrupted run from its newest checkpoint (optionally to a new ``steps``)."""
    run_dir = Path(run_dir)
    config, _ = read_run_config(run_dir)
    with runlock.locked(run_dir, "resuming"):
        done = _newest_step(run_dir)
        if steps is not None:
            config.steps = steps
            config.validate()
        if done >= config.steps:
            raise ConfigError(
                f"{run_dir} has already reached step {done} of {config.steps}; "
                f"pass --steps N with N > {done} to train it further"
            )
        trainer = Trainer(config, run_dir, save_buffer=save_buffer, progress=progress, resume=True)
        return trainer.run()


def _newest_step(run_dir: Path) -> int:
    """The step of the newest checkpoint whose state is readable (0 if none is)."""
    for folder in checkpoint.candidates(run_dir):  # fails with a clear message if there is none
        with contextlib.suppress(CheckpointError, ValueError, TypeError):
            return int(checkpoint.read_json(folder / "state.json").get("step", 0))
    return 0


def _stop_on_sigterm():
    """Treat SIGTERM (a scheduler's preemption) like Ctrl-C: checkpoint, then stop."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _read_log_rows(path: Path, up_to_step: int) -> tuple[list[dict[str, str]], int]:
    """The rows of a CSV log up to ``up_to_step``, and how many rows were unreadable."""
    rows, bad = [], 0
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row["step"])
            except (KeyError, TypeError, ValueError):
                bad += 1
                continue
            if None in row or any(v is None for v in row.values()):  # too many / few fields
                bad += 1
            elif math.isfinite(step) and step <= up_to_step:
                rows.append(row)
    return rows, bad


class RunLog:
    """metrics.csv, evaluations.csv and TensorBoard, appended to across resumes."""

    def __init__(self, run_dir: Path, from_step: int | None, metric_names: tuple[str, ...]):
        from torch.utils.tensorboard import SummaryWriter

        self.metrics = self._open(
            run_dir / "metrics.csv", LOG_COLUMNS + tuple(metric_names), from_step
        )
        self.evals = self._open(run_dir / "evaluations.csv", EVAL_COLUMNS, from_step)
        # purge_step hides events logged after the checkpoint we resume from.
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=from_step)

    @staticmethod
    def _open(path: Path, columns: tuple[str, ...], from_step: int | None):
        """Open for appending; on resume drop rows written after the checkpoint's step.

        The trimmed log is written beside the old one and renamed over it, so a kill at any
        moment leaves either the old log or the new one, never a truncated file. Rows that do
        not parse (a crash mid-line) are dropped with a warning."""
        rows = []
        if from_step is not None and path.exists():
            rows, bad = _read_log_rows(path, from_step)
            if bad:
                print(
                    f"robustrl: warning: dropped {bad} damaged row(s) of {path}",
                    file=sys.stderr,
                )
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        handle = path.open("a", newline="")
        return handle, csv.DictWriter(handle, fieldnames=columns)

    def write_metrics(self, row: dict[str, Any]) -> None:
        handle, writer = self.metrics
        writer.writerow(row)
        handle.flush()
        step = row["step"]
        for key, value in row.items():
            if key != "step" and value != "" and value is not None:
                group = (
                    "train"
                    if key in ("episode_return", "episodes")
                    else "perf"
                    if key in ("steps_per_s", "time_s")
                    else "losses"
                )
                self.tb.add_scalar(f"{group}/{key}", value, step)

    def write_eval(self, step: int, result) -> None:
        handle, writer = self.evals
        writer.writerow(
            {
                "step": step,
                "mean": result.mean,
                "std": result.std,
                "min": result.min,
                "max": result.max,
            }
        )
        handle.flush()
        self.tb.add_scalar("eval/return_mean", result.mean, step)
        self.tb.add_scalar("eval/return_std", result.std, step)

    def close(self) -> None:
        self.metrics[0].close()
        self.evals[0].close()
        self.tb.close()


class Trainer:
    """One run: builds everything from the config, then loops until ``config.steps``."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        save_buffer: bool = False,
        progress: bool = True,
        resume: bool = False,
        env_factory: Callable[[], gym.Env] | None = None,
    ):
        """``env_factory`` replaces ``make_env(config.env)`` (e.g. an attacker's environment
        wrapping a frozen victim); it must return a new env with Box spaces at each call."""
        self.config, self.run_dir = config, Path(run_dir)
        self.save_buffer, self.progress, self.resuming = save_buffer, progress, resume
        if not resume:  # schedules become env steps of this run (a resume keeps config.json's)
            config.resolve_schedules()
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)  # warm-up actions
        if env_factory is None:
            self.env = make_env(config.env, seed=config.seed, **config.env_kwargs)
            self.eval_env = make_env(config.env, seed=config.seed + 1, **config.env_kwargs)
            self.make_env = lambda: make_env(config.env, **config.env_kwargs)
        else:
            self.make_env = env_factory
            self.env, self.eval_env = env_factory(), env_factory()
            self.env.action_space.seed(config.seed)
        obs_space, act_space = self.env.observation_space, self.env.action_space
        self.obs_dim, self.act_dim = obs_space.shape[0], act_space.shape[0]
        self.act_space: gym.spaces.Box = act_space
        self.normalizer = RunningNormalizer(
            self.obs_dim, config.normalizer.clip, config.normalizer.enabled
        )
        self.agent = make_agent(config, self.obs_dim, self.act_dim, compile=config.use_compile())
        self.buffer = make_replay(
            config.replay,
            self.obs_dim,
            self.act_dim,
            seed=config.seed + 2,
            capacity=min(config.replay.capacity, config.steps),
        )
        self.policy = Policy(self.agent, self.normalizer, act_space.low, act_space.high, config)
        self.step = 0
        self.episodes = 0
        self.refill_steps = 0  # env steps spent re-filling the buffer after resumes
        self.obs: np.ndarray | None = None
        self.rng_before_reset: dict[str, Any] | None = None
        self.at_episode_start = False

    # ------------------------------------------------------------------ persistence

    def spaces(self) -> dict[str, Any]:
        return {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "action_low": self.act_space.low.tolist(),
            "action_high": self.act_space.high.tolist(),
        }

    def save(self) -> None:
        agent = self.agent
        optim = {"rng.torch": torch.get_rng_state()}
        for name, optimizer in agent.optimizers().items():
            optim.update(checkpoint.optimizer_tensors(name, optimizer))
        state = {
            "step": self.step,
            "episodes": self.episodes,
            "refill_steps": self.refill_steps,
            "env": self.config.env,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "optim_groups": {
                name: o.state_dict()["param_groups"] for name, o in agent.optimizers().items()
            },
            "rng": {
                "warmup": self.rng.bit_generator.state,
                "replay": self.buffer.rng.bit_generator.state,
                "env": self.env.unwrapped.np_random.bit_generator.state,
                "env_before_reset": self.rng_before_reset,
                "env_action_space": self.env.action_space.np_random.bit_generator.state,
            },
            # At an episode boundary the next episode's start is reproduced exactly on resume
            # (reset again from the RNG state before the reset); mid-episode, the env's internal
            # state cannot be saved in general, so resume starts a new episode.
            "at_episode_start": self.at_episode_start,
            "compile_seconds": agent.compile_seconds,
            "versions": versions(),
        }
        buffer = self.buffer.state_dict() if self.save_buffer else None
        checkpoint.save(
            self.run_dir, self.step, model_tensors(agent, self.normalizer), optim, state, buffer
        )

    def restore(self) -> None:
        """Load the newest intact checkpoint; a damaged newer one is skipped with a warning
        (the run then continues from the older one, and its logs are trimmed to match)."""
        folders = checkpoint.candidates(self.run_dir)
        for index, folder in enumerate(folders):
            try:
                self._restore_from(folder)
                break
            except CheckpointError as exc:
                if index == len(folders) - 1:
                    raise
                print(
                    f"robustrl: warning: skipping damaged checkpoint {folder.name} ({exc}); "
                    f"resuming from {folders[index + 1].name}",
                    file=sys.stderr,
                )
        self._restore_buffer()

    def _restore_from(self, folder: Path) -> None:
        state = checkpoint.read_json(folder / "state.json")
        if (
            state.get("env") != self.config.env
            or state.get("obs_dim") != self.obs_dim
            or state.get("act_dim") != self.act_dim
        ):
            raise CheckpointError(
                f"{folder} was saved for {state.get('env')} (obs_dim={state.get('obs_dim')}, "
                f"act_dim={state.get('act_dim')}), not {self.config.env} "
                f"(obs_dim={self.obs_dim}, act_dim={self.act_dim})"
            )
        load_model(
            self.agent,
            self.normalizer,
            checkpoint.read_tensors(folder / "model.safetensors"),
            folder,
        )
        optim = checkpoint.read_tensors(folder / "optim.safetensors")
        try:
            optimizers = self.agent.optimizers()
            for name, groups in state["optim_groups"].items():
                checkpoint.load_optimizer(name, optimizers[name], optim, groups)
            torch.set_rng_state(optim["rng.torch"])
            self.rng.bit_generator.state = state["rng"]["warmup"]
            self.buffer.rng.bit_generator.state = state["rng"]["replay"]
            env_rng = (
                state["rng"]["env_before_reset"]
                if state.get("at_episode_start")
                else state["rng"]["env"]
            )
            self.env.unwrapped.np_random.bit_generator.state = env_rng
            self.env.action_space.np_random.bit_generator.state = state["rng"]["env_action_space"]
            self.step, self.episodes = int(state["step"]), int(state["episodes"])
            self.refill_steps = int(state.get("refill_steps", 0))
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(
                f"{folder}: incomplete or corrupt training state ({exc!r})"
            ) from None

    def _restore_buffer(self) -> None:
        saved = (
            checkpoint.load_buffer(self.run_dir)
            if checkpoint.buffer_step(self.run_dir) == self.step
            else None
        )
        if saved is not None:
            try:
                self.buffer.load_state_dict(saved)
            except (KeyError, ValueError) as exc:
                raise CheckpointError(
                    f"{self.run_dir}/checkpoints/buffer.safetensors: {exc}"
                ) from None
            self.say(
                f"resumed at step {self.step} with the saved replay buffer ({len(self.buffer)} transitions)"
            )
        else:
            self.refill()

    def refill(self) -> None:
        """Without a saved buffer, collect fresh transitions with the current policy (no updates)."""
        n = min(self.step, max(self.config.learning_starts, self.agent.batch_size))
        self.agent.on_step(self.step, self.config.steps)
        self.say(
            f"resumed at step {self.step} without a saved replay buffer (use --save-buffer to keep it): "
            f"re-filling {n} transitions with the current policy; they are not counted as training steps"
        )
        obs = self.reset_env()
        for _ in range(n):
            action = self.choose_action(obs)
            next_obs, reward, terminated, truncated, _ = self.env.step(
                scale_action(action, self.act_space)
            )
            self.buffer.add(obs, action, reward, next_obs, float(terminated))
            obs = self.reset_env() if terminated or truncated else next_obs
        self.refill_steps += n
        self.obs = obs

    def say(self, message: str) -> None:
        if self.progress:
            tqdm.write(f"robustrl: {message}")

    # ------------------------------------------------------------------ loop

    def reset_env(self, seed: int | None = None) -> np.ndarray:
        self.rng_before_reset = dict(self.env.unwrapped.np_random.bit_generator.state)
        self.at_episode_start = True
        return self.env.reset(seed=seed)[0]

    def choose_action(self, obs: np.ndarray) -> np.ndarray:
        if self.step < self.config.learning_starts:
            return self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
        batch = torch.from_numpy(self.normalizer.normalize(obs)[None]).to(self.agent.device)
        return self.agent.explore(batch)[0].cpu().numpy()

    def learn(self) -> torch.Tensor:
        cfg = self.config
        progress = self.step / (cfg.replay.importance_steps or cfg.steps)
        batch, index = self.buffer.sample(self.agent.batch_size, progress=progress)
        batch["obs"] = self.normalizer.normalize(batch["obs"])
        batch["next_obs"] = self.normalizer.normalize(batch["next_obs"])
        device = self.agent.device
        tensors = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}
        metrics, td_abs = self.agent.update(tensors)
        if self.buffer.prioritized:  # the only per-step device-to-host copy
            self.buffer.update_priorities(index, td_abs.cpu().numpy())
        return metrics

    def run(self) -> Path:
        with runlock.locked(self.run_dir, "training"):
            return self._run()

    def _run(self) -> Path:
        cfg = self.config
        if not self.resuming:  # a concurrent start of the same new run may have won the race
            _refuse_existing(self.run_dir)
        checkpoint.remove_temporaries(self.run_dir)  # left by a kill or a full disk
        # before restore: a resumed run's buffer refill already collects with the adversary
        self.agent.attach(TrainingContext(self.make_env, self.normalizer, cfg.steps, cfg.seed))
        if self.resuming:
            self.restore()
        sessions = []
        if self.resuming:  # keep the record of earlier sessions of this run
            with contextlib.suppress(CheckpointError):
                sessions = list(
                    checkpoint.read_json(self.run_dir / "config.json").get("sessions", [])
                )
        sessions.append(session_record(cfg, self.step))
        config_json = {
            "config": cfg.to_dict(),
            "spaces": self.spaces(),
            "versions": versions(),
            "sessions": sessions,
        }
        checkpoint.write_json(self.run_dir / "config.json", config_json)
        log = RunLog(self.run_dir, self.step if self.resuming else None, self.agent.metric_names)
        previous_handler = _stop_on_sigterm()
        try:
            self._loop(log)
        except KeyboardInterrupt:
            self.save()
            print(
                f"robustrl: interrupted: saved step {self.step}; continue with "
                f"`robustrl train --resume {self.run_dir}`",
                file=sys.stderr,
            )
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            log.close()
            self.env.close()
            self.eval_env.close()
        return self.run_dir

    def _loop(self, log: RunLog) -> None:
        cfg = self.config
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        obs = (
            self.obs
            if self.obs is not None
            else self.reset_env(seed=cfg.seed if self.step == 0 else None)
        )
        self.obs = obs
        episode_return, finished = 0.0, []
        metric_sum, updates = torch.zeros(len(self.agent.metric_names), device=self.agent.device), 0
        window_start, window_step, paused = time.perf_counter(), self.step, 0.0
        run_start = time.perf_counter()
        if self.step == 0 and cfg.eval_every:
            paused += self._evaluate(log)
        while self.step < cfg.steps:
            self.agent.on_step(self.step, cfg.steps)
            self.normalizer.update(obs)
            action = self.choose_action(obs)
            next_obs, reward, terminated, truncated, _ = self.env.step(
                scale_action(action, self.act_space)
            )
            self.buffer.add(obs, action, reward, next_obs, float(terminated))
            episode_return += float(reward)
            obs, self.at_episode_start = next_obs, False
            if terminated or truncated:
                finished.append(episode_return)
                self.episodes += 1
                bar.set_postfix(ret=f"{episode_return:.1f}", refresh=False)
                episode_return = 0.0
                obs = self.reset_env()
            self.obs = obs
            self.step += 1
            if self.step >= cfg.learning_starts and len(self.buffer) >= self.agent.batch_size:
                metric_sum += self.learn()
                updates += 1
                if updates == 1 and self.agent.compiled:
                    self.say(f"compiled the update step in {self.agent.compile_seconds:.1f}s")
            if self.step % 100 == 0 or self.step == cfg.steps:
                bar.update(self.step - bar.n)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                elapsed = time.perf_counter() - window_start - paused
                row: dict[str, Any] = {
                    "step": self.step,
                    "episodes": self.episodes,
                    "episode_return": float(np.mean(finished)) if finished else "",
                    "steps_per_s": (self.step - window_step) / max(elapsed, 1e-9),
                    "time_s": time.perf_counter() - run_start,
                }
                if updates:
                    means = (metric_sum / updates).tolist()
                    bad = [
                        k for k, v in zip(self.agent.metric_names, means) if not math.isfinite(v)
                    ]
                    if bad:
                        raise TrainingDiverged(
                            f"training diverged at step {self.step}: {', '.join(bad)} not finite"
                        )
                    row.update(zip(self.agent.metric_names, means))
                log.write_metrics(row)
                finished, metric_sum, updates = (
                    [],
                    torch.zeros(len(self.agent.metric_names), device=self.agent.device),
                    0,
                )
                window_start, window_step, paused = time.perf_counter(), self.step, 0.0
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                paused += self._evaluate(log)
            if (
                cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
            ) or self.step == cfg.steps:
                start = time.perf_counter()
                self.save()
                paused += time.perf_counter() - start
        bar.close()

    def _evaluate(self, log: RunLog) -> float:
        start = time.perf_counter()
        result = evaluate(
            self.policy,
            self.eval_env,
            self.config.eval_episodes,
            deterministic=True,
            seed=self.config.seed + 1,
        )
        log.write_eval(self.step, result)
        self.say(f"step {self.step}: eval return {result.mean:.1f} +- {result.std:.1f}")
        return time.perf_counter() - start
