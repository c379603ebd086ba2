"""SSL objectives as wrappers that receive the shared backbone: ``VICReg(backbone, config)`` and kin.

Each objective owns an ``Encoder`` around the backbone it is given (so the weights it trains are the
backbone's own), a projector, and for BYOL / SimSiam a predictor; BYOL also keeps an EMA **target**
(encoder + projector), a module of its own that is saved under its own checkpoint key (``"target"``).

A training step (see ``worldmodel.ssl.train``), in order:
1. ``outputs = objective(view_a, view_b)``: the embeddings of both views (no collective in here);
2. ``outputs = {k: gather_with_grad(v)}`` across the ranks (``worldmodel.ssl.gather``);
3. ``terms = objective.loss(outputs)``: the paper's named terms, with ``"loss"``;
4. backward, optimiser step, then ``objective.after_step(step, total_steps)`` (BYOL's EMA update).

Shapes: B batch, Tc frames per view, C, H, W; D_r representation, D embedding.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worldmodel.nn.backbone import Backbone
from worldmodel.ssl import losses
from worldmodel.ssl.heads import Encoder, mlp_head

METHODS = ("vicreg", "barlow", "simclr", "byol", "simsiam")

View = tuple[Tensor, Tensor]
"""A view: (images [B, Tc, C, H, W] in [0, 1], states [B, Tc, S] normalised)."""


@dataclass(frozen=True)
class SSLConfig:
    """The objective: method, heads and loss constants (SPEC.md §7 reference values as defaults)."""

    method: str = "vicreg"
    """One of ``vicreg``, ``barlow``, ``simclr``, ``byol``, ``simsiam``."""
    pool: str = "flatten"
    """How the backbone's map becomes the representation: ``"flatten"`` (D h w: keeps where things are,
    which headway, lane offset and neighbour counts need, and is what the forward model reads) or
    ``"mean"`` over (h, w) (D)."""
    projector: tuple[int, ...] = (512, 512)
    """Projector widths after the representation: hidden layers..., output D."""
    predictor_hidden: int = 128
    """Hidden width of the predictor (BYOL, SimSiam); its output is D."""
    temperature: float = 0.2
    """NT-Xent temperature (SimCLR: 0.1 - 0.5)."""
    barlow_lambda: float = 0.0051
    """Barlow Twins' weight of the off-diagonal term."""
    vicreg_weights: tuple[float, float, float] = (25.0, 25.0, 1.0)
    """VICReg's invariance, variance and covariance weights."""
    momentum: float = 0.996
    """BYOL's base EMA momentum tau_0; tau rises to 1 on a cosine over the run."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"SSLConfig.method must be one of {METHODS}, got {self.method!r}")
        if not self.projector or min(self.projector) < 1 or self.predictor_hidden < 1:
            raise ValueError(f"SSLConfig: projector widths and predictor_hidden must be >= 1, got {self}")
        if self.temperature <= 0 or not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"SSLConfig: temperature > 0 and momentum in [0, 1]; got {self}")

    @property
    def embedding_dim(self) -> int:
        """D: the projector's output width."""
        return self.projector[-1]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SSLConfig:
        d = dict(d)
        return cls(**(d | {"projector": tuple(d["projector"]), "vicreg_weights": tuple(d["vicreg_weights"])}))


