"""Forward-model training throughput: ``bench_fm(quick) -> dict`` (called by ``worldmodel bench fm``).

Every variant runs one full training step (forward, backward, gradient clipping, Adam step) on synthetic
batch-8 windows of 20 context + 20 predicted frames, VAE mode, dropout 0.1. The variants are timed in turn
(round-robin) within one process, so their ratios hold on a loaded machine even when the rates do not:

- ``ppuu``: ``ForwardModelConfig.ppuu("vae")``: per-frame encoding, cached, temporal-basis fusion at 58 x 12;
- ``ppuu_reference``: PPUU's compute pattern at the same widths (``_PPUUReference``): the 20 frames stacked
  as 60 channels and re-encoded at every step, the target frame encoded again by a second full encoder;
- the choices: ``channels_last`` (memory format), ``late_fusion`` (all three convs per frame, fuse the
  256 x 14 x 3 maps), ``concat_fusion`` (the Tc cached maps stacked and mixed by a 1x1 conv instead of the
  temporal basis), ``wide_bottleneck`` (256 channels in the residual bottleneck, as PPUU), ``deterministic``
  (no posterior); ``tiny``: ``ForwardModelConfig.tiny("vae")`` with 20 + 20 frames.

Figures: ``train_windows_per_s_ppuu``, ``train_windows_per_s_tiny``, ``flops_per_window_ppuu`` (forward +
backward, ``FlopCounterMode``), ``matmul_gflops`` (float32 2048^2 matmul in the same run), ``mfu_ppuu`` =
flops_per_window * windows_per_s / matmul FLOP/s, the reference's, ``speedup_vs_ppuu_reference``, and
``variants`` (windows/s, FLOPs per window and MFU of each).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from worldmodel.nn.backbone import BackboneConfig, activation, mlp
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig

BATCH = 8
CONTEXT_FRAMES = 20
PREDICTED_FRAMES = 20


def synthetic_batch(
    batch: int, context: int, predicted: int, height: int = 117, width: int = 24, seed: int = 0
) -> dict[str, Tensor]:
    """Random windows with the shapes of ``worldmodel.data.windows`` (values do not matter for timing)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "context_images": torch.rand(batch, context, 3, height, width, generator=g),
        "context_states": torch.randn(batch, context, 4, generator=g),
        "actions": torch.randn(batch, predicted, 2, generator=g),
        "future_images": torch.rand(batch, predicted, 3, height, width, generator=g),
        "future_states": torch.randn(batch, predicted, 4, generator=g),
    }


class _PPUUReference(nn.Module):
    """PPUU's forward-model compute pattern (VAE, fixed prior), for side-by-side timing only.

    Early fusion: the Tc frames are stacked as 3 * Tc channels and the whole stack is re-encoded at every
    predicted step; the target frame goes through a second encoder; PPUU's u-network and decoder shapes.
    """

    def __init__(self, c: BackboneConfig, n_z: int = 32):
        super().__init__()
        c0, c1, d = c.widths
        p, s = c.dropout, c.negative_slope
        h, w = c.map_size
        self.c, self.n_z, self.map = c, n_z, (d, h, w)

        def act() -> list[nn.Module]:  # in place, as PPUU
            return activation(p, s, maps=True)

        def encoder(n_in: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(n_in, c0, 4, 2, 1), *act(),
                nn.Conv2d(c0, c1, 4, 2, 1), *act(),
                nn.Conv2d(c1, d, 4, 2, 1),
            )  # fmt: skip

        self.x_encoder = encoder(3 * c.context_frames)
        self.y_encoder = encoder(3)
        self.s_encoder = mlp([4 * c.context_frames, c.hidden, c.hidden, d * h * w], p, s)
        self.a_encoder = mlp([2, c.hidden, c.hidden, d * h * w], p, s)
        self.z_network = mlp([d * h * w, c.hidden, c.hidden, 2 * n_z], p, s)
        self.z_expander = nn.Linear(n_z, d * h * w)
        self.u_down = nn.Sequential(nn.Conv2d(d, d, 4, 2, 1), *act(), nn.Conv2d(d, d, (4, 1), 2, 1))
        self.u_small = self.u_down(torch.zeros(1, d, h, w)).shape[1:]
        n_small = self.u_small.numel()
        self.u_fc = mlp([n_small, d, n_small], p, s)
        self.u_up = nn.Sequential(
            nn.ConvTranspose2d(d, d, (4, 1), 2, 1), *act(),
            nn.ConvTranspose2d(d, d, (4, 3), 2, 0),
        )  # fmt: skip
        self.image_decoder = nn.Sequential(
            nn.ConvTranspose2d(d, c1, 4, 2, 1), *act(),
            nn.ConvTranspose2d(c1, c0, 5, 2, (0, 1)), *act(),
            nn.ConvTranspose2d(c0, 3, 2, 2, (0, 1)),
        )  # fmt: skip
        self.state_reduce = nn.Sequential(nn.Conv2d(d, d, 4, 2, 1), *act())
        n_reduced = self.state_reduce(torch.zeros(1, d, h, w)).numel()
        self.state_decoder = mlp([n_reduced, c.hidden, c.hidden, 4], p, s)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images, states = batch["context_images"], batch["context_states"]
        actions, targets = batch["actions"], batch["future_images"]
        b, tp = actions.shape[:2]
        pred_images, pred_states, kl = [], [], 0.0
        for t in range(tp):
            h_x = self.x_encoder(images.flatten(1, 2)) + self.s_encoder(states.flatten(1)).view(b, *self.map)
            h_y = self.y_encoder(targets[:, t])
            mu, logvar = self.z_network((h_x + h_y).flatten(1)).chunk(2, dim=1)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            kl = kl - 0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1).mean()
            h = h_x + self.z_expander(z).view(b, *self.map) + self.a_encoder(actions[:, t]).view(b, *self.map)
            u = self.u_fc(self.u_down(h).flatten(1)).view(b, *self.u_small)
            h = h + self.u_up(u)
            d_image = self.image_decoder(h)[:, :, : self.c.height, : self.c.width]
            image = torch.sigmoid(d_image + images[:, -1])  # PPUU's (non-identity) update
            state = states[:, -1] + self.state_decoder(self.state_reduce(h).flatten(1))
            pred_images.append(image)
            pred_states.append(state)
            images = torch.cat([images[:, 1:], image[:, None]], 1)
            states = torch.cat([states[:, 1:], state[:, None]], 1)
        image_mse = (torch.stack(pred_images, 1) - targets).pow(2).mean()
        state_mse = (torch.stack(pred_states, 1) - batch["future_states"]).pow(2).mean()
        return {"loss": image_mse + state_mse + 1e-6 * kl / tp}


