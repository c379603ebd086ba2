"""Videos (imageio) and plots (matplotlib) for people: simulator videos, forward-model prediction videos
(``render_predictions``) and evaluation plots (``plot_fm_eval``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from worldmodel.files import atomic_output


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad a frame to even height and width (H.264 needs them)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frame


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 10.0) -> Path:
    """Write RGB uint8 frames ``[H, W, 3]`` to ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif``, atomically
    (a temporary file renamed at the end). Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"{path}: video must end in .mp4 or .gif")
    with atomic_output(path, make_parents=True) as tmp:  # the temporary name ends in the same suffix
        if suffix == ".mp4":
            writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1)
        else:
            writer = imageio.get_writer(tmp, mode="I", duration=1000.0 / fps, loop=0)
        with writer:
            for frame in frames:
                writer.append_data(_even(np.asarray(frame, dtype=np.uint8)))
    return path


# ---------------------------------------------------------------------------- forward-model predictions
OBSERVED_RGB = (40, 200, 40)  # frame of the observed (context) frames
IMAGINED_RGB = (220, 40, 40)  # frame of the imagined (predicted) frames
TRUTH_RGB = (160, 160, 160)  # frame of the true future frames
LABEL_WIDTH_PX = 84
HEADER_HEIGHT_PX = 26
GAP_PX = 8


def framed_tile(image: np.ndarray | None, rgb: tuple[int, int, int], scale: int, shape: tuple[int, int]) -> np.ndarray:
    """One framed tile: image [C, H, W] float in [0, 1] (None: black), heading turned to the right, scaled
    ``scale`` x (nearest), a 2-pixel frame of colour ``rgb``. shape: (H, W) of the view."""
    h, w = shape
    if image is None:
        hwc = np.zeros((w, h, 3), np.uint8)
    else:
        hwc = np.rot90(np.clip(np.asarray(image).transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8), k=-1)
    big = np.repeat(np.repeat(hwc, scale, axis=0), scale, axis=1)
    return np.pad(big, ((2, 2), (2, 2), (0, 0)), constant_values=0) + _frame_mask(big.shape[:2], rgb)


def _frame_mask(inner: tuple[int, int], rgb: tuple[int, int, int]) -> np.ndarray:
    """[h + 4, w + 4, 3] uint8: ``rgb`` on the 2-pixel border, 0 inside."""
    out = np.zeros((inner[0] + 4, inner[1] + 4, 3), np.uint8)
    out[:2], out[-2:], out[:, :2], out[:, -2:] = rgb, rgb, rgb, rgb
    return out


def draw_text(canvas: np.ndarray, text: str, x: int, y: int, rgb=(235, 235, 235), scale: float = 0.45) -> None:
    """``text`` on ``canvas`` (RGB uint8, in place) with its baseline's left end at pixel (x, y)."""
    import cv2

    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, rgb, 1, cv2.LINE_AA)