def byol_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's cosine schedule: ``1 - (1 - base) (cos(pi k / K) + 1) / 2`` (base at k = 0, 1 at k = K)."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class JointEmbedding(nn.Module):
    """Base: encoder (around the received backbone) + projector; subclasses name the loss."""

    def __init__(self, backbone: Backbone, config: SSLConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(backbone, config.pool)
        self.projector = mlp_head([self.encoder.dim, *config.projector], last_norm=config.method == "simsiam")

    @property
    def backbone(self) -> Backbone:
        return self.encoder.backbone

    def embed(self, view: View) -> tuple[Tensor, Tensor]:
        """(representation [B, D_r], embedding [B, D]) of one view."""
        y = self.encoder(*view)
        return y, self.projector(y)

    def forward(self, view_a: View, view_b: View) -> dict[str, Tensor]:
        """The embeddings of both views: ``z_a``, ``z_b`` [B, D] and the representations ``y_a`` [B, D_r]."""
        y_a, z_a = self.embed(view_a)
        _, z_b = self.embed(view_b)
        return {"y_a": y_a, "z_a": z_a, "z_b": z_b}

    def loss(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called after each optimiser step; returns values to log (none by default)."""
        return {}

    def online_state_dict(self) -> dict[str, Tensor]:
        """The trained weights (encoder, heads), without a target network."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("target.")}


class VICReg(JointEmbedding):
    def loss(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        wi, wv, wc = self.config.vicreg_weights
        return losses.vicreg(outputs["z_a"], outputs["z_b"], wi, wv, wc)


class BarlowTwins(JointEmbedding):
    def loss(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return losses.barlow_twins(outputs["z_a"], outputs["z_b"], self.config.barlow_lambda)


class SimCLR(JointEmbedding):
    def loss(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return losses.nt_xent(outputs["z_a"], outputs["z_b"], self.config.temperature)


class SimSiam(JointEmbedding):
    """Projector + predictor, stop-gradient on the projections, no EMA."""

    def __init__(self, backbone: Backbone, config: SSLConfig) -> None:
        super().__init__(backbone, config)
        d = config.embedding_dim
        self.predictor = mlp_head([d, config.predictor_hidden, d])

    def forward(self, view_a: View, view_b: View) -> dict[str, Tensor]:
        out = super().forward(view_a, view_b)
        return out | {"p_a": self.predictor(out["z_a"]), "p_b": self.predictor(out["z_b"])}

    def loss(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return losses.simsiam(outputs["p_a"], outputs["p_b"], outputs["z_a"], outputs["z_b"])


class EMATarget(nn.Module):
    """An exponential moving average of (encoder, projector): ``theta_t <- tau theta_t + (1 - tau) theta``.

    Its parameters never get gradients; its BatchNorm statistics follow the EMA too (buffers are copied).
    """

    def __init__(self, encoder: Encoder, projector: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector = copy.deepcopy(encoder), copy.deepcopy(projector)
        for p in self.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, view: View) -> Tensor:
        """The target projection [B, D] of a view (no gradient)."""
        return self.projector(self.encoder(*view))

    @torch.no_grad()
    def update(self, online: list[nn.Module], tau: float) -> None:
        mine = [*self.encoder.parameters(), *self.projector.parameters()]
        theirs = [p for m in online for p in m.parameters()]
        torch._foreach_lerp_(mine, [p.detach() for p in theirs], 1.0 - tau)
        for a, b in zip(
            [*self.encoder.buffers(), *self.projector.buffers()],
            [b for m in online for b in m.buffers()],
            strict=True,
        ):
            a.copy_(b)


class BYOL(JointEmbedding):
    """Online encoder + projector + predictor; an EMA target (``self.target``) with a cosine momentum."""

    def __init__(self, backbone: Backbone, config: SSLConfig) -> None:
        super().__init__(backbone, config)
        d = config.embedding_dim
        self.predictor = mlp_head([d, config.predictor_hidden, d])
        self.target = EMATarget(self.encoder, self.projector)

    def forward(self, view_a: View, view_b: View) -> dict[str, Tensor]:
        out = super().forward(view_a, view_b)
        was_training = self.target.training
        self.target.train(self.training)
        t_a, t_b = self.target(view_a), self.target(view_b)
        self.target.train(was_training)
        return out | {"p_a": self.predictor(out["z_a"]), "p_b": self.predictor(out["z_b"]), "t_a": t_a, "t_b": t_b}

    def loss(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return losses.byol(outputs["p_a"], outputs["p_b"], outputs["t_a"], outputs["t_b"])

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        tau = byol_momentum(step, total_steps, self.config.momentum)
        self.target.update([self.encoder, self.projector], tau)
        return {"momentum": tau}


OBJECTIVES: dict[str, type[JointEmbedding]] = {
    "vicreg": VICReg,
    "barlow": BarlowTwins,
    "simclr": SimCLR,
    "byol": BYOL,
    "simsiam": SimSiam,
}


def build_objective(backbone: Backbone, config: SSLConfig) -> JointEmbedding:
    """The objective of ``config.method`` around ``backbone``."""
    return OBJECTIVES[config.method](backbone, config)


__all__ = [
    "BYOL",
    "METHODS",
    "OBJECTIVES",
    "BarlowTwins",
    "EMATarget",
    "JointEmbedding",
    "SSLConfig",
    "SimCLR",
    "SimSiam",
    "VICReg",
    "build_objective",
    "byol_momentum",
]