def _train_step_fn(model: nn.Module, batch: dict[str, Tensor]) -> Callable[[], None]:
    """One full training step: forward, backward, gradient clipping (5, as PPUU), Adam step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(batch)["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    return run


def _channels_last(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    out = dict(batch)
    for k in ("context_images", "future_images"):
        x = batch[k]
        out[k] = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(x.shape)
    return out


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Float32 matmul throughput [GFLOP/s] of an n x n product, best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call (matmuls and convolutions, forward and backward) by ``FlopCounterMode``."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _time_alternating(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each step, the steps called in turn (round-robin) so load hits all alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def variants(batch: dict[str, Tensor], tiny_context: int = CONTEXT_FRAMES) -> dict[str, Callable[[], None]]:
    """The training steps measured side by side: ours at PPUU size, PPUU's pattern, the choices, tiny."""
    ppuu = ForwardModelConfig.ppuu("vae", dropout=0.1)
    channels_last = ForwardModel(ppuu).to(memory_format=torch.channels_last)
    tiny = ForwardModelConfig.tiny("vae", backbone=BackboneConfig.tiny(context_frames=tiny_context))

    def with_backbone(**changes) -> ForwardModelConfig:
        return replace(ppuu, backbone=replace(ppuu.backbone, **changes))

    return {
        "ppuu": _train_step_fn(ForwardModel(ppuu), batch),
        "ppuu_reference": _train_step_fn(_PPUUReference(ppuu.backbone, ppuu.n_z), batch),
        "channels_last": _train_step_fn(channels_last, _channels_last(batch)),
        "late_fusion": _train_step_fn(ForwardModel(with_backbone(frame_layers=3)), batch),
        "concat_fusion": _train_step_fn(ForwardModel(with_backbone(fusion="concat")), batch),
        "wide_bottleneck": _train_step_fn(ForwardModel(with_backbone(bottleneck_channels=256)), batch),
        "deterministic": _train_step_fn(ForwardModel(replace(ppuu, mode="deterministic")), batch),
        "tiny": _train_step_fn(ForwardModel(tiny), batch),
    }


def bench_fm(quick: bool = False) -> dict:
    """Measure forward-model training throughput (see the module docstring). ``quick``: fewer steps."""
    rounds, warmup = (2, 0) if quick else (5, 1)
    with torch.random.fork_rng():  # seeded weights and batch; the caller's RNG state is left as it was
        torch.manual_seed(0)
        batch = synthetic_batch(BATCH, CONTEXT_FRAMES, PREDICTED_FRAMES)
        steps = variants(batch)
        flops = {name: count_flops(step) / BATCH for name, step in steps.items()}  # (also a warm-up step)
        peak = matmul_gflops()
        seconds = _time_alternating(steps, rounds, warmup)
        peak = max(peak, matmul_gflops())
    rate = {name: BATCH / s for name, s in seconds.items()}
    mfu = {name: flops[name] * rate[name] / (peak * 1e9) for name in steps}
    return {
        "train_windows_per_s_ppuu": rate["ppuu"],
        "train_windows_per_s_tiny": rate["tiny"],
        "flops_per_window_ppuu": flops["ppuu"],
        "matmul_gflops": peak,
        "mfu_ppuu": mfu["ppuu"],
        "ppuu_reference_windows_per_s": rate["ppuu_reference"],
        "flops_per_window_ppuu_reference": flops["ppuu_reference"],
        "mfu_ppuu_reference": mfu["ppuu_reference"],
        "speedup_vs_ppuu_reference": rate["ppuu"] / rate["ppuu_reference"],
        "variants": {
            name: {"windows_per_s": rate[name], "flops_per_window": flops[name], "mfu": mfu[name]} for name in steps
        },
        "settings": {
            "batch": BATCH,
            "context_frames": CONTEXT_FRAMES,
            "predicted_frames": PREDICTED_FRAMES,
            "mode": "vae",
            "dropout": 0.1,
            "rounds": rounds,
            "threads": torch.get_num_threads(),
            "torch_compile": "off (compiling the trunk, bottleneck and decoder took ~55 s and gave no speed-up on CPU)",
        },
    }


__all__ = ["bench_fm", "count_flops", "matmul_gflops", "synthetic_batch", "variants"]