def prediction_frames(
    context: np.ndarray,
    truth: np.ndarray,
    mean: np.ndarray,
    samples: np.ndarray,
    uncertainty: np.ndarray | None = None,
    scale: int = 3,
    dt: float = 0.1,
) -> list[np.ndarray]:
    """Video frames (RGB uint8) comparing predictions with the truth, one column per window.

    context: [N, Tc, C, H, W]; truth, mean: [N, Tp, C, H, W]; samples: [N, K, Tp, C, H, W]; uncertainty
    (MC-dropout std): [N, Tp, C, H, W] or None; all float in [0, 1]. Rows: truth, mean prediction, the K
    samples, |mean - truth| and the uncertainty (scaled by its 99th percentile over the video). Frame t
    shows context frame t (green frames: observed) and then predicted step t - Tc (red: imagined; grey:
    the true future). Views are turned so that the heading points right.
    """
    n, tc = context.shape[:2]
    k, tp = samples.shape[1:3]
    shape = context.shape[-2:]
    unc = None
    if uncertainty is not None:
        unc = uncertainty / max(float(np.percentile(uncertainty, 99)), 1e-6)
    labels = ["truth", "mean", *[f"sample {i + 1}" for i in range(k)], "|error|"] + (
        ["dropout sd"] if unc is not None else []
    )
    tile_h, tile_w = shape[1] * scale + 4, shape[0] * scale + 4
    height = HEADER_HEIGHT_PX + len(labels) * (tile_h + 4)
    width = LABEL_WIDTH_PX + n * (tile_w + GAP_PX)
    frames = []
    for t in range(tc + tp):
        canvas = np.full((height, width, 3), 24, np.uint8)
        future = t >= tc
        when = f"t = {(t - tc + 1) * dt:+.1f} s  imagined" if future else f"t = {(t - tc + 1) * dt:+.1f} s  observed"
        draw_text(canvas, when + "   (green: observed, red: imagined, grey: true future)", 6, 18)
        for row, label in enumerate(labels):
            y = HEADER_HEIGHT_PX + row * (tile_h + 4)
            draw_text(canvas, label, 4, y + tile_h // 2 + 5)
            for i in range(n):
                x = LABEL_WIDTH_PX + i * (tile_w + GAP_PX)
                if not future:
                    observed = row < 2 + k
                    tile = framed_tile(
                        context[i, t] if observed else None, OBSERVED_RGB if observed else (60, 60, 60), scale, shape
                    )
                else:
                    s = t - tc
                    if label == "truth":
                        image, rgb = truth[i, s], TRUTH_RGB
                    elif label == "mean":
                        image, rgb = mean[i, s], IMAGINED_RGB
                    elif label.startswith("sample"):
                        image, rgb = samples[i, row - 2, s], IMAGINED_RGB
                    elif label == "|error|":
                        image, rgb = np.abs(mean[i, s] - truth[i, s]), IMAGINED_RGB
                    else:
                        image, rgb = np.clip(unc[i, s], 0, 1), IMAGINED_RGB
                    tile = framed_tile(image, rgb, scale, shape)
                canvas[y : y + tile_h, x : x + tile_w] = tile
        frames.append(canvas)
    return frames


def render_predictions(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    windows: int = 4,
    k: int = 3,
    split: str = "test",
    horizon: int | None = None,
    seed: int = 0,
    scale: int = 3,
    fps: float = 5.0,
    device: str = "auto",
) -> dict:
    """Write a prediction video (``.mp4`` or ``.gif``) of ``windows`` windows of a split (drawn with ``seed``):
    truth, mean prediction, ``k`` sampled futures, error and MC-dropout uncertainty. ``horizon``: predicted
    steps (default: the training run's). Returns a summary (path, frames, window indices)."""
    import torch

    from worldmodel.nn.distributed import resolve_device
    from worldmodel.nn.model_windows import load_model, predict, select_windows, to_model_units, window_dataset

    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    horizon = horizon or int(meta["train_config"].get("predict_frames", 20))
    dataset = window_dataset(data, model, meta, split, horizon)
    if len(dataset) < 1:
        raise ValueError(f"{data}: no {split} window of {dataset.config.window_frames} frames")
    chosen = select_windows(len(dataset), windows, seed)
    items = [dataset[int(i)] for i in chosen]
    batch = {name: torch.stack([item[name] for item in items]) for name in items[0]}
    batch = to_model_units(batch, dataset, model)
    generator = torch.Generator(dev).manual_seed(seed)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [], device_type=dev.type):
        torch.manual_seed(seed)
        preds = predict(model, batch, k, generator, shuffled=False, mc_k=max(k, 8))
    frames = prediction_frames(
        batch["context_images"].cpu().numpy(),
        batch["future_images"].cpu().numpy(),
        preds["mean"]["images"].cpu().numpy(),
        preds["samples"]["images"].cpu().numpy(),
        preds["mc"]["images"].std(1).cpu().numpy(),
        scale=scale,
    )
    path = write_video(frames, out, fps=fps)
    return {"out": str(path), "frames": len(frames), "size": list(frames[0].shape[:2]), "windows": chosen.tolist(),
            "split": split, "k": k, "horizon": horizon}  # fmt: skip


# ---------------------------------------------------------------------------- plots
def plot_fm_eval(result: dict, path: str | Path) -> Path:
    """Plot ``evaluate_fm``'s per-step curves (image MSE, SSIM, position and velocity RMSE) to a PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    per_step = result["per_step"]
    protocol = result["protocol"]
    fig = Figure(figsize=(11, 7.5), dpi=100)
    axes = fig.subplots(2, 2).ravel()
    panels = [("image_mse", "image MSE"), ("ssim", "SSIM"), ("position_rmse_m", "position RMSE [m]"),
              ("velocity_rmse_mps", "velocity RMSE [m/s]")]  # fmt: skip
    names = ["copy_last", "mean", "mean_of_k", "best_of_k", "worst_of_k"]
    styles = {"copy_last": "k--", "mean": "C0-", "mean_of_k": "C1-", "best_of_k": "C2-", "worst_of_k": "C3:"}
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for name in names:
            values = per_step[name][metric]
            ax.plot(np.arange(1, len(values) + 1), values, styles[name], label=name.replace("_", " "))
        ax.set_title(title)
        ax.set_xlabel("horizon step (0.1 s)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    sens = result["action_sensitivity"]["states"]
    fig.suptitle(f"{protocol['mode']} @ step {protocol['checkpoint_step']}: {protocol['split']} split, "
                 f"{protocol['windows_evaluated']} windows, K = {protocol['k']}; action sensitivity {sens:.2f}")  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
