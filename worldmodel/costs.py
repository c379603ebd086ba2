"""Differentiable driving costs computed on ego views (SPEC.md §2): one definition each.

Used by the simulator environments (via ``pixel_costs_numpy``), by dataset extraction (the ``/costs`` column
of episodes.h5) and by policy training (through the forward model's predicted images). Each cost is the max
over pixels of a separable mask times one channel of the view::

    proximity = max_{r,c} proximity_mask[r, c] * images[VEHICLES, r, c]
    lane      = max_{r,c} lane_mask[r, c]      * images[LANES, r, c]
    offroad   = max_{r,c} lane_mask[r, c]      * images[OFFROAD, r, c]

Masks are evaluated at the pixel centres ``f`` (forward) and ``l`` (lateral) of ``ViewSpec`` in metres.

The epistemic uncertainty cost (SPEC §2) works on K dropout replicas of one rollout (same z, independent
dropout masks): ``prediction_variances`` takes, per window and step, the variance across the replicas of the
images, of the (normalised) states and of the total cost; ``uncertainty_cost`` normalises each with per-step
statistics (``UncertaintyStats``, measured once on training windows with the expert's actions) and sums the
hinged means ``mean(relu((var - mu_t) / sigma_t - hinge))``. The replicas themselves are run by
``worldmodel.driving.imagination``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from worldmodel.traffic.view import LANES, OFFROAD, VEHICLES, ViewSpec

#: Names of the costs, in the column order of episodes.h5 ``/costs`` and of ``pixel_costs_numpy``.
COST_NAMES = ("proximity", "lane", "offroad")
#: The fields of ``CostConfig`` that shape the masks (a dataset's costs were computed with them; they travel
#: with the dataset and the models trained on it); the others are the weights of an objective.
COST_GEOMETRY = ("safe_time_s", "safe_margin_m", "overlap_tolerance_m", "lane_width_m")
#: Terms of the uncertainty cost, in the row order of ``prediction_variances`` and ``UncertaintyStats``.
UNCERTAINTY_TERMS = ("images", "states", "cost")


@dataclass(frozen=True)
class CostConfig:
    """Cost geometry and weights (PPUU values by default). All cost weights live here."""

    safe_time_s: float = 1.5
    """Time headway of the safe distance [s]: safe distance = safe_time_s * |speed| + safe_margin_m."""
    safe_margin_m: float = 1.0
    """Constant part of the safe distance [m]; > 0, so the proximity ramp never has zero length."""
    overlap_tolerance_m: float = 1.0
    """Tolerated overlap [m] on both axes: the proximity plateau is the ego footprint shrunk by this much."""
    lane_width_m: float = 3.7
    """Lane width [m]: the lateral ramp of the lane mask reaches 0 at half of it from the centre line."""
    lane_weight: float = 0.2
    """Weight of the lane cost in the total cost."""
    offroad_weight: float = 1.0
    """Weight of the off-road cost in the total cost."""
    proximity_weight: float = 1.0
    """Weight of the proximity cost in the total cost."""
    discount: float = 0.99
    """Per-step discount of the costs along a rollout (policy training)."""
    uncertainty_weight: float = 0.05
    """Weight of the epistemic uncertainty cost (policy training)."""
    uncertainty_hinge: float = 0.5
    """Hinge on the normalised variances of the uncertainty cost (policy training)."""

    def __post_init__(self) -> None:
        if not self.safe_margin_m > 0:
            raise ValueError(f"CostConfig: safe_margin_m must be > 0, got {self.safe_margin_m}")
        if self.safe_time_s < 0 or self.overlap_tolerance_m < 0:
            raise ValueError("CostConfig: safe_time_s and overlap_tolerance_m must be >= 0")
        if not self.lane_width_m > 0:
            raise ValueError(f"CostConfig: lane_width_m must be > 0, got {self.lane_width_m}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"CostConfig: discount must be in (0, 1], got {self.discount}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> CostConfig:
        """From ``to_dict`` or an episodes file's ``costs`` attribute: keys that are not fields are ignored (a
        PPUU import describes its costs in words), missing fields take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in d.items() if name in known})

    def geometry(self) -> dict:
        """The ``COST_GEOMETRY`` fields: ``{name: value}``."""
        return {name: getattr(self, name) for name in COST_GEOMETRY}

    def with_geometry(self, other: CostConfig) -> CostConfig:
        """This config (its weights) with ``other``'s geometry (``COST_GEOMETRY``)."""
        return replace(self, **other.geometry())


