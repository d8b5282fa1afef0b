"""SAC-PPO (ATLA with a SAC agent) and PA-SAC-PPO: a PPO adversary trained on -r (ALGORITHMS.md §3).

The adversary is a PPO policy (``robustrl.ppo``) on the TRUE normalised observation ``o``. Its raw
Gaussian output ``u`` becomes the perturbed observation in one of two ways:

- SAC-PPO (``director=False``): ``u`` has the observation's dimension and
  ``õ = o + eps * hardtanh(u)`` (projected on ``B_eps(o)`` so the bound holds exactly in float32);
- PA-SAC-PPO (``director=True``): ``u`` has the action's dimension, ``d = u / |u|_2`` is a direction
  in the agent's action space, and PA-AD's FGSM actor (``attacks.learned.fgsm_actor``, random
  start 0.1 eps, mirror candidate on) turns it into the ``õ`` that pushes the agent's mean action
  along ``d`` (ALGORITHMS.md §4).

Hooks: (B) ``behaviour`` perturbs each row with probability ``behaviour_ratio`` (rho, paper 0.5);
(E) ``target`` and (I) ``actor`` give SAC one sampled ``õ`` per row (``Mixture.point``, detached:
the agent's losses never reach the adversary).

Learning (L) is on-policy, with EXTRA environment steps, alternating with the agent. The run's
agent steps are divided evenly among ``ppo_iterations`` iterations: one iteration runs before
agent step ``s`` (in ``on_step``) whenever ``s % interval == 0`` with
``interval = max(1, total_steps // ppo_iterations)`` and ``s >= learning_starts``. An iteration
collects ``ppo.steps_per_iteration`` transitions in the adversary's own environment (one made
once from the training context), where the frozen agent acts on ``õ`` with sampled actions, the
adversary is rewarded ``-r`` and observations are normalised by the agent's normaliser (never
updated here); then one ``PPO.update``. Cost: ``steps_per_iteration`` extra env steps per
iteration, at most ``steps_per_iteration * ppo_iterations`` in a run (paper: 2048 * 2441, about
5M extra steps for a 1M-step run; Ant 2048 * 4882), logged as ``adversary_env_steps``.

Paper values: the PPO adversary and its perturbation map, reward ``-r``, 2048 steps per iteration,
2441 iterations (Ant 4882), rho 0.5, HalfCheetah's lr 3e-5 / value lr 1e-5 / entropy 1e-3
(``--preset paper``). Documented choices (the paper does not say):

- iterations start at ``learning_starts`` (before it, the agent's own data comes from uniform
  random actions and the agent is untrained); the skipped slots are not made up, so a run does
  ``len(range(first multiple of interval >= learning_starts, total_steps, interval))``
  iterations;
- every iteration starts a fresh episode, reset with seed ``seed + 10_000 + k`` where ``k`` is the
  number of iterations done before (a checkpointed counter): an iteration is reproducible and a
  resumed run continues exactly; a partial episode at the end of a rollout is bootstrapped from
  the value of its last observation;
- the agent acts with sampled actions (its behaviour policy), not its mean action;
- ``adversary_return`` is the agent's mean return over the episodes the last iteration completed
  (its partial return if none completed), 0 before the first iteration; it and every counter
  are persistent buffers, so checkpoints keep them;
- resuming with a larger ``steps`` changes ``interval`` from then on (the same even division of
  the new run);
- PA-SAC-PPO's (B) hook needs the agent: before ``attach`` (the training loop refills the replay
  buffer of a resumed run before it attaches the adversary) it returns the clean observation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from robustrl.adversaries import Adversary, Mixture, TrainingContext
from robustrl.attacks.learned import fgsm_actor, sa_rl_perturbation, unit_direction
from robustrl.config import TrainConfig
from robustrl.envs import scale_action
from robustrl.ppo import PPO, Rollout
from robustrl.threat import ObservationBall

SEED_OFFSET = 10_000  # adversary env seeds: config.seed + SEED_OFFSET + iteration


class _MeanAction:
    """The part of a ``PolicyView`` that ``fgsm_actor`` uses: the agent's mean action."""

    def __init__(self, actor):
        self.mean_action = actor.mean_action


