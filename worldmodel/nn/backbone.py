"""The shared image backbone: frames (+ states) -> a feature map, and the blocks that decode it back.

PPUU stacks the Tc = 20 context frames into 60 channels and re-encodes the whole stack at every predicted
step. Here the first ``frame_layers`` convs run on each frame **once** (``encode_frames``; the last of them
outputs ``frame_dim`` channels), and ``fuse`` mixes the Tc per-frame maps of a window with M learned
temporal filters (a temporal basis shared by all channels, initialised as "last frame" and "last -
previous", i.e. position and velocity) before the remaining convs run on the M * frame_dim fused channels.
With ``frame_layers=1`` this is PPUU's first conv over the stacked frames made separable in space and time
(16 spatial kernels x 4 temporal filters = its 64 channels at 58 x 12), which is what makes it cacheable:
a rollout keeps the per-frame features of its window and, per step, encodes only the new frame.

Shapes: B batch, T time (Tc context), C channels, H, W image rows and columns; F, h1, w1 per-frame features
(``BackboneConfig.frame_shape``); D, h, w the fused map (``feature_dim``, ``map_size``); S state.

Blocks defined here and reused elsewhere:
- ``Backbone``: per-frame encoder + temporal fusion + trunk + state MLP; the forward model, the policy and
  the SSL objectives receive an instance (and so share its weights);
- ``Decoder``: transposed convs back to ``[B, C, H, W]`` (exact size) and an MLP state head;
- ``ResidualBottleneck``: PPUU's residual "u-network" over the map (conv down, global FC, conv up);
- ``MapEmbedding``: a vector -> map MLP (state, action and latent embeddings are added to the map);
- ``conv_stack``, ``mlp``: conv / linear layers with Dropout and LeakyReLU between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

FUSIONS = ("basis", "concat")


@dataclass(frozen=True)
class BackboneConfig:
    """Sizes of the backbone and decoder blocks. Presets: ``ppuu()`` (full size), ``tiny()`` (tests, CPU)."""

    in_channels: int = 3
    """Image channels C of each frame (3: lanes, vehicles, off-road; a policy may add the ego mask)."""
    height: int = 117
    """Image rows H (along the heading): PPUU's view's by default; ``train fm`` sets its data's
    (``ForwardModelConfig.for_data``)."""
    width: int = 24
    """Image columns W (across the heading): PPUU's view's by default, or the data's, as ``height``."""
    state_dim: int = 4
    """State size S: (x, y, vx, vy), normalised."""
    context_frames: int = 20
    """Frames Tc in a context window."""
    widths: tuple[int, ...] = (64, 128, 256)
    """Channels of the conv encoder (each conv: kernel 4, stride 2, padding 1); the last one is D."""
    frame_layers: int = 1
    """How many of the convs run on each frame before the fusion (1: fuse at 58 x 12, the cheapest to
    train; ``len(widths)``: fuse the final maps). The others run once per window on the fused map."""
    frame_dim: int | None = None
    """F: output channels of the last per-frame conv (the cache's width), in place of
    ``widths[frame_layers - 1]``; None: ``widths[frame_layers - 1] // fusion_filters``, so that the fused map
    has the encoder's width at that level (16 x 4 = 64 for ``ppuu()``)."""
    fusion: str = "basis"
    """How the Tc maps become M * F fused channels: ``"basis"``, M learned temporal filters shared by the
    channels (each output channel is one filter applied to one channel); ``"concat"``, the Tc * F stacked
    channels mixed by a 1x1 conv (any linear map over time and channels: PPUU's first conv, factorised into
    a per-frame spatial conv and this mixing; costs ~10 % more per step than ``"basis"`` at ``ppuu()``)."""
    fusion_filters: int = 4
    """M: fused channels per cached channel (the size of the temporal basis for ``"basis"``)."""
    bottleneck_channels: int = 64
    """Channels inside the residual bottleneck. PPUU's u-network keeps all D = 256 (15 % of the training
    FLOPs at ``ppuu()``); 64 costs 4 % and trains ~1.1x faster (``bench.fm``: ``wide_bottleneck``)."""
    hidden: int = 256
    """Hidden width of the MLPs (state, action and latent embeddings, latent heads, state head)."""
    embed_channels: int = 32
    """Channels r of the low-resolution maps through which vectors enter and leave the map: an embedding
    is MLP -> [r, h, w] -> 1x1 conv -> [D, h, w], the state head 1x1 conv -> [r, h, w] -> MLP (PPUU maps
    straight to D * h * w; the factorised form keeps the per-step weight gradients small)."""
    dropout: float = 0.1
    """Dropout probability after every hidden layer (Dropout2d on maps); MC dropout keeps it on in eval."""
    negative_slope: float = 0.2
    """Slope of the LeakyReLU activations."""

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"BackboneConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(f"BackboneConfig.widths must be non-empty and positive, got {self.widths}")
        if not 1 <= self.frame_layers <= len(self.widths):
            raise ValueError(f"BackboneConfig.frame_layers must be in [1, {len(self.widths)}]")
        if self.context_frames < 1 or self.frame_channels < 1 or self.fusion_filters < 1:
            raise ValueError("BackboneConfig: context_frames, frame_dim and fusion_filters must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BackboneConfig.dropout must be in [0, 1), got {self.dropout}")
        if min(self.map_size) < 1:
            raise ValueError(f"BackboneConfig: {self.height} x {self.width} px is too small for {self.widths}")

    @classmethod
    def ppuu(cls, **overrides) -> BackboneConfig:
        """PPUU's sizes: convs 64-128-256 on 117 x 24 frames -> a 256 x 14 x 3 map; 20 context frames."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> BackboneConfig:
        """A small backbone for tests and the CPU quickstart: convs 16-32-64, 4 context frames."""
        kwargs = dict(
            widths=(16, 32, 64), fusion_filters=2, bottleneck_channels=16, hidden=64, embed_channels=8, context_frames=4
        )
        return cls(**(kwargs | overrides))

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(rows, columns) of the input and after each conv: [(H, W), ..., (h, w)]."""
        sizes = [(self.height, self.width)]
        for _ in self.widths:
            r, c = sizes[-1]
            sizes.append((r // 2, c // 2))  # kernel 4, stride 2, padding 1 -> floor(n / 2)
        return sizes

    @property
    def frame_channels(self) -> int:
        """F: channels of one frame's cached features."""
        if self.frame_dim is not None:
            return self.frame_dim
        return max(1, self.widths[self.frame_layers - 1] // self.fusion_filters)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(F, h1, w1): shape of one frame's cached features (16 x 58 x 12 for ``ppuu()``)."""
        return (self.frame_channels, *self.sizes[self.frame_layers])

    @property
    def fused_channels(self) -> int:
        """Channels of the fused map that enters the trunk: M * F."""
        return self.fusion_filters * self.frame_channels

    @property
    def feature_dim(self) -> int:
        """D: channels of the output map."""
        return self.widths[-1]

    @property
    def map_size(self) -> tuple[int, int]:
        """(h, w): size of the output map (14 x 3 for 117 x 24 and three convs)."""
        return self.sizes[-1]

    @property
    def map_numel(self) -> int:
        """D * h * w: values in one output map."""
        return self.feature_dim * self.map_size[0] * self.map_size[1]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> BackboneConfig:
        return cls(**(dict(d) | {"widths": tuple(d["widths"])}))


def activation(dropout: float, negative_slope: float, maps: bool) -> list[nn.Module]:
    """Dropout (Dropout2d on maps) then LeakyReLU, both in place: after a layer whose output no one keeps."""
    drop = nn.Dropout2d(dropout, inplace=True) if maps else nn.Dropout(dropout, inplace=True)
    return [drop, nn.LeakyReLU(negative_slope, inplace=True)]


def mlp(sizes: Sequence[int], dropout: float, negative_slope: float) -> nn.Sequential:
    """Linear layers with Dropout + LeakyReLU between them (the last layer is linear)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += activation(dropout, negative_slope, maps=False)
    return nn.Sequential(*layers)


def conv_stack(channels: Sequence[int], dropout: float, negative_slope: float, last_linear: bool) -> list[nn.Module]:
    """Convs k4 s2 p1 (each halves H and W) with Dropout2d + LeakyReLU after each (not the last if linear)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        layers.append(nn.Conv2d(n_in, n_out, kernel_size=4, stride=2, padding=1))
        if not (last_linear and i == len(channels) - 2):
            layers += activation(dropout, negative_slope, maps=True)
    return layers


class MapEmbedding(nn.Module):
    """A vector [B, n] -> a map [B, D, h, w] that is added to the features (PPUU's state/action/z embeddings).

    MLP to a low-resolution map [r, h, w] (r = ``embed_channels``), then a 1x1 conv to D channels.
    """

    def __init__(self, n_in: int, config: BackboneConfig, layers: int = 3):
        super().__init__()
        c = config
        self.small = (c.embed_channels, *c.map_size)
        n_small = c.embed_channels * c.map_size[0] * c.map_size[1]
        self.net = mlp([n_in] + [c.hidden] * (layers - 1) + [n_small], c.dropout, c.negative_slope)
        self.expand = nn.Conv2d(c.embed_channels, c.feature_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, n] -> [B, D, h, w]."""
        return self.expand(self.net(x).view(x.shape[0], *self.small))


class Backbone(nn.Module):
    """Frames [B, Tc, C, H, W] + states [B, Tc, S] -> map [B, D, h, w].

    ``forward(images, states) == fuse(encode_frames(images), states)``; rollouts call the two halves
    separately and keep the per-frame features of their window as a cache.
    """

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        c = config
        n = c.frame_layers
        chans = [c.in_channels, *c.widths]
        self.frame_encoder = nn.Sequential(
            *conv_stack([*chans[:n], c.frame_channels], c.dropout, c.negative_slope, last_linear=True)
        )
        self.temporal_basis = self.mix = None
        if c.fusion == "basis":
            tc, m = c.context_frames, c.fusion_filters
            basis = torch.randn(m, tc) / tc**0.5
            basis[: min(m, 2)] = 0.0
            basis[0, -1] = 1.0  # the last frame
            if m > 1 and tc > 1:
                basis[1, -1], basis[1, -2] = 1.0, -1.0  # the last change
            self.temporal_basis = nn.Parameter(basis)  # [M, Tc]
        else:
            self.mix = nn.Conv2d(c.context_frames * c.frame_channels, c.fused_channels, 1)
        trunk = activation(c.dropout, c.negative_slope, maps=True)
        if n < len(c.widths):
            trunk += conv_stack([c.fused_channels, *chans[n + 1 :]], c.dropout, c.negative_slope, last_linear=True)
        else:
            trunk.append(nn.Conv2d(c.fused_channels, c.feature_dim, 1))
        self.trunk = nn.Sequential(*trunk)
        self.state_embedding = MapEmbedding(c.context_frames * c.state_dim, c)

    def encode_frames(self, images: Tensor) -> Tensor:
        """Encode each frame on its own. images: [B, T, C, H, W] float in [0, 1] -> [B, T, F, h1, w1]."""
        b = images.shape[0]
        x = self.frame_encoder(rearrange(images, "b t c h w -> (b t) c h w"))
        return rearrange(x, "(b t) f h w -> b t f h w", b=b)

    def fuse(self, features: Tensor | Sequence[Tensor], states: Tensor) -> Tensor:
        """Fuse a window of per-frame features with its states.

        features: [B, Tc, F, h1, w1] from ``encode_frames``, or a sequence of Tc tensors [B, F, h1, w1];
        states: [B, Tc, S] normalised. Returns the map [B, D, h, w].
        """
        if states.shape[1] != self.config.context_frames:
            raise ValueError(f"Backbone.fuse: expected {self.config.context_frames} frames and states, got states "
                             f"{tuple(states.shape)}")  # fmt: skip
        return self.fuse_mixed(self.mix_window(features), states)

    def mix_window(self, features: Tensor | Sequence[Tensor]) -> Tensor:
        """The first half of ``fuse``: the window's per-frame features mixed over time -> [B, M F, h1, w1]
        (``fused_channels``). Cheap per window, but it reads all Tc frames: several windows are best mixed one
        by one (in cache) and only then batched through ``fuse_mixed``."""
        c = self.config
        frames = features.unbind(1) if isinstance(features, Tensor) else tuple(features)
        if len(frames) != c.context_frames:
            raise ValueError(f"Backbone.fuse: expected {c.context_frames} context frames, got {len(frames)}")
        if self.mix is not None:
            return self.mix(torch.cat(frames, dim=1))  # B (Tc F) h1 w1 -> B (M F) h1 w1
        stacked = torch.stack(frames, dim=0)  # Tc B F h1 w1
        mixed = self.temporal_basis @ stacked.flatten(1)  # M (B F h1 w1): one pass over the window
        return rearrange(mixed.view(-1, *stacked.shape[1:]), "m b f h w -> b (m f) h w")

    def fuse_mixed(self, mixed: Tensor, states: Tensor) -> Tensor:
        """The second half of ``fuse``: mixed [B, M F, h1, w1] (``mix_window``) and states [B, Tc, S] -> the map
        [B, D, h, w]."""
        return self.trunk(mixed) + self.state_embedding(rearrange(states, "b t s -> b (t s)"))

    def forward(self, images: Tensor, states: Tensor) -> Tensor:
        """images: [B, Tc, C, H, W] in [0, 1], states: [B, Tc, S] normalised -> [B, D, h, w]."""
        return self.fuse(self.encode_frames(images), states)


class ResidualBottleneck(nn.Module):
    """PPUU's residual u-network: conv down (k3 s2), a global FC bottleneck, transposed conv back up.

    ``forward`` returns the update only; callers add it: ``h = h + bottleneck(h)``.
    """

    def __init__(self, config: BackboneConfig):
        super().__init__()
        c = config
        d, (h, w) = c.feature_dim, c.map_size
        n = c.bottleneck_channels
        hs, ws = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # conv k3 s2 p1
        self.small = (n, hs, ws)
        self.down = nn.Sequential(
            nn.Conv2d(d, n, 3, stride=2, padding=1), *activation(c.dropout, c.negative_slope, maps=True)
        )
        self.fc = nn.Sequential(
            mlp([n * hs * ws, c.hidden, n * hs * ws], c.dropout, c.negative_slope),
            *activation(c.dropout, c.negative_slope, maps=False),
        )
        pad = (h - (2 * hs - 1), w - (2 * ws - 1))  # back to the exact size: out = 2 n - 1 + output_padding
        self.up = nn.ConvTranspose2d(n, d, 3, stride=2, padding=1, output_padding=pad)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, D, h, w] -> update [B, D, h, w]."""
        y = self.fc(self.down(x).flatten(1)).view(x.shape[0], *self.small)
        return self.up(y)


class Decoder(nn.Module):
    """Map [B, D, h, w] -> image update [B, C, H, W] (transposed convs, exact size) and state update [B, S].

    The output layers are linear; ``zero_last()`` zeroes them so that both updates start at zero.
    """

    def __init__(self, config: BackboneConfig, out_channels: int | None = None):
        super().__init__()
        c = config
        chans = [c.in_channels if out_channels is None else out_channels, *c.widths]  # per size, input first
        layers: list[nn.Module] = []
        for i in range(len(c.widths), 0, -1):
            (r_out, c_out), (r_in, c_in) = c.sizes[i - 1], c.sizes[i]
            pad = (r_out - 2 * r_in, c_out - 2 * c_in)  # k4 s2 p1: out = 2 n + output_padding
            layers.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 4, stride=2, padding=1, output_padding=pad))
            if i > 1:
                layers += activation(c.dropout, c.negative_slope, maps=True)
        self.image = nn.Sequential(*layers)
        n_small = c.embed_channels * c.map_size[0] * c.map_size[1]
        self.state = nn.Sequential(
            nn.Conv2d(c.feature_dim, c.embed_channels, 1),
            *activation(c.dropout, c.negative_slope, maps=True),
            nn.Flatten(),
            mlp([n_small, c.hidden, c.hidden, c.state_dim], c.dropout, c.negative_slope),
        )

    def zero_last(self) -> None:
        """Zero the image and state output layers: the decoder then outputs zero updates."""
        for layer in (self.image[-1], self.state[-1][-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h: [B, D, h, w] -> (image update [B, C, H, W], state update [B, S])."""
        return self.image(h), self.state(h)


__all__ = [
    "FUSIONS",
    "Backbone",
    "BackboneConfig",
    "Decoder",
    "MapEmbedding",
    "ResidualBottleneck",
    "activation",
    "conv_stack",
    "mlp",
]
