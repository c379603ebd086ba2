"""Driving in the learned world: one rollout protocol (context, actions or a policy, z -> predictions ->
costs) shared by the policy trainers and the planners (SPEC.md §2, §4).

``Imagination`` wraps a trained, frozen ``ForwardModel`` (eval mode, no parameter gradients: back-propagation
reaches the actions and the policy only, never fills the model's 15.6 M weight gradients) and:

- ``unroll``: drives the model for T steps, with the actions of a ``Policy`` acting on its own predictions
  (the policy keeps its own window cache) or with a given action sequence; z is prior noise [B, T, Z]
  drawn once per rollout (``sample_z``), so the main rollout and its dropout replicas share it;
- ``costs``: proximity, lane and off-road costs of predicted frames (``worldmodel.costs.pixel_costs``, the
  speed from the predicted, unnormalised state, detached) and the weighted total, each [B, T];
- ``variances``: K dropout replicas of the rollout with the same actions and z (the context is encoded once
  and shared: the per-frame encoder has no dropout) -> per-step variances [3, B, T];
- ``objective``: the policy objective ``sum_t gamma^t C_t / (B T) + u_weight * U`` with its named terms.

``estimate_uncertainty_stats`` measures the per-step mean and std of the replica variances on training
windows with the expert's actions (once per forward model; saved with the policy).

Shapes: B windows, K replicas, T steps, Tc context, C, H, W image, S state, Z latent. Actions normalised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from worldmodel.costs import (
    COST_NAMES,
    CostConfig,
    UncertaintyStats,
    discounted_mean,
    pixel_costs,
    prediction_variances,
    total_cost,
    uncertainty_cost,
)
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.nn.forward_model_config import view_text
from worldmodel.nn.policy import Policy
from worldmodel.traffic.view import ViewSpec


@dataclass(frozen=True)
class Context:
    """Where a rollout starts, in model units: ``images`` [B, Tc, 3, H, W] in [0, 1], ``states`` [B, Tc, S]
    normalised (forward model's statistics), ``car_size`` [B, 2] (length, width [m]), ``ego_mask`` [B, H, W]."""

    images: Tensor
    states: Tensor
    car_size: Tensor
    ego_mask: Tensor

    @classmethod
    def from_batch(cls, batch: Mapping[str, Tensor]) -> Context:
        """From a ``WindowDataset`` batch already in model units (``nn.model_windows.to_model_units``)."""
        return cls(batch["context_images"], batch["context_states"], batch["car_size"], batch["ego_mask"])

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]


