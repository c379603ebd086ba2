"""Videos (imageio) and plots (matplotlib) for people."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad a frame to even height and width (H.264 needs them)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frame


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 10.0) -> Path:
    """Write RGB uint8 frames ``[H, W, 3]`` to ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif``, atomically
    (a temporary file renamed at the end). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"{path}: video must end in .mp4 or .gif")
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    try:
        if suffix == ".mp4":
            writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1)
        else:
            writer = imageio.get_writer(tmp, mode="I", duration=1000.0 / fps, loop=0)
        with writer:
            for frame in frames:
                writer.append_data(_even(np.asarray(frame, dtype=np.uint8)))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