class PPOAdversary(Adversary):
    """A PPO policy on ``o`` that perturbs it to ``õ`` (SAC-PPO) or directs PA-AD's FGSM actor."""

    metric_names = ("adversary_return", "adversary_env_steps")

    def __init__(
        self,
        config: TrainConfig,
        obs_dim: int,
        act_dim: int,
        director: bool = False,
        in_target: bool = True,
        in_actor: bool = True,
    ):
        super().__init__(in_target, in_actor)
        adv = config.adversary
        self.eps, self.director = float(adv.eps), director
        self.ball = ObservationBall(self.eps)
        self.behaviour_ratio = adv.behaviour_ratio
        self.iterations_per_run = adv.ppo_iterations
        self.learning_starts = config.learning_starts
        self.steps_per_iteration = adv.ppo.steps_per_iteration
        self.obs_dim = obs_dim
        self.ppo = PPO(obs_dim, act_dim if director else obs_dim, adv.ppo)
        # Counters and the last reported return: persistent, so checkpoints keep them.
        self.register_buffer("env_steps", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("iterations", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("last_step", torch.tensor(-1, dtype=torch.int64))
        self.register_buffer("last_return", torch.tensor(0.0))
        self.context: TrainingContext | None = None
        self.env = None  # the adversary's own environment, made at its first iteration
        # The agent owns this adversary: a plain attribute (not a submodule), or the agent's
        # state_dict would recurse into itself.
        object.__setattr__(self, "agent", None)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.ppo.policy_optim, "value": self.ppo.value_optim}

    def attach(self, agent, context: TrainingContext) -> None:
        object.__setattr__(self, "agent", agent)
        self.context = context

    # ------------------------------------------------------------------ the perturbation

    def perturb(self, obs: torch.Tensor, u: torch.Tensor, agent) -> torch.Tensor:
        """``õ`` in ``B_eps(obs)`` (B, obs_dim) for raw PPO outputs ``u``; detached."""
        if self.director:
            view = _MeanAction(agent.actor)
            return fgsm_actor(view, self.ball, obs, unit_direction(u)).detach()
        return sa_rl_perturbation(self.ball, obs, F.hardtanh(u)).detach()

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, agent) -> torch.Tensor:
        """One ``õ`` per row with ``u`` sampled from the PPO policy, (B, obs_dim)."""
        u = self.ppo.policy.distribution(obs).sample()
        return self.perturb(obs, u, agent)

    def behaviour(self, obs: torch.Tensor) -> torch.Tensor:
        if self.director and self.agent is None:
            return obs  # not attached yet (see the module docstring)
        perturbed = torch.rand(obs.shape[0], 1, device=obs.device) < self.behaviour_ratio
        return torch.where(perturbed, self.sample(obs, self.agent), obs)

    def target(self, next_obs: torch.Tensor, agent) -> Mixture:
        return Mixture.point(self.sample(next_obs, agent))

    def actor(self, obs: torch.Tensor, agent) -> Mixture:
        return Mixture.point(self.sample(obs, agent))

    # ------------------------------------------------------------------ learning

    def learn(self, batch: dict[str, torch.Tensor], agent) -> torch.Tensor:
        """No learning here (PPO learns in ``on_step``): (adversary_return, adversary_env_steps)."""
        return torch.stack([self.last_return, self.env_steps.float()])

    def on_step(self, step: int, total_steps: int) -> None:
        """Run one PPO iteration when ``step`` is on the schedule (module docstring)."""
        interval = max(1, total_steps // self.iterations_per_run)
        if step < self.learning_starts or step % interval != 0 or self.context is None:
            return
        if step > int(self.last_step):  # not twice for one step (a resume calls on_step again)
            self.iterate()
            self.last_step.fill_(step)

    def iterate(self) -> dict[str, float]:
        """Collect one rollout against the frozen agent, update PPO; returns PPO's metrics and
        the agent's mean episode return under attack (``agent_return``)."""
        agent, context = self.agent, self.context
        if agent is None or context is None:
            raise RuntimeError("PPOAdversary.iterate needs attach(agent, context) first")
        if self.env is None:
            self.env = context.make_env()
        env, normalizer, device = self.env, context.normalizer, self.env_steps.device

        def observe(raw: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(normalizer.normalize(raw), device=device)

        n = self.steps_per_iteration
        rollout = Rollout(n, self.obs_dim, self.ppo.act_dim, device)
        obs = observe(env.reset(seed=context.seed + SEED_OFFSET + int(self.iterations))[0])
        returns, episode_return = [], 0.0
        for _ in range(n):
            u, log_prob, value = self.ppo.act(obs[None])
            with torch.no_grad():
                action = agent.actor.sample(self.perturb(obs[None], u, agent))[0]
            env_action = scale_action(action[0].cpu().numpy(), env.action_space)
            raw, reward, terminated, truncated, _ = env.step(env_action)
            next_obs = observe(raw)
            rollout.add(obs, u[0], log_prob[0], value[0], -reward, next_obs, terminated, truncated)
            episode_return += float(reward)
            if terminated or truncated:
                returns.append(episode_return)
                episode_return = 0.0
                next_obs = observe(env.reset()[0])
            obs = next_obs
        metrics = self.ppo.update(rollout)
        metrics["agent_return"] = float(np.mean(returns)) if returns else episode_return
        self.last_return.fill_(metrics["agent_return"])
        self.env_steps += n
        self.iterations += 1
        return metrics