def _as_tensors(*values: Tensor | float, like: Tensor | None = None) -> list[Tensor]:
    """Tensors or floats as tensors of one floating dtype and device, broadcast to one shape ``[...]``.

    dtype and device come from ``like``, else from the first floating tensor among ``values``, else the
    default dtype on the CPU.
    """
    if like is None:
        like = next((v for v in values if isinstance(v, Tensor) and v.is_floating_point()), None)
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return list(torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dtype, device=device) for v in values)))


def _pixel_centres(spec: ViewSpec, like: Tensor) -> tuple[Tensor, Tensor]:
    """Ego-frame pixel centres: forward ``[H]`` and lateral ``[W]`` [m], in ``like``'s dtype and device."""
    rows = torch.arange(spec.height_px, dtype=like.dtype, device=like.device)
    cols = torch.arange(spec.width_px, dtype=like.dtype, device=like.device)
    return (spec.ego_row - rows) / spec.px_per_m, (cols - spec.ego_col) / spec.px_per_m


def proximity_mask(
    spec: ViewSpec,
    length_m: Tensor | float,
    width_m: Tensor | float,
    speed_mps: Tensor | float,
    config: CostConfig = CostConfig(),
) -> Tensor:
    """Proximity mask ``[..., H, W]`` in [0, 1] for an ego car of the given size and speed.

    The inputs are floats or tensors of any broadcastable batch shape ``[...]``. With ``L`` = length,
    ``w`` = width, ``v`` = speed, ``tol`` = ``overlap_tolerance_m`` and the safe distance
    ``d = safe_time_s * |v| + safe_margin_m``, the mask is ``along(f) * across(l)`` with::

        a_f = max(L - tol, 0) / 2                       plateau half-length (footprint less the tolerance)
        along(f)  = clamp((a_f + d - |f|) / d, 0, 1)    1 on the plateau, 0 from a_f + d on
        a_l = max(w - tol, 0) / 2                       plateau half-width
        across(l) = clamp((w - |l|) / (w - a_l), 0, 1)  1 on the plateau, 0 from |l| = w on

    As in PPUU, the 1 m tolerance (NGSIM positions are inaccurate) shrinks the plateau, where the cost is 1
    (a collision), by tol / 2 at each side; the ramp reaches 0 one safe distance beyond the plateau ahead
    and behind, and at one ego width from the centre line across (a same-width car just touching the ego's
    flank). The mask is differentiable w.r.t. speed; ``pixel_costs`` detaches the speed before calling it.
    """
    length, width, speed = _as_tensors(length_m, width_m, speed_mps)
    along, across = proximity_profiles(*_pixel_centres(spec, length), length, width, speed, config)
    return along[..., :, None] * across[..., None, :]  # [..., H, W]


def proximity_profiles(forward, lateral, length, width, speed, config: CostConfig = CostConfig()):
    """The two factors of ``proximity_mask``: ``along`` [..., H] and ``across`` [..., W], from the pixel
    centres ``forward`` [H] and ``lateral`` [W] [m] and per-car ``length``, ``width``, ``speed`` [...].
    Written once for torch tensors and numpy arrays alike (``pixel_costs`` and ``pixel_costs_numpy``)."""
    tol = config.overlap_tolerance_m
    safe = config.safe_time_s * abs(speed) + config.safe_margin_m  # [...]
    half_length = (length - tol).clip(min=0) / 2  # [...]
    half_width = (width - tol).clip(min=0) / 2  # [...]
    along = ((half_length + safe)[..., None] - abs(forward)) / safe[..., None]  # [..., H]
    across = (width[..., None] - abs(lateral)) / (width - half_width).clip(min=1e-6)[..., None]  # [..., W]
    return along.clip(0, 1), across.clip(0, 1)


def lane_mask(
    spec: ViewSpec,
    length_m: Tensor | float,
    width_m: Tensor | float,
    config: CostConfig = CostConfig(),
) -> Tensor:
    """Lane (and off-road) mask ``[..., H, W]`` in [0, 1] for an ego car of the given size.

    ``along(f) = 1 if |f| <= L / 2 else 0`` (binary over the ego's length) and
    ``across(l) = max(1 - |l| / (lane_width_m / 2), 0)`` (1 on the centre line, 0 from half a lane on).
    As in PPUU the lateral ramp ignores the ego width; ``width_m`` only takes part in the batch shape.
    """
    length, _ = _as_tensors(length_m, width_m)
    along, across = lane_profiles(*_pixel_centres(spec, length), length, config)
    return along.to(length.dtype)[..., :, None] * across  # [..., H, W]


