"""Planners over the rollout protocol of ``worldmodel.imagination``: gradient MPC and CEM (SPEC.md §4).

Both plan a sequence of T normalised actions for each of B contexts, execute the first, and warm-start the
next plan from the current one shifted by one step (the last action repeated). Both score a plan with the
policy objective (``Imagination.objective``: discounted costs + uncertainty), averaged over sampled futures
(prior z). Where a policy acts, a planner can: ``worldmodel.evaluation.model_drivers`` wraps both as drivers.

- ``GradientMPC``: PPUU's back-prop MPC: ``samples`` futures (z), ``iterations`` Adam steps at ``lr`` on the
  action buffer per control step, gradient norm clipped (1), actions clamped at +-3 sigma.
- ``CEM``: cross-entropy method: ``population`` Gaussian candidates around the current mean, the ``elites``
  cheapest refit the mean and std, ``iterations`` times; no gradients.

Shapes: B contexts, T horizon, P population, K sampled futures. Actions normalised (the model's statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import repeat
from torch import Tensor

from worldmodel.costs import discounted_mean, uncertainty_cost
from worldmodel.imagination import Context, Imagination


@dataclass(frozen=True)
class GradientMPCConfig:
    """Back-prop MPC (SPEC §4 values by default)."""

    horizon: int = 30
    """T: planned steps."""
    samples: int = 10
    """K: sampled futures (z draws) the plan is averaged over."""
    iterations: int = 5
    """Adam steps per control step."""
    lr: float = 0.1
    """Adam learning rate on the normalised actions."""
    grad_clip: float = 1.0
    """Gradient-norm clip of the action buffer."""
    replicas: int = 10
    """Dropout replicas of the uncertainty cost (when its weight is > 0)."""
    uncertainty_weight: float | None = None
    """Weight of U; None: the cost config's (0.05)."""
    action_clamp: float = 3.0
    """Normalised actions are kept in [-clamp, clamp]."""

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.samples < 1 or self.iterations < 1 or self.lr <= 0 or self.replicas < 2:
            raise ValueError("GradientMPCConfig: horizon, samples, iterations >= 1, lr > 0, replicas >= 2")


@dataclass(frozen=True)
class CEMConfig:
    """Cross-entropy method."""

    horizon: int = 30
    """T: planned steps."""
    population: int = 64
    """P: candidate action sequences per iteration."""
    elites: int = 8
    """Cheapest candidates that refit the distribution."""
    iterations: int = 3
    """Refits per control step."""
    samples: int = 1
    """K: sampled futures (z draws) per candidate."""
    init_std: float = 1.0
    """Std of the first distribution (normalised units); later plans start from max(std, min_std)."""
    min_std: float = 0.2
    """Floor of the std at the start of each control step (keeps exploring)."""
    replicas: int = 10
    """Dropout replicas of the uncertainty cost (when its weight is > 0)."""
    uncertainty_weight: float | None = 0.0
    """Weight of U; 0 by default (P x K x replicas rollouts per iteration is costly); None: the cost config's."""
    action_clamp: float = 3.0
    """Normalised actions are kept in [-clamp, clamp]."""

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.population < 2 or not 1 <= self.elites <= self.population or self.iterations < 1:
            raise ValueError("CEMConfig: horizon >= 1, population >= 2, 1 <= elites <= population, iterations >= 1")


def _expand(context: Context, k: int) -> Context:
    """Each context repeated k times (sample-major): [B, ...] -> [(B k), ...]."""
    rep = lambda x: repeat(x, "b ... -> (b k) ...", k=k)  # noqa: E731
    return Context(rep(context.images), rep(context.states), rep(context.car_size), rep(context.ego_mask))


def plan_cost(
    imagination: Imagination,
    context: Context,
    actions: Tensor,
    z: Tensor | None,
    replicas: int,
    uncertainty_weight: float | None,
) -> Tensor:
    """Objective of each plan [N] for N = B x K expanded contexts, actions [N, T, 2] and z [N, T, Z]: the
    discounted costs + weight * U of each rollout (no batch averaging across plans)."""
    cfg = imagination.cost_config
    weight = cfg.uncertainty_weight if uncertainty_weight is None else uncertainty_weight
    rollout = imagination.unroll(context, actions.shape[1], actions=actions, z=z)
    costs = imagination.costs(rollout["images"], rollout["states"], context.car_size)["total"]  # [N, T]
    total = discounted_mean(costs, cfg.discount, per_window=True)  # [N]
    if weight > 0:
        if imagination.stats is None:
            raise ValueError("plan_cost: the uncertainty cost needs UncertaintyStats (or uncertainty_weight=0)")
        variances = imagination.variances(context, actions, z, replicas)  # [3, N, T]
        u = uncertainty_cost(variances, imagination.stats, cfg.uncertainty_hinge, per_window=True)["total"]  # [N]
        total = total + weight * u
    return total


