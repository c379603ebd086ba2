"""The ``model`` world: a trained forward model rolled out once per control step along the reference plan.

Each episode keeps an ``ObservationWindow`` of its last Tc real observations (views and states in the
model's units). At every control step the model is unrolled from that context with the reference plan's
actions (the warm-started plan, SI, normalised with the model's statistics) for ``samples`` prior draws of
z, each with ``replicas`` dropout masks (MC dropout; 1: dropout off), without gradients: ``[B, K, T]``
frames, K = samples x replicas. The frames are taken as centred on the reference poses, which the exact
kinematics give for those actions (SPEC §9: the model predicts the world, the kinematics the ego).
With ``replicas`` > 1 the K futures include MC-dropout replicas, which the planner's ``aggregate`` (mean or
worst case) treats like the z draws, and, with the objective's ``uncertainty`` weight, whose disagreement
on the cost at the ego's pose is penalised (``driving.uncertainty``, calibrated on training windows when the
world is made).
A ``base="cv"`` model (``nn.forward_model``) corrects the constant-velocity world's frames: they are rendered
(``worlds.RenderedWorld("cv")``, in the model's view) at the reference's poses of every step of the horizon
and passed to the rollout.
The frames are the model's: ``view`` is the view it was trained on (``ForwardModelConfig.view_spec``), and the
world's objective scores them with the geometry of the model's cost parameters (``cost_config``; the weights
stay the objective's). A planner over this world must use both (``world.view``, ``world.objective``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from worldmodel.driving import kinematics
from worldmodel.driving.model_drivers import ObservationWindow
from worldmodel.driving.objective import ObjectiveConfig
from worldmodel.driving.uncertainty import calibrate
from worldmodel.driving.worlds import RenderedWorld, WorldFrames
from worldmodel.nn.checkpointing import load_checkpoint
from worldmodel.nn.forward_model import ForwardModel


@dataclass(frozen=True)
class ModelWorldConfig:
    """How the forward model is rolled out for the planner."""

    samples: int = 1
    """Prior draws of z per control step (1 for a deterministic model; the tiny models on the CPU budget hardly
    use their latent, so one draw saves half the time for the same futures)."""
    replicas: int = 1
    """Dropout replicas per draw (1: dropout off; >= 2 with the objective's ``uncertainty`` weight: the
    variance of the cost at the ego's pose across them is penalised)."""
    calibration_windows: int = 64
    """Training windows that calibrate the uncertainty cost (``driving.uncertainty.calibrate``)."""
    calibration_data: str | None = None
    """Episodes file of those windows; None: the forward model's own training data (from its checkpoint)."""

    def __post_init__(self) -> None:
        if self.samples < 1 or self.replicas < 1 or self.calibration_windows < 2:
            raise ValueError("ModelWorldConfig: samples and replicas must be >= 1, calibration_windows >= 2")


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
        loaded = load_checkpoint(checkpoint, "forward_model")
        self.model = ForwardModel.from_checkpoint(loaded).to(self.device).eval()
        self.model.requires_grad_(False)
        self.view = self.model.config.view_spec  # the geometry of the model's frames
        self.cv = RenderedWorld("cv", self.view) if self.model.config.base == "cv" else None
        objective = objective or ObjectiveConfig()
        self.config = config
        self.objective = replace(objective, costs=objective.costs.with_geometry(self.model.config.cost_config))
        self.samples = config.samples if self.model.config.stochastic else 1
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.seed, self.uncertainty = seed, None  # PoseUncertaintyStats, calibrated at the first call
        self.calibration_data = None
        if self.objective.uncertainty > 0:
            if config.replicas < 2:
                raise ValueError("the uncertainty cost needs dropout replicas: pass replicas=2 or more")
            self.calibration_data = config.calibration_data or (loaded.get("train_config") or {}).get("data")
            if self.calibration_data is None:
                raise ValueError(f"{checkpoint}: no training data recorded; pass calibration_data=EPISODES.h5")

    def new_window(self, env, info: dict) -> _Window:
        """The observation window of a new episode (from the context the environment returned)."""
        frames = self.model.config.backbone.context_frames
        window = ObservationWindow(frames, self.model, self.device)
        return _Window(window, info["context"], (float(env.sim.length), float(env.sim.width)))

    @torch.no_grad()
    def futures(self, sims, reference: np.ndarray, steps: list[int], plan: Tensor, windows: list) -> WorldFrames:
        """Frames at ``steps`` of the model rolled out with the reference ``plan`` ``[B, T, 2]`` (SI)."""
        if self.calibration_data is not None and self.uncertainty is None:
            self.uncertainty = calibrate(self, self.calibration_data, self.config.calibration_windows, steps,
                                         plan.shape[1], seed=self.seed)  # fmt: skip
        contexts = [w.window.context() for w in windows]
        images = torch.cat([c.images for c in contexts])  # [B, Tc, 3, H, W]
        states = torch.cat([c.states for c in contexts])
        base = None
        if self.cv is not None:  # the cv world's frames at the reference's poses of every step
            ego = torch.tensor([[s.x, s.y, s.psi, s.v] for s in sims], dtype=torch.float64)
            poses = kinematics.rollout(ego, plan.double().cpu(), float(sims[0].dt))[..., :3].numpy()  # [B, T, 3]
            base = self.cv.futures(sims, poses, list(range(1, plan.shape[1] + 1))).images[:, 0].to(self.device)
        frames = self.rollout(images, states, self.model.normalise_actions(plan.to(self.device)), steps, base)
        return WorldFrames(frames, torch.as_tensor(reference, dtype=torch.float32), replicas=self.config.replicas,
                           uncertainty=self.uncertainty)  # fmt: skip

    @torch.no_grad()
    def rollout(self, images: Tensor, states: Tensor, actions: Tensor, steps: list[int],
                base_images: Tensor | None = None) -> Tensor:  # fmt: skip
        """Frames ``[B, K, F, 3, H, W]`` (float32, CPU) at ``steps`` of the model rolled out from contexts
        ``images`` ``[B, Tc, 3, H, W]``, ``states`` ``[B, Tc, 4]`` with ``actions`` ``[B, T, 2]`` (all in model
        units) for ``samples`` draws of z x ``replicas`` dropout masks; ``base_images`` ``[B, T, 3, H, W]``: the
        frames a ``base="cv"`` model corrects."""
        model, s, r = self.model, self.samples, self.config.replicas
        b, horizon = images.shape[0], actions.shape[1]
        cache = model.repeat_cache(model.init_cache(images, states), s * r)
        normalised = actions.repeat_interleave(s * r, dim=0)
        if base_images is not None:
            base_images = base_images.repeat_interleave(s * r, dim=0)
        z = None
        if model.config.stochastic:
            z = torch.randn((b * s, horizon, model.config.n_z), generator=self.generator, device=self.device)
            z = z.repeat_interleave(r, dim=0)  # the replicas of a draw share its z
        model.set_dropout(r > 1)
        try:
            out = model.rollout_from(cache, normalised, z, base_images=base_images)
        finally:
            model.set_dropout(False)
        index = torch.as_tensor(steps, device=self.device) - 1
        return rearrange(out["images"][:, index].clamp(0, 1), "(b k) f ... -> b k f ...", b=b).float().cpu()


__all__ = ["ModelWorld", "ModelWorldConfig"]
