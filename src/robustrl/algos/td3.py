"""TD3 and OA-TD3, the action-robust TD3 of OA-PI (paper 000; ALGORITHMS.md §1 and §5).

TD3 (Fujimoto et al. 2018): a deterministic actor ``a = tanh(MLP(o))``, fused twin critics with
clipped double-Q, target policy smoothing, an MSE critic loss weighted by the replay importance
weights, and *delayed* actor and target updates: the actor and every target network move once
every ``policy_delay`` critic updates. Exploration noise is part of the behaviour policy
(``act(obs, deterministic=False)``), not of the update.

OA-TD3 adds an optimal-adversary-aware (OA) twin critic trained on the OA Bellman target
``y_oa = r + gamma (1 - d) min_{|delta|_inf <= eps_a} Q_oa'(s', clip(pi'(s') + delta))``, whose
inner minimum is solved by PGD over ``delta`` (``worst_delta``), and an actor that follows
``(1 - w) g_nom + w g_oa``, with PCGrad gradient surgery (``pcgrad``) when the two conflict.

Update order (``td3.update_order``): ``sequential`` (default, the reference TD3 order) steps the
critics before the actor's gradients are computed, so the actor follows the critics updated on
this batch; ``fused`` computes every gradient before any step. Like SAC, one gradient update is
one function (``_update``, compiled with ``torch.compile`` when
asked); no value leaves the tensor world inside it (no ``.item()``).

Delayed updates. Whether an update also moves the actor and the targets is decided *outside*
the update function, from a plain Python counter ``num_updates`` (the number of updates done so
far): update number ``n = 1, 2, ...`` is an actor step when ``n % policy_delay == 0`` (as in the
reference implementation and Stable-Baselines3, so the first actor step is the
``policy_delay``-th update). The decision reaches ``_update`` as a Python bool, so reading the
counter never synchronises with the device, and a compiled step specialises into (at most) two
graphs. The counter is checkpointed with the networks (``get_extra_state``), so a resumed run
keeps the same phase.

Metrics. On updates without an actor step, the actor's metrics (``ACTOR_METRICS``) repeat the
values of the most recent actor step (0.0 before the first one); they are finite either way,
and averaged over a log window they equal the average over its actor steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from robustrl.config import OAConfig, TD3Config
from robustrl.nets import DeterministicActor, TwinQ
from robustrl.threat import ActionBall

METRICS = ("critic_loss", "actor_loss", "q_mean", "target_q")
OA_METRICS = METRICS + (
    "oa_critic_loss",
    "oa_actor_loss",
    "oa_q_mean",
    "oa_target_q",
    "grad_cos",  # cosine between g_nom and g_oa (before surgery)
    "conflict",  # 1.0 when g_nom . g_oa < 0 (averaged: the fraction of conflicting actor steps)
)
# Metrics only computed on actor steps: repeated from the last actor step otherwise.
ACTOR_METRICS = ("actor_loss", "oa_actor_loss", "grad_cos", "conflict")


# ---------------------------------------------------------------------- OA building blocks


def pcgrad(g1: torch.Tensor, g2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad (Yu et al. 2020) for two flattened gradients (ALGORITHMS.md §5).

    When ``g1 . g2 < 0`` each is replaced by its projection on the normal plane of the *other
    original* gradient, ``g_i <- g_i - (g_i . g_j / |g_j|^2) g_j``; otherwise both pass through
    unchanged. Afterwards ``g_i' . g_j = 0`` and ``g_i' . g_i = |g_i|^2 - (g_i . g_j)^2 / |g_j|^2
    >= 0`` (Cauchy-Schwarz). Branch-free (``torch.where``), so it runs without a host sync.
    """
    dot = torch.dot(g1, g2)
    conflict = dot < 0
    tiny = torch.finfo(g1.dtype).tiny
    p1 = g1 - dot / g2.square().sum().clamp_min(tiny) * g2
    p2 = g2 - dot / g1.square().sum().clamp_min(tiny) * g1
    return torch.where(conflict, p1, g1), torch.where(conflict, p2, g2)