class _WarmStart:
    """The previous plan, shifted by one step at each control step."""

    def __init__(self) -> None:
        self.plan: Tensor | None = None

    def reset(self) -> None:
        self.plan = None

    def initial(self, batch: int, horizon: int, zero: Tensor) -> Tensor:
        """[B, T, 2]: the last plan shifted by one (last action repeated), or ``zero`` [2] everywhere."""
        if self.plan is None or self.plan.shape[:2] != (batch, horizon):
            return zero.expand(batch, horizon, 2).clone()
        return torch.cat([self.plan[:, 1:], self.plan[:, -1:]], dim=1)


class GradientMPC:
    """Back-prop MPC: ``act(context)`` -> the first action [B, 2] of a plan optimised through the model.

    ``zero_action``: the normalised action the first plan starts from (default: the model's normalisation of
    no acceleration and no curvature).
    """

    def __init__(self, imagination: Imagination, config: GradientMPCConfig = GradientMPCConfig(), seed: int = 0):
        self.imagination, self.config = imagination, config
        self.generator = torch.Generator(imagination.device).manual_seed(seed)
        self.warm = _WarmStart()
        model = imagination.model
        self.zero_action = model.normalise_actions(torch.zeros(2, device=imagination.device))
        self.last_cost: Tensor | None = None

    def reset(self) -> None:
        self.warm.reset()

    def plan(self, context: Context) -> Tensor:
        """Optimise and return the plan [B, T, 2] (normalised) for contexts (B of them)."""
        c = self.config
        b, k = context.batch_size, c.samples
        actions = self.warm.initial(b, c.horizon, self.zero_action).requires_grad_(True)
        optimizer = torch.optim.Adam([actions], lr=c.lr)
        expanded = _expand(context, k)
        z = self.imagination.sample_z(b * k, c.horizon, self.generator)
        for _ in range(c.iterations):
            per_plan = plan_cost(self.imagination, expanded, repeat(actions, "b t a -> (b k) t a", k=k), z,
                                 c.replicas, c.uncertainty_weight)  # fmt: skip
            loss = per_plan.view(b, k).mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([actions], c.grad_clip)
            optimizer.step()
            with torch.no_grad():
                actions.clamp_(-c.action_clamp, c.action_clamp)
        self.last_cost = per_plan.detach().view(b, k).mean(1)
        self.warm.plan = actions.detach()
        return self.warm.plan

    def act(self, context: Context) -> Tensor:
        """The first action [B, 2] (normalised) of a fresh plan."""
        return self.plan(context)[:, 0]


class CEM:
    """Cross-entropy planner: ``act(context)`` -> the first action [B, 2] of the refitted mean plan."""

    def __init__(self, imagination: Imagination, config: CEMConfig = CEMConfig(), seed: int = 0):
        self.imagination, self.config = imagination, config
        self.generator = torch.Generator(imagination.device).manual_seed(seed)
        self.warm = _WarmStart()
        self.zero_action = imagination.model.normalise_actions(torch.zeros(2, device=imagination.device))
        self.last_cost: Tensor | None = None

    def reset(self) -> None:
        self.warm.reset()

    @torch.no_grad()
    def plan(self, context: Context) -> Tensor:
        c = self.config
        b, p, k = context.batch_size, c.population, c.samples
        mean = self.warm.initial(b, c.horizon, self.zero_action)  # [B, T, 2]
        std = torch.full_like(mean, c.init_std if self.warm.plan is None else max(c.min_std, c.init_std / 2))
        expanded = _expand(context, p * k)
        z = self.imagination.sample_z(b * k, c.horizon, self.generator)
        z = None if z is None else repeat(z.view(b, k, *z.shape[1:]), "b k t z -> (b p k) t z", p=p)
        for _ in range(c.iterations):
            noise = torch.randn((b, p, *mean.shape[1:]), generator=self.generator, device=mean.device)
            candidates = (mean[:, None] + std[:, None] * noise).clamp(-c.action_clamp, c.action_clamp)  # [B, P, T, 2]
            candidates[:, 0] = mean  # the current mean always competes
            actions = repeat(candidates, "b p t a -> (b p k) t a", k=k)
            cost = plan_cost(self.imagination, expanded, actions, z, c.replicas, c.uncertainty_weight)
            cost = cost.view(b, p, k).mean(2)  # [B, P]
            elite = cost.topk(c.elites, dim=1, largest=False).indices  # [B, E]
            chosen = torch.gather(candidates, 1, elite[:, :, None, None].expand(-1, -1, *mean.shape[1:]))
            mean, std = chosen.mean(1), chosen.std(1, unbiased=False).clamp(min=1e-3) if c.elites > 1 else std
        self.last_cost = cost.gather(1, elite[:, :1])[:, 0]
        self.warm.plan = mean
        return mean

    def act(self, context: Context) -> Tensor:
        return self.plan(context)[:, 0]


PLANNERS = {"grad": (GradientMPC, GradientMPCConfig), "cem": (CEM, CEMConfig)}

__all__ = ["CEM", "CEMConfig", "PLANNERS", "GradientMPC", "GradientMPCConfig", "plan_cost"]
