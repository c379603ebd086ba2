"""The forward model's configuration: ``ForwardModelConfig`` and its presets (``ppuu``, ``tiny``).

The model itself is ``worldmodel.nn.forward_model.ForwardModel``; its modes and image updates are described
there.

The settings of the data a model was trained on travel in its config (and so in its checkpoint): ``view``,
the geometry of its frames, and ``costs``, the cost parameters of the data. ``train fm`` records them
(``for_data``); every consumer of a model reads ``view_spec`` and ``cost_config``, which fall back to PPUU's
``ViewSpec()`` (at the backbone's size) and ``CostConfig()`` when a config has none (checkpoints from before
they were recorded, which were all trained on PPUU's view).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from worldmodel.costs import CostConfig
from worldmodel.files import FileError
from worldmodel.nn.backbone import BackboneConfig
from worldmodel.traffic.view import ViewSpec

MODES = ("deterministic", "vae", "vae-lp")
IMAGE_UPDATES = ("logit", "pixel")
BASES = ("last", "cv")


@dataclass(frozen=True)
class ForwardModelConfig:
    """Forward model configuration. Presets: ``ppuu(mode)`` (PPUU's sizes), ``tiny(mode)`` (tests, CPU)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig.ppuu)
    """Sizes of the shared backbone and decoder (its ``dropout`` is overridden by ``dropout`` below)."""
    mode: str = "deterministic"
    """``"deterministic"``, ``"vae"`` (fixed N(0, I) prior) or ``"vae-lp"`` (learned prior)."""
    n_z: int = 32
    """Latent size Z per step."""
    latent_channels: int = 32
    """Channels of the posterior's and prior's conv paths (the posterior reads the target frame's cached
    features through a narrow conv path of its own, batched over the Tp targets)."""
    beta: float = 1e-6
    """Weight of the KL term."""
    z_dropout: float = 0.5
    """Probability, per step and per sample in training, of using a prior sample instead of the posterior."""
    dropout: float = 0.1
    """Dropout of every hidden layer, backbone included (epistemic uncertainty by MC dropout)."""
    prior_beta: float = 1.0
    """Weight of the learned prior's fit, ``KL(sg(q) || p)`` (``"vae-lp"``). Its gradient reaches the prior
    network only: the posterior and the features the prior reads are detached, and so are the prior samples
    that z-dropout feeds to the decoder. The posterior keeps its own ``beta * KL(q || sg(p))``. With PPUU's
    single ``beta * KL(q || p)`` the prior's fit is weighted 1e-6 while z-dropout's reconstruction gradient
    pulls the prior to a point (sigma_p -> 0): samples from it no longer differ, which is how a learned prior
    loses to the fixed one on best-of-K."""
    free_bits: float = 0.0
    """Free bits [nats] per latent unit: the KL of a unit (mean over batch and steps) is clamped below at this."""
    kl_anneal_steps: int = 0
    """Linear warm-up of beta from 0 over this many training steps (0: no annealing); needs ``loss(step=)``."""
    active_unit_threshold: float = 0.01
    """A latent unit is active when its KL (mean over batch and steps) exceeds this [nats]."""
    image_update: str = "logit"
    """How the image update is applied: ``"logit"`` (sigmoid of delta + logit of the last frame) or
    ``"pixel"`` (last frame + delta, clamped to [0, 1] with a straight-through gradient)."""
    logit_eps: float = 1e-3
    """Pixels are clamped to [eps, 1 - eps] before the logit (``image_update="logit"``)."""
    zero_init: bool = True
    """Start with zero image and state updates (the untrained model copies its base frame and the last state)."""
    base: str = "last"
    """What each predicted frame updates: ``"last"``, the previous frame (PPUU); ``"cv"``, the constant-velocity
    world's frame of the same step (the cars of the last context frame moved at their speed and heading,
    rendered at the ego's pose of that step, ``driving.worlds``), which the model also reads (its per-frame
    features enter the fused map). A ``"cv"`` model predicts the correction to constant velocity, and needs
    those frames (``base_images``) wherever it is rolled out."""
    view: ViewSpec | None = None
    """The ego view of the frames the model takes and predicts (``train fm`` records its data's); None: not
    recorded, see ``view_spec``. Its size must be the backbone's."""
    costs: CostConfig | None = None
    """The cost parameters of the data the model was trained on (``train fm`` records them; their geometry
    scores the model's frames); None: not recorded, ``CostConfig()``."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ForwardModelConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.image_update not in IMAGE_UPDATES:
            raise ValueError(f"ForwardModelConfig.image_update must be one of {IMAGE_UPDATES}")
        if self.base not in BASES:
            raise ValueError(f"ForwardModelConfig.base must be one of {BASES}, got {self.base!r}")
        if not 0.0 <= self.z_dropout <= 1.0:
            raise ValueError(f"ForwardModelConfig.z_dropout must be in [0, 1], got {self.z_dropout}")
        if self.backbone.dropout != self.dropout:  # one source of truth: the model's dropout
            object.__setattr__(self, "backbone", replace(self.backbone, dropout=self.dropout))
        b = self.backbone
        if self.view is not None and (self.view.height_px, self.view.width_px) != (b.height, b.width):
            raise ValueError(f"ForwardModelConfig: the view is {view_text(self.view)}, the backbone takes "
                             f"{b.height} x {b.width} px")  # fmt: skip

    @classmethod
    def ppuu(cls, mode: str = "vae", **overrides) -> ForwardModelConfig:
        """PPUU's model: 64-128-256 convs, 20 context frames, n_z 32, beta 1e-6, z-dropout 0.5."""
        return cls(**({"backbone": BackboneConfig.ppuu(), "mode": mode} | overrides))

    @classmethod
    def tiny(cls, mode: str = "vae", **overrides) -> ForwardModelConfig:
        """A small model for tests and the CPU quickstart (``BackboneConfig.tiny()``, n_z 8)."""
        kwargs = dict(backbone=BackboneConfig.tiny(), mode=mode, n_z=8, latent_channels=8)
        return cls(**(kwargs | overrides))

    @property
    def stochastic(self) -> bool:
        """Whether the model has a latent z (``"vae"``, ``"vae-lp"``)."""
        return self.mode != "deterministic"

    @property
    def view_spec(self) -> ViewSpec:
        """The view of the model's frames: ``view``, or (not recorded) PPUU's resolution at the backbone's size
        (``ViewSpec()`` for PPUU's 117 x 24, what every model before the view was recorded was trained on)."""
        if self.view is not None:
            return self.view
        return ViewSpec(height_px=self.backbone.height, width_px=self.backbone.width)

    @property
    def cost_config(self) -> CostConfig:
        """The cost parameters of the model's data: ``costs``, or (not recorded) ``CostConfig()``."""
        return CostConfig() if self.costs is None else self.costs

    def resolved(self) -> ForwardModelConfig:
        """This config with ``view`` and ``costs`` filled in (``view_spec``, ``cost_config``)."""
        return replace(self, view=self.view_spec, costs=self.cost_config)

    def for_data(self, view: ViewSpec, costs: CostConfig, source: str) -> ForwardModelConfig:
        """This config for the data file ``source``, made with ``view`` and ``costs``: the backbone takes the
        view's size and both are recorded. Raises ``FileError`` (``DataError``: one line naming ``source``)
        when this config asks for something else: a ``view`` of its own, a backbone of another size than the
        file's and the presets' (117 x 24), or ``costs`` of another geometry."""
        b, preset = self.backbone, ViewSpec()
        size = (b.height, b.width)
        if self.view is not None and self.view != view:
            asked = f"the view {view_text(self.view)}"
        elif self.view is None and size not in ((view.height_px, view.width_px), (preset.height_px, preset.width_px)):
            asked = f"a backbone of {b.height} x {b.width} px"
        elif self.costs is not None and self.costs.geometry() != costs.geometry():
            raise FileError(source, f"its cost geometry is {costs.geometry()}, but the model config asks for "
                            f"{self.costs.geometry()}; leave the model's costs to the data")  # fmt: skip
        else:
            backbone = replace(b, height=view.height_px, width=view.width_px)
            return replace(self, backbone=backbone, view=view, costs=self.costs or costs)
        raise FileError(source, f"its views are {view_text(view)}, but the model config asks for {asked}; "
                        "train on data of that view, or leave the model's view to the data")  # fmt: skip

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["backbone"] = self.backbone.to_dict()
        d["view"] = None if self.view is None else self.view.to_dict()
        d["costs"] = None if self.costs is None else self.costs.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> ForwardModelConfig:
        """From ``to_dict`` (a dict without ``view`` and ``costs``, from an older checkpoint, leaves them None)."""
        d = dict(d)
        d["backbone"] = BackboneConfig.from_dict(d["backbone"])
        if d.get("view") is not None:
            d["view"] = ViewSpec(**d["view"])
        if d.get("costs") is not None:
            d["costs"] = CostConfig.from_dict(d["costs"])
        return cls(**d)


def view_text(view: ViewSpec) -> str:
    """``"117 x 24 px at 1.622 px/m"``."""
    return f"{view.height_px} x {view.width_px} px at {view.px_per_m:.4g} px/m"
