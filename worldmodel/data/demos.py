"""Labelled drives on disk (DAgger's rounds, ``training.dagger``): one HDF5 file per round.

A demo is one episode (``driving.labelling.Demo.arrays``): ``images`` uint8 ``[C + N, 3, H, W]`` (C context
views, then the view each of N steps answered), ``states`` float32 ``[C + N, 4]``, ``labels`` float32 ``[N, 2]``
(the teacher's SI actions), optional ``features`` float32 ``[N, F]`` (the scene at each step, ``driving.scene``),
``ego_mask`` uint8 ``[H, W]``, ``car_size`` float32 ``[2]``, ``context`` (C) and ``executed_by_teacher``. In the
file, demos are concatenated along the first axis (``images``, ``states``, ``labels``, ``features`` when every demo
has them; LZF-compressed, chunked per 256 rows) with per-demo ``frame_offsets`` / ``label_offsets`` ``[D + 1]`` and
the per-demo ``ego_masks`` ``[D, H, W]``, ``car_sizes`` ``[D, 2]``, ``contexts``, ``executed_by_teacher`` ``[D]``;
files without ``features`` still read. Written atomically; a damaged or foreign file is a one-line ``DataError``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from worldmodel.data.hdf5 import DataError
from worldmodel.files import atomic_output

FORMAT = "worldmodel-demos-1"


def write_demos(path: str | os.PathLike, demos: list[dict]) -> Path:
    """Write ``demos`` (at least one) to ``path`` (HDF5, atomically)."""
    if not demos:
        raise ValueError(f"{path}: no demos to write")
    frames = np.cumsum([0] + [len(d["images"]) for d in demos])
    labels = np.cumsum([0] + [len(d["labels"]) for d in demos])
    with atomic_output(path, make_parents=True) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        with_features = all("features" in d for d in demos)
        for name in ("images", "states", "labels", *(("features",) if with_features else ())):
            data = np.concatenate([d[name] for d in demos])
            f.create_dataset(name, data=data, chunks=(max(min(256, len(data)), 1), *data.shape[1:]),
                             compression="lzf")  # fmt: skip
        f["frame_offsets"], f["label_offsets"] = frames, labels
        f["ego_masks"] = np.stack([d["ego_mask"] for d in demos])
        f["car_sizes"] = np.stack([d["car_size"] for d in demos])
        f["contexts"] = np.array([int(d["context"]) for d in demos])
        f["executed_by_teacher"] = np.array([int(d["executed_by_teacher"]) for d in demos])
    return Path(path)


def read_demos(path: str | os.PathLike) -> list[dict]:
    """The demos of a file written by ``write_demos``."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise DataError(path, f"not a demos file (format {f.attrs.get('format')!r}, expected {FORMAT!r})")
            images, states, labels = f["images"][:], f["states"][:], f["labels"][:]
            features = f["features"][:] if "features" in f else None
            frames, steps = f["frame_offsets"][:], f["label_offsets"][:]
            masks, sizes, contexts, teacher = (f[k][:] for k in ("ego_masks", "car_sizes", "contexts",
                                                                 "executed_by_teacher"))  # fmt: skip
    except (OSError, KeyError) as exc:
        raise DataError(path, f"cannot read demos: {exc}") from None
    n = len(contexts)
    if (
        len(frames) != n + 1
        or len(steps) != n + 1
        or frames[-1] != len(images)
        or steps[-1] != len(labels)
        or (features is not None and len(features) != len(labels))
    ):
        raise DataError(path, "demos file: offsets do not match the data")
    out = []
    for i in range(n):
        a, b, s, e = frames[i], frames[i + 1], steps[i], steps[i + 1]
        if b - a != contexts[i] + e - s:
            raise DataError(path, f"demos file: demo {i} has {b - a} frames for {e - s} labels and {contexts[i]} "
                            "context views")  # fmt: skip
        out.append({"images": images[a:b], "states": states[a:b], "labels": labels[s:e], "ego_mask": masks[i],
                    "car_size": sizes[i], "context": np.int64(contexts[i]),
                    "executed_by_teacher": np.int64(teacher[i])})  # fmt: skip
        if features is not None:
            out[-1]["features"] = features[s:e]
    return out


__all__ = ["FORMAT", "read_demos", "write_demos"]