def worst_delta(
    q_fn: Callable[[torch.Tensor], torch.Tensor],
    action: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD for ``min_{|delta|_inf <= eps} q_fn(clip(action + delta, -1, 1))``, per row.

    ``q_fn`` maps executed actions (B, act_dim) to values (B,); ``action`` (B, act_dim) in
    [-1, 1] is treated as a constant. Every ``delta`` is kept in the feasible box
    ``[max(-eps, -1 - a), min(eps, 1 - a)]``: the L-inf ball intersected with the deltas that
    keep ``a + delta`` inside the action bounds. It reaches exactly the executed actions the
    clipped ball reaches, without the flat (zero-gradient) region where the clip is active.
    Random start in that box, ``steps`` signed-gradient steps of ``step_size`` each projected
    back onto it. Only input gradients are taken (``torch.autograd.grad`` w.r.t. ``delta``;
    ``q_fn`` should evaluate critics with detached weights). The best iterate is returned, the
    clean action (``delta = 0``) included, so the value is never above ``q_fn(action)``.

    Returns ``delta`` (B, act_dim) with ``|delta|_inf <= eps`` and its value (B,), detached.
    """
    action = action.detach()
    ball = ActionBall(eps)
    lo = (-1.0 - action).clamp(min=-eps)
    hi = (1.0 - action).clamp(max=eps)
    with torch.no_grad():
        best_delta = torch.zeros_like(action)
        best_q = q_fn(action)
    delta = lo + (hi - lo) * torch.rand_like(action)
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            q = q_fn(ball.apply(action, delta))
            (grad,) = torch.autograd.grad(q.sum(), delta)
        with torch.no_grad():
            better = q < best_q
            best_q = torch.where(better, q, best_q)
            best_delta = torch.where(better.unsqueeze(-1), delta, best_delta)
            delta = torch.minimum(torch.maximum(delta - step_size * grad.sign(), lo), hi)
    with torch.no_grad():
        q = q_fn(ball.apply(action, delta))
        better = q < best_q
        best_q = torch.where(better, q, best_q)
        best_delta = torch.where(better.unsqueeze(-1), delta, best_delta)
    return best_delta.detach(), best_q.detach()


# ---------------------------------------------------------------------- TD3


class TD3(nn.Module):
    """TD3 agent on normalised observations and actions in [-1, 1]^act_dim."""

    metric_names = METRICS

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: TD3Config,
        compile: bool = False,
        device: str = "cpu",
    ):
        super().__init__()
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        self.batch_size = config.batch_size
        hidden = list(config.hidden_sizes)
        self.actor = DeterministicActor(obs_dim, act_dim, hidden)
        self.actor_target = DeterministicActor(obs_dim, act_dim, hidden)
        self.critic = TwinQ(obs_dim, act_dim, hidden)
        self.critic_target = TwinQ(obs_dim, act_dim, hidden)
        self._build_extra(hidden)  # OA-TD3's networks
        for online, target in self._target_pairs():
            target.load_state_dict(online.state_dict())
            target.requires_grad_(False)
        self.to(device)
        self.device = torch.device(device)
        self.actor_optim = self._adam(self.actor, config.actor_lr)
        self.critic_optim = self._adam(self.critic, config.critic_lr)
        self._build_extra_optimizers()
        pairs = self._target_pairs()
        self._online = [p for online, _ in pairs for p in online.parameters()]
        self._target = [p for _, target in pairs for p in target.parameters()]
        # delayed updates: see the module docstring
        self.num_updates = 0
        self._actor_metrics = [n for n in self.metric_names if n in ACTOR_METRICS]
        self._actor_index = torch.tensor(
            [self.metric_names.index(n) for n in self._actor_metrics], device=self.device
        )
        self._last_actor = torch.zeros(len(self._actor_metrics), device=self.device)
        self.compiled = compile
        self.compile_seconds = 0.0
        if compile:
            # Draw noise with the eager RNG so compiled and eager runs give the same numbers.
            from torch._inductor import config as inductor_config

            inductor_config.fallback_random = True
        self._step_fn = torch.compile(self._update) if compile else self._update

    # hooks for OA-TD3
    def _build_extra(self, hidden: list[int]) -> None:
        pass

    def _build_extra_optimizers(self) -> None:
        pass

    def _target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.actor, self.actor_target), (self.critic, self.critic_target)]

    @staticmethod
    def _adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
        # fused Adam: one kernel over all parameters of a network
        return torch.optim.Adam(module.parameters(), lr=lr, fused=True)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name (checkpointed and restored by the training loop)."""
        return {"actor_optim": self.actor_optim, "critic_optim": self.critic_optim}

    # ------------------------------------------------------------------ checkpoint state

    def get_extra_state(self) -> torch.Tensor:
        """``num_updates`` and the last actor-step metrics, saved with the networks (float64:
        exact for counts below 2^53 and for the float32 metrics)."""
        count = torch.tensor([float(self.num_updates)], dtype=torch.float64)
        return torch.cat([count, self._last_actor.detach().double().cpu()])

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.num_updates = int(state[0].item())
        self._last_actor = state[1:].to(device=self.device, dtype=torch.float32)

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Action in [-1, 1] for normalised ``obs`` (B, obs_dim).

        The behaviour policy (``deterministic=False``) adds Gaussian exploration noise of std
        ``exploration_noise`` and clips to [-1, 1]; ``deterministic=True`` is ``pi(o)``.
        """
        action = self.actor(obs)
        if deterministic:
            return action
        noise = torch.randn_like(action) * self.config.exploration_noise
        return (action + noise).clamp(-1.0, 1.0)

    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """The behaviour policy that collects training data (the training loop calls this)."""
        return self.act(obs, deterministic=False)

    def on_step(self, step: int, total_steps: int) -> None:
        """No schedules: TD3's training is the same at every step."""

    def attach(self, context) -> None:
        """No adversary collects its own data."""

    # ------------------------------------------------------------------ learning

    def _critic_loss(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        weight: torch.Tensor,
        next_action: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nominal TD3 critic loss, Q (2, B), target (B,), TD error (2, B). ``next_action`` is
        ``pi'(s')`` when the caller has computed it (OA-TD3 shares it with its OA target)."""
        cfg = self.config
        with torch.no_grad():
            # Target policy smoothing (TD3; ALGORITHMS.md §5): a' = clip(pi'(s') + clip(N, -c, c)).
            if next_action is None:
                next_action = self.actor_target(next_obs)
            noise = torch.randn_like(next_action) * cfg.policy_noise
            next_action = (next_action + noise.clamp(-cfg.noise_clip, cfg.noise_clip)).clamp(
                -1.0, 1.0
            )
            # Clipped double-Q target: y = r + gamma (1 - d) min_i Q_i'(s', a').
            q_next = self.critic_target(next_obs, next_action).min(0).values
            target_q = reward + cfg.gamma * (1.0 - terminated) * q_next
        q = self.critic(obs, action)  # (2, B)
        td = q - target_q
        # MSE critic loss, importance-weighted for prioritised replay, summed over the twins.
        critic_loss = (td.square() * weight).mean(1).sum()
        return critic_loss, q, target_q, td

    def actor_loss(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic policy gradient (TD3): ``L_pi = -E[Q_1(s, pi(s))]``, the critic's
        weights detached (the actor loss gives the critic no gradient)."""
        return -self.critic.member(0, obs, self.actor(obs), detach=True).mean()

    def _polyak(self) -> None:
        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, self.config.tau)

    def _metrics(
        self, values: dict[str, torch.Tensor], last_actor: torch.Tensor, actor_step: bool
    ) -> torch.Tensor:
        if not actor_step:  # repeat the last actor step's metrics (module docstring)
            values.update(zip(self._actor_metrics, last_actor.unbind(0)))
        return torch.stack([values[n] for n in self.metric_names])

    def _update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        weight: torch.Tensor,
        last_actor: torch.Tensor,
        actor_step: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        critic_loss, q, target_q, td = self._critic_loss(
            obs, action, reward, next_obs, terminated, weight
        )
        values = {
            "critic_loss": critic_loss.detach(),
            "q_mean": q.detach().mean(),
            "target_q": target_q.mean(),
        }
        sequential = self.config.update_order == "sequential"
        self.critic_optim.zero_grad(set_to_none=True)
        total = critic_loss
        if sequential:  # reference TD3: the actor follows the critic updated on this batch
            critic_loss.backward()
            self.critic_optim.step()
            total = None
        if actor_step:
            actor_loss = self.actor_loss(obs)
            total = actor_loss if total is None else total + actor_loss
            values["actor_loss"] = actor_loss.detach()
        self.actor_optim.zero_grad(set_to_none=True)
        if total is not None:
            total.backward()
        if not sequential:
            self.critic_optim.step()
        if actor_step:
            self.actor_optim.step()
            self._polyak()
        return self._metrics(values, last_actor, actor_step), td.detach().abs().mean(0)

    def update(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One critic update, plus an actor and target update every ``policy_delay`` calls.

        ``batch`` holds ``obs`` (B, obs_dim), ``action`` (B, act_dim), ``reward`` (B,),
        ``next_obs`` (B, obs_dim), ``terminated`` (B,) and ``weight`` (B,) importance weights.
        Returns the metrics vector (len(metric_names),) and the mean |TD error| of the two
        nominal critics (B,) for new priorities.
        """
        start = time.perf_counter() if self.compiled and self.compile_seconds == 0.0 else None
        actor_step = (self.num_updates + 1) % self.config.policy_delay == 0
        metrics, td_abs = self._step_fn(
            batch["obs"],
            batch["action"],
            batch["reward"],
            batch["next_obs"],
            batch["terminated"],
            batch["weight"],
            self._last_actor,
            actor_step,
        )
        self.num_updates += 1
        if actor_step:
            self._last_actor = metrics[self._actor_index]
        if start is not None:  # the first call of a compiled step includes compilation
            self.compile_seconds = time.perf_counter() - start
        return metrics, td_abs


# ---------------------------------------------------------------------- OA-TD3


class OATD3(TD3):
    """TD3 plus an optimal-adversary-aware twin critic and a two-gradient actor (paper 000).

    The OA critic learns the value under the worst action perturbation ``|delta|_inf <= eps_a``
    (executed action ``clip(a + delta, -1, 1)``, ``robustrl.threat.ActionBall``). The actor's
    gradient is ``(1 - w) g_nom + w g_oa`` (PCGrad first when ``surgery`` and they conflict):

    - ``g_nom``: gradient of ``-E Q_1(s, pi(s))`` (TD3's actor loss);
    - ``g_oa``: gradient of ``-E Q_oa,1(s, clip(pi(s) + delta*))`` with ``delta*`` found by PGD on
      the current OA critic ``Q_oa,1`` at ``pi(s)`` and then held fixed, so the gradient flows
      through ``pi(s)`` only. ``Q_oa,1`` plays the role ``Q_1`` plays in TD3's actor loss.

    Both are computed from ``dL/da`` (input gradients through critics with detached weights)
    and a backward pass through the actor each, as flattened actor-parameter vectors.
    """

    metric_names = OA_METRICS

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: TD3Config,
        oa: OAConfig,
        compile: bool = False,
        device: str = "cpu",
    ):
        self.oa = oa
        self.pgd_step_size = (
            oa.pgd_step_size if oa.pgd_step_size is not None else 2.5 * oa.action_eps / oa.pgd_steps
        )
        super().__init__(obs_dim, act_dim, config, compile=compile, device=device)

    def _build_extra(self, hidden: list[int]) -> None:
        self.oa_critic = TwinQ(self.obs_dim, self.act_dim, hidden)
        self.oa_critic_target = TwinQ(self.obs_dim, self.act_dim, hidden)

    def _build_extra_optimizers(self) -> None:
        self.oa_critic_optim = self._adam(self.oa_critic, self.config.critic_lr)

    def _target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [*super()._target_pairs(), (self.oa_critic, self.oa_critic_target)]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "oa_critic_optim": self.oa_critic_optim}

    def oa_q_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Mean of the two OA critics (B,) for ``action`` at ``obs``."""
        return self.oa_critic(obs, action).mean(0)

    def worst_delta(
        self, critic_fn: Callable[[torch.Tensor], torch.Tensor], action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``worst_delta`` with this agent's budget, PGD steps and step size."""
        return worst_delta(
            critic_fn, action, self.oa.action_eps, self.oa.pgd_steps, self.pgd_step_size
        )

    def oa_target(
        self,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        next_action: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """OA Bellman target (paper 000; ALGORITHMS.md §5), (B,), no gradient:
        ``y_oa = r + gamma (1 - d) min_delta min_i Q_oa,i'(s', clip(pi'(s') + delta))``.

        PGD minimises the clipped double-Q ``min_i Q_oa,i'`` directly (the min over delta of
        the min over the twins is the min over the twins of the min over delta). The formula
        has no target smoothing noise; none is added. ``next_action`` is ``pi'(s')`` when the
        caller has it.
        """
        with torch.no_grad():
            if next_action is None:
                next_action = self.actor_target(next_obs)

            def q_next(a: torch.Tensor) -> torch.Tensor:
                return self.oa_critic_target(next_obs, a, detach=True).min(0).values

            _, worst = self.worst_delta(q_next, next_action)
            return reward + self.config.gamma * (1.0 - terminated) * worst

    def actor_gradients(
        self, obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flattened actor gradients of the nominal and OA actor losses (descent directions).

        Returns ``(g_nom, g_oa, actor_loss, oa_actor_loss)``, the gradients (n_actor_params,)
        in ``self.actor.parameters()`` order. No critic weight gradient is made.
        """
        action = self.actor(obs)  # (B, A), graph to the actor's weights
        a = action.detach().requires_grad_(True)
        # Nominal actor loss (TD3): L_nom = -E[Q_1(s, pi(s))].
        actor_loss = -self.critic.member(0, obs, a, detach=True).mean()

        def q_oa(x: torch.Tensor) -> torch.Tensor:
            return self.oa_critic.member(0, obs, x, detach=True)

        # delta* = argmin_delta Q_oa,1(s, clip(pi(s) + delta)) by PGD, then held fixed.
        delta, _ = self.worst_delta(q_oa, action)
        # OA actor loss (paper 000; ALGORITHMS.md §5): L_oa = -E[Q_oa,1(s, clip(pi(s) + delta*))].
        oa_actor_loss = -q_oa(ActionBall(self.oa.action_eps).apply(a, delta)).mean()
        (da_nom,) = torch.autograd.grad(actor_loss, a)
        (da_oa,) = torch.autograd.grad(oa_actor_loss, a)
        params = list(self.actor.parameters())
        # dL/dtheta = (da/dtheta)^T dL/da: one backward pass through the actor each, over one
        # retained graph; a compiled step recomputes the actor's forward for the second instead
        # (a compiled backward cannot be retained). One vmapped pass (``is_grads_batched``)
        # measured no faster on CPU and fails through a compiled backward.
        g_nom = torch.autograd.grad(
            action, params, grad_outputs=da_nom, retain_graph=not self.compiled
        )
        second = self.actor(obs) if self.compiled else action
        g_oa = torch.autograd.grad(second, params, grad_outputs=da_oa)
        flat = [torch.cat([g.reshape(-1) for g in grads]) for grads in (g_nom, g_oa)]
        return flat[0], flat[1], actor_loss.detach(), oa_actor_loss.detach()

    def _update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        weight: torch.Tensor,
        last_actor: torch.Tensor,
        actor_step: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            next_action = self.actor_target(next_obs)  # pi'(s'), for both targets
        critic_loss, q, target_q, td = self._critic_loss(
            obs, action, reward, next_obs, terminated, weight, next_action
        )
        oa_target_q = self.oa_target(reward, next_obs, terminated, next_action)
        oa_q = self.oa_critic(obs, action)  # (2, B)
        # OA critic loss (paper 000; ALGORITHMS.md §5): weighted MSE to y_oa, summed over the twins.
        oa_critic_loss = ((oa_q - oa_target_q).square() * weight).mean(1).sum()
        values = {
            "critic_loss": critic_loss.detach(),
            "q_mean": q.detach().mean(),
            "target_q": target_q.mean(),
            "oa_critic_loss": oa_critic_loss.detach(),
            "oa_q_mean": oa_q.detach().mean(),
            "oa_target_q": oa_target_q.mean(),
        }
        self.critic_optim.zero_grad(set_to_none=True)
        self.oa_critic_optim.zero_grad(set_to_none=True)
        (critic_loss + oa_critic_loss).backward()
        sequential = self.config.update_order == "sequential"
        if sequential:  # the actor's two gradients come from the critics updated on this batch
            self.critic_optim.step()
            self.oa_critic_optim.step()
        if actor_step:
            g_nom, g_oa, actor_loss, oa_actor_loss = self.actor_gradients(obs)
            dot = torch.dot(g_nom, g_oa)
            cos = dot / (g_nom.norm() * g_oa.norm()).clamp_min(torch.finfo(dot.dtype).tiny)
            if self.oa.surgery:  # PCGrad when g_nom . g_oa < 0 (paper 000; ALGORITHMS.md §5)
                g_nom, g_oa = pcgrad(g_nom, g_oa)
            # Actor direction (paper 000; ALGORITHMS.md §5): (1 - w) g_nom + w g_oa.
            grad = (1.0 - self.oa.weight) * g_nom + self.oa.weight * g_oa
            offset = 0
            for p in self.actor.parameters():
                n = p.numel()
                p.grad = grad[offset : offset + n].view_as(p).clone()
                offset += n
            values.update(
                actor_loss=actor_loss,
                oa_actor_loss=oa_actor_loss,
                grad_cos=cos,
                conflict=(dot < 0).to(dot.dtype),
            )
        if not sequential:
            self.critic_optim.step()
            self.oa_critic_optim.step()
        if actor_step:
            self.actor_optim.step()
            self._polyak()
        return self._metrics(values, last_actor, actor_step), td.detach().abs().mean(0)