def lane_profiles(forward, lateral, length, config: CostConfig = CostConfig()):
    """The two factors of ``lane_mask``: ``along`` [..., H] (boolean) and ``across`` [W] (torch or numpy,
    as ``proximity_profiles``)."""
    along = abs(forward) <= length[..., None] / 2  # [..., H]
    across = (1 - abs(lateral) / (config.lane_width_m / 2)).clip(min=0)  # [W]
    return along, across


def pixel_costs(
    images: Tensor,
    speed_mps: Tensor | float,
    length_m: Tensor | float,
    width_m: Tensor | float,
    spec: ViewSpec | None = None,
    config: CostConfig = CostConfig(),
) -> dict[str, Tensor]:
    """Proximity, lane and off-road costs of ego views, differentiable w.r.t. the images.

    images: ``[..., 3, H, W]`` float in [0, 1] (channels lanes, vehicles, off-road).
    speed_mps, length_m, width_m: floats or tensors broadcastable to the batch shape ``[...]`` (for
    ``[B, T]`` images and per-car sizes ``[B]``, pass ``length_m[:, None]``). The speed (unnormalised) is
    detached: the costs do not push gradients into the predicted state. ``spec`` defaults to ``ViewSpec()``.
    Returns ``{"proximity", "lane", "offroad"}``, each ``[...]`` in [0, 1].
    """
    spec = ViewSpec() if spec is None else spec
    view_shape = (3, spec.height_px, spec.width_px)
    if not images.is_floating_point() or images.dim() < 3 or tuple(images.shape[-3:]) != view_shape:
        raise ValueError(
            f"pixel_costs: images must be float [..., 3, {spec.height_px}, {spec.width_px}] (the view spec), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    speed, length, width = _as_tensors(speed_mps, length_m, width_m, like=images)
    near = proximity_mask(spec, length, width, speed.detach(), config)  # [..., H, W]
    lane = lane_mask(spec, length, width, config)  # [..., H, W]

    def peak(mask: Tensor, channel: int) -> Tensor:
        return (mask * images[..., channel, :, :]).amax(dim=(-2, -1))  # [...]

    return {"proximity": peak(near, VEHICLES), "lane": peak(lane, LANES), "offroad": peak(lane, OFFROAD)}


def total_cost(costs: dict[str, Tensor], config: CostConfig = CostConfig()) -> Tensor:
    """Total cost ``[...]`` = proximity_weight * proximity + lane_weight * lane + offroad_weight * offroad."""
    return (
        config.proximity_weight * costs["proximity"]
        + config.lane_weight * costs["lane"]
        + config.offroad_weight * costs["offroad"]
    )


def pixel_costs_numpy(
    images_uint8: np.ndarray,
    speed_mps: np.ndarray | float,
    length_m: np.ndarray | float,
    width_m: np.ndarray | float,
    spec: ViewSpec | None = None,
    config: CostConfig = CostConfig(),
    chunk: int = 256,
) -> np.ndarray:
    """``pixel_costs`` for the simulator: uint8 views ``[N, 3, H, W]``, per-car ``[N]`` speeds and sizes.

    Returns float32 ``[N, 3]``, columns ``COST_NAMES`` (proximity, lane, off-road). All N cars in one call;
    numpy on the same mask profiles as ``pixel_costs`` (4x faster than torch for one car, as the simulator
    calls it every step), ``chunk`` cars at a time (keeps the float copies in cache for N ~ 10^4).
    """
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4:
        raise ValueError(
            f"pixel_costs_numpy: images must be uint8 [N, 3, H, W], got {images_uint8.dtype} {images_uint8.shape}"
        )
    spec = ViewSpec() if spec is None else spec
    n = len(images_uint8)
    speed, length, width = (
        np.broadcast_to(np.asarray(v, dtype=np.float32), (n,)) for v in (speed_mps, length_m, width_m)
    )
    forward, lateral = (x.numpy() for x in _pixel_centres(spec, torch.empty(0)))
    out = np.empty((n, len(COST_NAMES)), dtype=np.float32)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        images = images_uint8[a:b].astype(np.float32)  # scaled by 1/255 at the end: max commutes with it
        near_along, near_across = proximity_profiles(forward, lateral, length[a:b], width[a:b], speed[a:b], config)
        lane_along, lane_across = lane_profiles(forward, lateral, length[a:b], config)
        lane = lane_along[:, :, None] * lane_across  # [n, H, W]
        near = near_along[:, :, None] * near_across[:, None, :]
        out[a:b, 0] = (near * images[:, VEHICLES]).max(axis=(1, 2))
        out[a:b, 1] = (lane * images[:, LANES]).max(axis=(1, 2))
        out[a:b, 2] = (lane * images[:, OFFROAD]).max(axis=(1, 2))
    return out / np.float32(255)  # [N, 3]


# ------------------------------------------------------------------------------------- uncertainty
def prediction_variances(images: Tensor, states: Tensor, costs: Tensor) -> Tensor:
    """Variance across K dropout replicas (unbiased), per window and step: ``[3, B, T]``, rows
    ``UNCERTAINTY_TERMS``.

    images: ``[B, K, T, C, H, W]`` (variance averaged over channels and pixels); states: ``[B, K, T, S]``
    normalised (averaged over S); costs: ``[B, K, T]`` total costs. K >= 2.
    """
    if images.shape[1] < 2:
        raise ValueError(f"prediction_variances: needs K >= 2 replicas, got {images.shape[1]}")

    def var(x: Tensor) -> Tensor:  # written out: 2.5x faster than Tensor.var over dim 1 of [B, K, T, C, H, W]
        return (x - x.mean(1, keepdim=True)).pow(2).sum(1) / (x.shape[1] - 1)

    return torch.stack([var(images).mean((-3, -2, -1)), var(states).mean(-1), var(costs)])


@dataclass(frozen=True)
class UncertaintyStats:
    """Per-step mean and std ``[3, T]`` (rows ``UNCERTAINTY_TERMS``) of the replica variances, measured on
    training windows with the expert's actions (``worldmodel.driving.imagination.estimate_uncertainty_stats``).
    Steps beyond T use the last column."""

    mean: Tensor
    std: Tensor

    def __post_init__(self) -> None:
        if self.mean.shape != self.std.shape or self.mean.dim() != 2 or self.mean.shape[0] != len(UNCERTAINTY_TERMS):
            raise ValueError(f"UncertaintyStats: mean and std must be [3, T], got {tuple(self.mean.shape)}, "
                             f"{tuple(self.std.shape)}")  # fmt: skip
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all() and (self.std > 0).all()):
            raise ValueError("UncertaintyStats: mean and std must be finite and std > 0")

    def at(self, steps: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) ``[3, 1, steps]`` in ``like``'s dtype and device (last column repeated if needed)."""
        index = torch.arange(steps).clamp(max=self.mean.shape[1] - 1)
        return tuple(x[:, index][:, None].to(like) for x in (self.mean, self.std))

    def to_dict(self) -> dict:
        return {"terms": list(UNCERTAINTY_TERMS), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> UncertaintyStats:
        if list(d.get("terms", UNCERTAINTY_TERMS)) != list(UNCERTAINTY_TERMS):
            raise ValueError(f"UncertaintyStats: terms {d.get('terms')} are not {list(UNCERTAINTY_TERMS)}")
        return cls(torch.tensor(d["mean"], dtype=torch.float64), torch.tensor(d["std"], dtype=torch.float64))


def uncertainty_cost(
    variances: Tensor, stats: UncertaintyStats, hinge: float = 0.5, per_window: bool = False
) -> dict[str, Tensor]:
    """The hinged, normalised uncertainty cost of replica variances ``[3, B, T]`` (``prediction_variances``).

    Returns, per term of ``UNCERTAINTY_TERMS``, ``mean_{B,T} relu((var - mu_t) / sigma_t - hinge)`` (a scalar;
    ``[B]``, the mean over T only, with ``per_window``) and ``"total"``, their sum (the U of the objective).
    """
    mean, std = stats.at(variances.shape[-1], variances)
    terms = torch.relu((variances - mean) / std - hinge).mean(-1)  # [3, B]
    if not per_window:
        terms = terms.mean(-1)  # [3]
    out = {name: terms[i] for i, name in enumerate(UNCERTAINTY_TERMS)}
    out["total"] = terms.sum(0)
    return out


def discounted_mean(costs: Tensor, discount: float, per_window: bool = False) -> Tensor:
    """``sum_t discount^t costs[..., t] / (B T)``: costs ``[B, T]`` -> scalar (the policy objective's form);
    with ``per_window``, ``[B]``: each window's ``sum_t discount^t costs[b, t] / T`` (the planners' form)."""
    t = costs.shape[-1]
    weights = discount ** torch.arange(t, dtype=costs.dtype, device=costs.device)
    weighted = costs * weights
    return weighted.sum(-1) / t if per_window else weighted.sum() / costs.numel()
