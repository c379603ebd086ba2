"""The ``model`` world: a trained forward model rolled out once per control step along the reference plan.

Each episode keeps an ``ObservationWindow`` of its last Tc real observations (views and states in the
model's units). At every control step the model is unrolled from that context with the reference plan's
actions (the warm-started plan, SI, normalised with the model's statistics) for ``samples`` prior draws of
z, each with ``replicas`` dropout masks (MC dropout; 1: dropout off), without gradients: ``[B, K, T]``
frames, K = samples x replicas. The frames are taken as centred on the reference poses, which the exact
kinematics give for those actions (SPEC §9: the model predicts the world, the kinematics the ego).
With ``replicas`` > 1 the K futures include MC-dropout replicas, which the planner's ``aggregate`` (mean or
worst case) treats like the z draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from worldmodel.driving.objective import ObjectiveConfig
from worldmodel.driving.worlds import WorldFrames
from worldmodel.evaluation.model_drivers import ObservationWindow
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.training.checkpoint import load_checkpoint


@dataclass(frozen=True)
class ModelWorldConfig:
    """How the forward model is rolled out for the planner."""

    samples: int = 1
    """Prior draws of z per control step (1 for a deterministic model; the tiny models on the CPU budget hardly
    use their latent, so one draw saves half the time for the same futures)."""
    replicas: int = 1
    """Dropout replicas per draw (1: dropout off)."""

    def __post_init__(self) -> None:
        if self.samples < 1 or self.replicas < 1:
            raise ValueError("ModelWorldConfig: samples and replicas must be >= 1")


class _Window:
    """An episode's observation window: fed with each new observation (``observe``)."""

    def __init__(self, window: ObservationWindow, context: list[dict], car_size: tuple[float, float]) -> None:
        self.window, self.fresh = window, True
        window.reset(context, car_size)

    def observe(self, obs: dict) -> None:
        if self.fresh:  # the hand-over observation is already the window's last
            self.fresh = False
            return
        self.window.push(obs)


class ModelWorld:
    """World provider ``model`` (see the module docstring)."""

    name, privileged = "model", False

    def __init__(self, checkpoint: str, config: ModelWorldConfig = ModelWorldConfig(),
                 objective: ObjectiveConfig | None = None, device: str = "cpu", seed: int = 0):  # fmt: skip
        self.device = torch.device(device)
        self.model = ForwardModel.from_checkpoint(load_checkpoint(checkpoint)).to(self.device).eval()
        self.model.requires_grad_(False)
        self.config, self.objective = config, objective or ObjectiveConfig()
        self.samples = config.samples if self.model.config.stochastic else 1
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def new_window(self, env, info: dict) -> _Window:
        """The observation window of a new episode (from the context the environment returned)."""
        frames = self.model.config.backbone.context_frames
        window = ObservationWindow(frames, self.model, self.device)
        return _Window(window, info["context"], (float(env.sim.length), float(env.sim.width)))

    @torch.no_grad()
    def futures(self, sims, reference: np.ndarray, steps: list[int], plan: Tensor, windows: list) -> WorldFrames:
        """Frames at ``steps`` of the model rolled out with the reference ``plan`` ``[B, T, 2]`` (SI)."""
        model, s, r = self.model, self.samples, self.config.replicas
        contexts = [w.window.context() for w in windows]
        images = torch.cat([c.images for c in contexts])  # [B, Tc, 3, H, W]
        states = torch.cat([c.states for c in contexts])
        b, horizon = len(contexts), plan.shape[1]
        cache = model.repeat_cache(model.init_cache(images, states), s * r)
        normalised = model.normalise_actions(plan.to(self.device)).repeat_interleave(s * r, dim=0)
        z = None
        if model.config.stochastic:
            z = torch.randn((b * s, horizon, model.config.n_z), generator=self.generator, device=self.device)
            z = z.repeat_interleave(r, dim=0)  # the replicas of a draw share its z
        model.set_dropout(r > 1)
        try:
            out = model.rollout_from(cache, normalised, z)
        finally:
            model.set_dropout(False)
        index = torch.as_tensor(steps, device=self.device) - 1
        frames = rearrange(out["images"][:, index].clamp(0, 1), "(b k) f ... -> b k f ...", b=b)
        return WorldFrames(frames.float().cpu(), torch.as_tensor(reference, dtype=torch.float32), replicas=r)


__all__ = ["ModelWorld", "ModelWorldConfig"]
