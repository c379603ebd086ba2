"""Views of traffic windows that respect what the channels mean (SPEC.md §7).

The ego views' channels are semantic (0 lane markings, 1 other vehicles, 2 off-road; a policy may add the
ego mask as 3): colour jitter or grayscale would change what the scene *is*. Two views of one sample are
made from three transformations, all drawn from an explicit ``torch.Generator``:

1. **temporal neighbours**: the dataset serves ``Tc + max_offset`` consecutive frames of one car; view a
   is frames ``0 .. Tc-1`` and view b frames ``k .. k+Tc-1`` with k uniform in ``[min_offset, max_offset]``
   (0.1 s per frame). Each view's ego-relative positions are re-expressed relative to its own last frame;
2. **small translations**: each view shifted by integer (dy, dx) px, |dy| <= ``max_shift_rows``,
   |dx| <= ``max_shift_cols`` (default 2 and 0, see the fields), the same shift for every frame of the view. Fill beyond the view's edge: the static road channels (lanes,
   off-road) **repeat their edge pixel** (road geometry continues smoothly over a few pixels: an off-road
   band at the edge stays off-road, a lane line running along the view continues), while the vehicles
   channel (and any extra channel) is **filled with 0**: what lies beyond the edge is unknown, and
   replicating would stretch a car cut by the edge. A shift moves the scene relative to the (fixed,
   centred) ego, so it blurs headway (rows) and lateral offset (columns) by 0.617 m per px: keep it small;
3. **random erasing**: with probability ``erase_prob``, one rectangle (area ``erase_area`` of the image,
   aspect ratio in [1/3, 3]) set to 0 in every channel and frame of the view ("nothing there");
4. optionally, **vehicle dropout** (``drop_vehicles``): the vehicles channel of a view blanked in every
   frame, leaving the road alone. The other cars make every window unique, so without it the objectives can
   match the two views on the cars only and let the road go; a view without cars can only be matched to its
   partner through what both still share: where the ego is on the road (its offset in the lane, the lanes
   and off-road around it) and its states;
5. optionally, **state dropout** (``drop_states``): a view's states replaced by zeros, drawn per view or
   for both views of a pair together (``drop_states_per``).

Shapes: B batch, T time (Tc per view), C channels, H, W; S state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

ROAD_CHANNELS = (0, 2)
"""Channels that repeat their edge pixel when a view is shifted (lanes, off-road); the others fill with 0."""
VEHICLES_CHANNEL = 1
"""The other vehicles' channel (blanked by ``drop_vehicles``)."""


@dataclass(frozen=True)
class ViewConfig:
    """How the two views of a window are drawn."""

    min_offset: int = 1
    """Smallest time offset between the two views [frames of 0.1 s]."""
    max_offset: int = 3
    """Largest time offset between the two views [frames]; the dataset serves Tc + max_offset frames."""
    max_shift_rows: int = 2
    """Largest translation along the heading (rows) [px] (0.617 m per px): blurs the headway by <= 1.2 m."""
    max_shift_cols: int = 0
    """Largest translation across the heading (columns) [px]. 0 by default: a column shift moves the lanes
    relative to the ego by 0.617 m per px, more than the spread of the lateral offset within a lane (std
    ~0.4 m in the tiny data), so invariance to it would teach the encoder to ignore where it is in its lane."""
    erase_prob: float = 0.5
    """Probability that a view gets one erased rectangle."""
    erase_area: tuple[float, float] = (0.02, 0.12)
    """Range of the erased rectangle's area, as a fraction of H * W."""
    drop_vehicles: float = 0.0
    """Probability that a view's vehicles channel (``VEHICLES_CHANNEL``) is set to 0 in every frame."""
    drop_states: float = 0.0
    """Probability that a view's states are replaced by zeros (the normalised mean). The two views of one
    car share its speed and recent path, which the state alone tells; dropping it closes that shortcut and
    makes the images carry the invariance."""

    drop_states_per: str = "view"
    """Who draws the state dropout: ``"view"`` (each view on its own, so a pair can have one view with its
    states and one without: the objectives then learn to ignore the states, which the speed probe reads) or
    ``"pair"`` (both views of a window together: the images must carry the match when the states are gone,
    and no pair teaches invariance to them)."""

    def __post_init__(self) -> None:
        if self.drop_states_per not in ("view", "pair"):
            raise ValueError(f"ViewConfig.drop_states_per must be 'view' or 'pair', got {self.drop_states_per!r}")
        if not 0 <= self.min_offset <= self.max_offset or self.max_offset < 1:
            raise ValueError(f"ViewConfig: need 0 <= min_offset <= max_offset, max_offset >= 1; got {self}")
        if min(self.max_shift_rows, self.max_shift_cols) < 0 or not 0.0 <= self.erase_prob <= 1.0:
            raise ValueError(f"ViewConfig: max_shift_rows, max_shift_cols >= 0 and erase_prob in [0, 1]; got {self}")
        if not (0.0 <= self.drop_states <= 1.0 and 0.0 <= self.drop_vehicles <= 1.0):
            raise ValueError(f"ViewConfig: drop_states and drop_vehicles must be in [0, 1]; got {self}")
        if not 0.0 < self.erase_area[0] <= self.erase_area[1] < 1.0:
            raise ValueError(f"ViewConfig.erase_area must satisfy 0 < lo <= hi < 1, got {self.erase_area}")

    def to_dict(self) -> dict:
        return dict(self.__dict__) | {"erase_area": list(self.erase_area)}

    @classmethod
    def from_dict(cls, d: dict) -> ViewConfig:
        return cls(**(dict(d) | {"erase_area": tuple(d["erase_area"])}))


