"""Neural networks: MLP, squashed-Gaussian actor, fused twin Q critic.

All networks take *normalised* observations (see ``envs.RunningNormalizer``) and work in the
normalised action space [-1, 1]^dim(A). Tensors are float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2 = math.log(2.0)


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    """ReLU MLP ``in_dim -> hidden... -> out_dim`` (no output activation)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class SquashedGaussianActor(nn.Module):
    """``a = tanh(u)``, ``u ~ N(mu(o), sigma(o))`` with log-std clipped (ALGORITHMS.md §2)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: list[int],
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim)
        self.act_dim = act_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-squash mean and log-std, each (B, act_dim). Differentiable in ``obs``."""
        mu, log_std = self.net(obs).chunk(2, dim=-1)
        return mu, log_std.clamp(self.log_std_min, self.log_std_max)

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``tanh(mu(o))``, (B, act_dim)."""
        return torch.tanh(self.gaussian(obs)[0])

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample ``a`` (B, act_dim) and its log-probability (B,)."""
        mu, log_std = self.gaussian(obs)
        noise = torch.randn_like(mu)
        u = mu + log_std.exp() * noise
        # log N(u; mu, sigma) - sum log(1 - tanh(u)^2); the second term in the stable form
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (LOG_2 - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_action(obs)


class DeterministicActor(nn.Module):
    """TD3's deterministic policy ``a = tanh(MLP(o))`` in [-1, 1]^act_dim (ALGORITHMS.md §5).

    ``mean_action`` is the action itself, so code written for ``SquashedGaussianActor``'s
    deterministic action (``Policy``, views, attacks) works unchanged.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.act_dim = act_dim

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The action ``tanh(MLP(o))``, (B, act_dim). Differentiable in ``obs``."""
        return torch.tanh(self.net(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_action(obs)


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers evaluated as one batched matmul: (n, B, in) -> (n, B, out)."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # same init as nn.Linear
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if x.dim() == 2:  # shared input for every member
            x = x.unsqueeze(0).expand(w.shape[0], -1, -1)
        return torch.baddbmm(b, x, w)


class TwinQ(nn.Module):
    """Fused twin critics ``Q_1, Q_2`` (ALGORITHMS.md §2): one batched MLP, output (2, B).

    ``detach=True`` evaluates with detached weights, so a loss (the actor's) can differentiate
    through the critic with respect to its *input* without producing critic weight gradients.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], n: int = 2):
        super().__init__()
        dims = [obs_dim + act_dim, *hidden, 1]
        self.layers = nn.ModuleList(EnsembleLinear(n, i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, detach: bool = False
    ) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        for i, layer in enumerate(self.layers):
            x = layer(x, detach)
            if i < len(self.layers) - 1:
                x = F.relu(x, inplace=True)
        return x.squeeze(-1)

    def member(
        self, index: int, obs: torch.Tensor, action: torch.Tensor, detach: bool = False
    ) -> torch.Tensor:
        """``Q_index(obs, action)`` alone, (B,): equal to ``forward(...)[index]`` at half the
        work of the fused pair (TD3's actor loss and PGD on one critic need only ``Q_1``)."""
        x = torch.cat([obs, action], dim=-1)
        for i, layer in enumerate(self.layers):
            w, b = layer.weight[index], layer.bias[index]
            if detach:
                w, b = w.detach(), b.detach()
            x = torch.addmm(b, x, w)
            if i < len(self.layers) - 1:
                x = F.relu(x, inplace=True)
        return x.squeeze(-1)