class Imagination:
    """A frozen forward model, its cost functions (``costs``; default: the model's, ``cost_config`` of its
    config, the cost parameters of its training data) and (optionally) its uncertainty statistics.

    ``view``: the geometry of the model's frames (default: the model's, ``view_spec`` of its config; its size
    must be the model's). The model is put in eval mode and its parameters stop requiring gradients (shared
    with the caller: do not train it after).
    """

    def __init__(
        self,
        model: ForwardModel,
        costs: CostConfig | None = None,
        stats: UncertaintyStats | None = None,
        view: ViewSpec | None = None,
    ):
        self.model = model.eval().set_dropout(False)
        self.model.requires_grad_(False)
        self.cost_config, self.stats = costs or model.config.cost_config, stats
        self.view = model.config.view_spec if view is None else view
        own = model.config.view_spec
        if (self.view.height_px, self.view.width_px) != (own.height_px, own.width_px):
            raise ValueError(f"Imagination: the view is {view_text(self.view)}, the model's frames "
                             f"{view_text(own)}")  # fmt: skip

    @property
    def device(self) -> torch.device:
        return self.model.state_mean.device

    def sample_z(self, batch: int, steps: int, generator: torch.Generator | None = None) -> Tensor | None:
        """Prior noise [B, T, Z] for one rollout (None for a deterministic model)."""
        if not self.model.config.stochastic:
            return None
        shape = (batch, steps, self.model.config.n_z)
        return torch.randn(shape, generator=generator, device=self.device)

    # ------------------------------------------------------------------ rollouts
    def unroll(
        self,
        context: Context,
        steps: int,
        policy: Policy | None = None,
        actions: Tensor | None = None,
        z: Tensor | None = None,
        sample_policy: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """T steps with dropout off: the policy drives (``policy``) or the actions [B, T, 2] do.

        Returns ``images`` [B, T, 3, H, W], ``states`` [B, T, S] (normalised), ``actions`` [B, T, 2]
        (normalised; the policy's, with gradient).
        """
        if (policy is None) == (actions is None):
            raise ValueError("Imagination.unroll: give either a policy or actions")
        model = self.model.set_dropout(False)
        if policy is None:
            out = model.rollout_from(model.init_cache(context.images, context.states), actions[:, :steps], z)
            return {"images": out["images"], "states": out["states"], "actions": actions[:, :steps]}
        cache = model.init_cache(context.images, context.states)
        policy_cache = policy.init_cache(context.images, context.states, context.ego_mask)
        images, states, chosen = [], [], []
        for t in range(steps):
            action = policy(policy_cache, sample=sample_policy, generator=generator)["action"]
            image, state, cache = model.step(cache, action, None if z is None else z[:, t])
            if t < steps - 1:
                policy_cache = policy.push(policy_cache, image, state)
            images.append(image)
            states.append(state)
            chosen.append(action)
        return {"images": torch.stack(images, 1), "states": torch.stack(states, 1), "actions": torch.stack(chosen, 1)}

    def costs(self, images: Tensor, states: Tensor, car_size: Tensor) -> dict[str, Tensor]:
        """Costs of predicted frames: images [B, (K,) T, 3, H, W], states [B, (K,) T, S] normalised, car_size
        [B, 2] -> ``proximity``, ``lane``, ``offroad`` and ``total``, each [B, (K,) T]."""
        si = self.model.unnormalise_states(states)
        speed = torch.hypot(si[..., 2], si[..., 3])
        size = car_size.reshape(car_size.shape[0], *([1] * (speed.dim() - 1)), 2)
        out = pixel_costs(images, speed, size[..., 0], size[..., 1], self.view, self.cost_config)
        out["total"] = total_cost(out, self.cost_config)
        return out

    def variances(self, context: Context, actions: Tensor, z: Tensor | None, replicas: int) -> Tensor:
        """Per-step variances [3, B, T] (rows images, states, total cost) across ``replicas`` dropout replicas
        of the rollout with ``actions`` [B, T, 2] (gradient flows to them) and z [B, T, Z] shared."""
        model = self.model
        b, k = context.batch_size, replicas
        with torch.no_grad():
            cache = model.init_cache(context.images, context.states)  # no dropout in the per-frame encoder
        cache = model.repeat_cache(cache, k)
        rep = lambda x: x.repeat_interleave(k, dim=0)  # noqa: E731  (sample-major, as repeat_cache)
        model.set_dropout(True)
        try:
            out = model.rollout_from(cache, rep(actions), None if z is None else rep(z))
        finally:
            model.set_dropout(False)
        images = rearrange(out["images"], "(b k) t ... -> b k t ...", b=b)
        states = rearrange(out["states"], "(b k) t ... -> b k t ...", b=b)
        costs = self.costs(images, states, context.car_size)["total"]
        return prediction_variances(images, states, costs)

    # ------------------------------------------------------------------ the objective
    def objective(
        self,
        context: Context,
        rollout: Mapping[str, Tensor],
        z: Tensor | None = None,
        replicas: int = 10,
        uncertainty_weight: float | None = None,
    ) -> dict[str, Tensor]:
        """The policy objective of a rollout (``unroll``'s output): per-cost discounted means ``proximity``,
        ``lane``, ``offroad``, ``cost`` (their weighted sum), the uncertainty ``U`` (``uncertainty`` and its
        terms ``u_images``, ``u_states``, ``u_cost``; 0 when the weight is 0) and ``loss = cost + w U``.
        ``uncertainty_weight``: None uses the cost config's (0.05)."""
        cfg = self.cost_config
        weight = cfg.uncertainty_weight if uncertainty_weight is None else uncertainty_weight
        costs = self.costs(rollout["images"], rollout["states"], context.car_size)
        out = {name: discounted_mean(costs[name], cfg.discount) for name in (*COST_NAMES, "total")}
        out["cost"] = out.pop("total")
        zero = out["cost"].new_zeros(())
        out |= {"uncertainty": zero, "u_images": zero, "u_states": zero, "u_cost": zero}
        if weight > 0:
            if self.stats is None:
                raise ValueError("Imagination.objective: the uncertainty cost needs UncertaintyStats")
            variances = self.variances(context, rollout["actions"], z, replicas)
            u = uncertainty_cost(variances, self.stats, cfg.uncertainty_hinge)
            out |= {"uncertainty": u["total"], "u_images": u["images"], "u_states": u["states"], "u_cost": u["cost"]}
        out["loss"] = out["cost"] + weight * out["uncertainty"]
        return out


@torch.no_grad()
def estimate_uncertainty_stats(
    imagination: Imagination, batches, steps: int, replicas: int = 10, seed: int = 0
) -> UncertaintyStats:
    """Per-step mean and std [3, T] of the replica variances on windows with the expert's actions.

    batches: an iterable of ``WindowDataset`` batches in model units (with ``actions`` [B, >= T, 2]); z is
    drawn from the prior with a generator seeded by ``seed`` (reproducible).
    """
    generator = torch.Generator(imagination.device).manual_seed(seed)
    collected = []
    with torch.random.fork_rng(devices=[imagination.device] if imagination.device.type == "cuda" else []):
        torch.manual_seed(seed)  # the dropout masks, without moving the caller's RNG
        for batch in batches:
            context = Context.from_batch(batch)
            z = imagination.sample_z(context.batch_size, steps, generator)
            collected.append(imagination.variances(context, batch["actions"][:, :steps], z, replicas))
    if not collected:
        raise ValueError("estimate_uncertainty_stats: no batch")
    v = torch.cat(collected, dim=1).double()  # [3, N, T]
    std = v.std(1).clamp(min=1e-12) if v.shape[1] > 1 else torch.ones_like(v[:, 0])
    return UncertaintyStats(v.mean(1), std)


__all__ = ["Context", "Imagination", "estimate_uncertainty_stats"]