def _uniform_int(low: int, high: int, n: int, generator: torch.Generator) -> Tensor:
    """n integers uniform in [low, high] (inclusive), on the CPU."""
    return torch.randint(low, high + 1, (n,), generator=generator)


def temporal_pair(
    images: Tensor, states: Tensor, offsets: Tensor, context_frames: int, state_mean: Tensor, state_std: Tensor
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Split windows into two views ``offsets`` frames apart.

    images: [B, T, C, H, W] with T >= Tc + max(offsets); states: [B, T, S] normalised with
    (``state_mean``, ``state_std``) [S], positions (first two entries) relative to any one frame.
    offsets: [B] int. Returns ((images_a, states_a), (images_b, states_b)), [B, Tc, C, H, W] and [B, Tc, S],
    each view's positions relative to its own last frame.
    """
    tc = context_frames
    offsets = offsets.cpu()
    images_b = torch.empty_like(images[:, :tc])
    states_b = torch.empty_like(states[:, :tc])
    for k in torch.unique(offsets).tolist():
        chosen = (offsets == k).nonzero()[:, 0].to(images.device)
        images_b[chosen] = images[chosen, k : k + tc]
        states_b[chosen] = states[chosen, k : k + tc]
    views = []
    for view_images, view_states in ((images[:, :tc], states[:, :tc]), (images_b, states_b)):
        raw = view_states * state_std + state_mean  # B Tc S in SI
        xy = raw[..., :2] - raw[:, -1:, :2]
        raw = torch.cat([xy, raw[..., 2:]], dim=-1)
        views.append((view_images, (raw - state_mean) / state_std))
    return views[0], views[1]


def translate(images: Tensor, shifts: Tensor, road_channels: tuple[int, ...] = ROAD_CHANNELS) -> Tensor:
    """Shift each sample's frames by integer (dy, dx) px (content moves down / right for positive values).

    images: [B, T, C, H, W]; shifts: [B, 2] int (dy, dx). Beyond the edge, ``road_channels`` repeat the
    edge pixel and the other channels are 0 (see the module doc).
    """
    b, t, c, h, w = images.shape
    s = int(shifts.abs().max()) if len(shifts) else 0
    if s == 0:
        return images
    padded = F.pad(rearrange(images, "b t c h w -> (b t) c h w"), (s, s, s, s), mode="replicate")
    padded = rearrange(padded, "(b t) c h w -> b t c h w", b=b)
    others = [k for k in range(c) if k not in road_channels]
    border = torch.ones(h + 2 * s, w + 2 * s, dtype=torch.bool, device=images.device)
    border[s : s + h, s : s + w] = False
    padded[:, :, others] = padded[:, :, others].masked_fill(border, 0.0)
    out = torch.empty_like(images)
    shifts = shifts.cpu()
    for dy, dx in torch.unique(shifts, dim=0).tolist():
        chosen = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero()[:, 0].to(images.device)
        out[chosen] = padded[chosen, :, :, s - dy : s - dy + h, s - dx : s - dx + w]  # B T C H W
    return out


def erase(images: Tensor, boxes: Tensor) -> Tensor:
    """Set a rectangle of every frame to 0. images: [B, T, C, H, W]; boxes: [B, 4] int (top, left, height,
    width), height 0 for no rectangle."""
    _, _, _, h, w = images.shape
    dev = images.device
    top, left, hh, ww = (boxes[:, i].to(dev)[:, None] for i in range(4))
    rows = torch.arange(h, device=dev)[None]
    cols = torch.arange(w, device=dev)[None]
    in_r = (rows >= top) & (rows < top + hh)  # B H
    in_c = (cols >= left) & (cols < left + ww)  # B W
    mask = in_r[:, :, None] & in_c[:, None, :]  # B H W
    return images * ~mask[:, None, None]


def drop_channel(images: Tensor, dropped: Tensor, channel: int = VEHICLES_CHANNEL) -> Tensor:
    """``channel`` set to 0 in every frame of the samples where ``dropped`` [B] bool is set.
    images: [B, T, C, H, W] -> a new tensor of the same shape."""
    keep = torch.ones(images.shape[0], images.shape[2], dtype=images.dtype, device=images.device)  # B C
    keep[dropped.to(images.device), channel] = 0.0
    return images * keep[:, None, :, None, None]


def random_boxes(n: int, height: int, width: int, config: ViewConfig, generator: torch.Generator) -> Tensor:
    """[n, 4] (top, left, height, width) of random-erasing rectangles; height 0 where none is drawn."""
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    lo, hi = config.erase_area
    area = (lo + (hi - lo) * u[:, 0]) * height * width
    log_ratio = math.log(1 / 3) + (math.log(3) - math.log(1 / 3)) * u[:, 1]
    hh = torch.sqrt(area * torch.exp(log_ratio)).round().clamp(1, height)
    ww = (area / hh).round().clamp(1, width)
    top = (u[:, 2] * (height - hh + 1)).floor()
    left = (u[:, 3] * (width - ww + 1)).floor()
    drawn = torch.rand(n, generator=generator) < config.erase_prob
    boxes = torch.stack([top, left, hh, ww], dim=1).long()
    boxes[~drawn, 2] = 0
    return boxes


def make_views(
    images: Tensor,
    states: Tensor,
    context_frames: int,
    state_mean: Tensor,
    state_std: Tensor,
    config: ViewConfig,
    generator: torch.Generator,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Two augmented views of each window: temporal offset, then translation and erasing per view.

    images: [B, Tc + max_offset, C, H, W] in [0, 1]; states: [B, Tc + max_offset, S] normalised;
    generator: a CPU generator (every random draw comes from it). Returns two (images [B, Tc, C, H, W],
    states [B, Tc, S]).
    """
    b, t, _, h, w = images.shape
    if t < context_frames + config.max_offset:
        raise ValueError(f"make_views: {t} frames, need Tc + max_offset = {context_frames + config.max_offset}")
    offsets = _uniform_int(config.min_offset, config.max_offset, b, generator)
    pair = temporal_pair(images, states, offsets, context_frames, state_mean, state_std)
    per_pair = config.drop_states > 0 and config.drop_states_per == "pair"
    keep_pair = torch.rand(b, generator=generator) >= config.drop_states if per_pair else None
    out = []
    for view_images, view_states in pair:
        sr, sc = config.max_shift_rows, config.max_shift_cols
        shifts = torch.stack([_uniform_int(-sr, sr, b, generator), _uniform_int(-sc, sc, b, generator)], dim=1)
        view_images = translate(view_images, shifts)
        view_images = erase(view_images, random_boxes(b, h, w, config, generator))
        if config.drop_vehicles > 0:
            view_images = drop_channel(view_images, torch.rand(b, generator=generator) < config.drop_vehicles)
        if config.drop_states > 0:
            keep = keep_pair if keep_pair is not None else torch.rand(b, generator=generator) >= config.drop_states
            view_states = view_states * keep.to(view_states.device)[:, None, None]
        out.append((view_images, view_states))
    return out[0], out[1]


__all__ = [
    "ROAD_CHANNELS",
    "VEHICLES_CHANNEL",
    "ViewConfig",
    "drop_channel",
    "erase",
    "make_views",
    "random_boxes",
    "temporal_pair",
    "translate",
]
