"""Import PPUU's per-car state-action-cost dumps (``car{id}.pkl``) into episodes.h5.

A dump is a pickled dict (values numpy arrays or torch tensors): ``images`` [T, 3, H, W] uint8, ``actions``
[T, 2], ``lane_cost``, ``proximity_cost``, ``pixel_proximity_cost`` [T], ``states`` [T, 7, 4] (row 0 the
ego, then 6 neighbours) or [T, 4], ``frames`` [T], ``ego_car`` (the ego mask: [3, H, W], [H, W, 3] or
[H, W]). PPUU's screen units are converted to SI (``m_per_px`` = 3.7 m / 24 px, one lane):

- positions: ``(p - origin_px) * m_per_px``. PPUU's reference point is the car's rear (``back``), at its
  lateral centre; we move it forward by half the car length along the velocity (along +x when stopped) to
  the centre. Screen y points down = to the right of travel, as our road frame's y.
- velocities: PPUU stores ``direction * speed`` with speed in px/s (``SCALE`` px/m times m/s; not
  px/frame), so vx, vy [m/s] = stored * ``m_per_px``. This is an assumption about the dumps.
- actions (a, b): ``a`` [px/s^2] * ``m_per_px`` -> m/s^2; ``b`` is the heading change per pixel travelled
  [rad/px], so curvature [1/m] = b / ``m_per_px`` (same sign convention: the kinematics are the same).
- costs: (proximity, lane, off-road) = (``proximity_cost``, ``lane_cost``, 0): PPUU had no off-road cost.
- car size: from the ego mask (its extent along and across, in view pixels / ``px_per_m``), unless
  ``car_sizes`` gives ``{id: (length_m, width_m)}``.
- ``state_shift``: PPUU stored state i one step late (it belongs to image i + 1). Row j of the episode
  takes image j + 1, action j + 1, costs j + 1 and state j (T - 1 rows), so image, state, action and costs
  of a row are one instant.
- ``old_channels``: PPUU's images are (R lanes, G other vehicles, B ego car). Ours are (lanes, vehicles,
  off-road), the ego being a separate mask: the blue channel is zeroed (no off-road information).
- Arrays of unequal length (PPUU sometimes stored more costs than actions) are cut to the shortest,
  counted in ``repairs["truncated_frames"]``.

Pickles can run code when loaded; ``RestrictedUnpickler`` admits only numpy array and dtype
reconstruction, a few builtins, ``collections.OrderedDict`` and torch tensors (rebuilt from storages that
torch itself loads with ``weights_only=True``), and refuses every other global with a ``DataError`` naming
the file and the global, before anything of it runs. Only ``dir`` itself is read (one recording: car ids
are unique within a recording only).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from worldmodel.data import hdf5
from worldmodel.data.episodes import EpisodeWriter, split_for_vehicle
from worldmodel.data.hdf5 import DataError

log = logging.getLogger(__name__)

M_PER_PX = 3.7 / 24  # PPUU screen: one 3.7 m lane = 24 px
VIEW_PX_PER_M = 24 / 3.7 / 4  # PPUU ego view: the screen downscaled 4x
DEFAULT_SIZE_M = (4.8, 1.8)  # length, width of a sedan, for an empty ego mask
_CAR_FILE = re.compile(r"car(\d+)\.pkl$")


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused array subtype {subtype!r}")
    return np.ndarray.__reduce__(np.zeros(0))[0](subtype, shape, dtype)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("refused object scalar")
    return np.float32(0).__reduce__()[0](dtype, data)


def _np_frombuffer(buffer, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("refused object array")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy()


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused _codecs.encode call")
    return text.encode("latin1")


def _torch_storage_from_bytes(data):
    import torch  # only when a dump holds tensors

    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("refused storage payload")
    storage = torch.load(io.BytesIO(bytes(data)), weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("storage payload is not a storage")
    return storage


def _torch_rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    import torch
    from torch._utils import _rebuild_tensor_v2

    ok = isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)) and isinstance(offset, int)
    ok = ok and all(isinstance(v, int) for v in (*size, *stride)) and not hooks
    if not ok:
        raise pickle.UnpicklingError("refused tensor arguments")
    return _rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride), False, OrderedDict())


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("torch._utils", "_rebuild_tensor_v2"): _torch_rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _torch_storage_from_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED``; anything else raises ``DataError``."""

    def __init__(self, file, path: str | os.PathLike) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise DataError(self.path, f"refused pickle global {module}.{name} (not array or tensor data)")
        return allowed

    def persistent_load(self, pid):
        raise DataError(self.path, "refused pickle persistent id")


def load_dump(path: str | os.PathLike) -> dict:
    """Unpickle one PPUU dump safely; values converted to numpy arrays where they are tensors or lists."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as exc:  # a damaged pickle fails in many ways
        raise DataError(path, f"not a readable PPUU dump ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise DataError(path, f"a PPUU dump is a dict, found {type(data).__name__}")
    return {key: _to_numpy(value, path, key) for key, value in data.items()}


def _to_numpy(value, path, key):
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") for v in value):
        return np.stack([_to_numpy(v, path, key) for v in value])
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise DataError(path, f"{key!r} holds Python objects, expected numbers")
    return value


def _ego_mask(raw, h: int, w: int, path) -> np.ndarray:
    """The ego mask as [H, W] uint8 from [H, W], [1 or 3, H, W], [H, W, 1 or 3] or [1, 3, H, W]."""
    mask = np.asarray(raw, np.float64).squeeze()
    if mask.ndim == 3:
        mask = mask.max(axis=0) if mask.shape[1:] == (h, w) else mask.max(axis=-1)
    if mask.shape != (h, w):
        raise DataError(path, f"ego_car has shape {np.shape(raw)}, expected an {h} x {w} image")
    if mask.max(initial=0) <= 1.0:
        mask = mask * 255
    return np.clip(np.round(mask), 0, 255).astype(np.uint8)


def _array(dump: dict, key: str, path, shape_tail: tuple, dtype=np.float32) -> np.ndarray:
    value = np.asarray(dump[key])
    if value.ndim != 1 + len(shape_tail) or tuple(value.shape[1:]) != shape_tail:
        raise DataError(path, f"{key!r} has shape {value.shape}, expected [T, {', '.join(map(str, shape_tail))}]")
    if dtype is not np.uint8:
        value = value.astype(dtype)
        hdf5.check_finite(value, repr(key), path)
    elif value.dtype != np.uint8:
        raise DataError(path, f"{key!r} has dtype {value.dtype}, expected uint8")
    return value


def convert_dump(
    dump: dict,
    path,
    state_shift: bool,
    old_channels: bool,
    m_per_px: float,
    px_per_m: float,
    origin_px: tuple[float, float],
    size_m: tuple | None,
) -> dict:
    """One dump -> an episode's SI arrays (see the module docstring); ``frames_cut`` counts truncation."""
    missing = [k for k in ("images", "states", "actions", "proximity_cost", "lane_cost", "ego_car") if k not in dump]
    if missing:
        raise DataError(path, f"missing keys {missing}")
    images = np.asarray(dump["images"])
    if images.ndim != 4 or images.shape[1] != 3:
        raise DataError(path, f"'images' has shape {images.shape}, expected [T, 3, H, W]")
    h, w = images.shape[2:]
    images = _array(dump, "images", path, (3, h, w), np.uint8)
    states = np.asarray(dump["states"])
    states = _array({"states": states[:, 0] if states.ndim == 3 else states}, "states", path, (4,))
    actions = _array(dump, "actions", path, (2,))
    flat = {key: np.asarray(dump[key]) for key in ("proximity_cost", "lane_cost")}
    flat = {key: v[:, 0] if v.ndim == 2 and v.shape[1] == 1 else v for key, v in flat.items()}
    prox, lane = _array(flat, "proximity_cost", path, ()), _array(flat, "lane_cost", path, ())
    ego = _ego_mask(dump["ego_car"], h, w, path)
    t = min(len(images), len(states), len(actions), len(prox), len(lane))
    frames_cut = max(len(images), len(states), len(actions), len(prox), len(lane)) - t
    costs = np.stack([prox[:t], lane[:t], np.zeros(t, np.float32)], axis=1)
    images, states, actions = images[:t].copy(), states[:t], actions[:t]
    if state_shift:
        images, actions, costs, states = images[1:], actions[1:], costs[1:], states[:-1]
    if old_channels:
        images[:, 2] = 0
    if size_m is None:
        profile = ego.astype(np.float64) / 255
        size_m = (profile.max(axis=1).sum() / px_per_m, profile.max(axis=0).sum() / px_per_m)
    default = not (size_m[0] > 0 and size_m[1] > 0)
    length, width = DEFAULT_SIZE_M if default else (float(size_m[0]), float(size_m[1]))
    pos = (states[:, :2].astype(np.float64) - np.asarray(origin_px)) * m_per_px
    vel = states[:, 2:].astype(np.float64) * m_per_px
    speed = np.hypot(vel[:, 0], vel[:, 1])
    direction = np.where(speed[:, None] > 1e-6, vel / np.maximum(speed, 1e-6)[:, None], [1.0, 0.0])
    si_actions = actions.astype(np.float64) * [m_per_px, 1 / m_per_px]
    return {
        "images": images,
        "states": np.concatenate([pos + direction * length / 2, vel], axis=1),
        "actions": si_actions,
        "costs": costs,
        "ego_mask": ego,
        "length": length,
        "width": width,
        "frames_cut": frames_cut,
        "default_size": default,
    }


def _default_road(max_x_m: float, max_y_m: float) -> dict:
    lanes = max(1, int(np.ceil(max_y_m / 3.7)))
    length = float(np.ceil(max(max_x_m, 1.0)))
    return {
        "lanes": lanes,
        "lane_width_m": 3.7,
        "length_m": length,
        "section_m": [0.0, length],
        "evaluated_m": [0.0, length],
        "speed_limit_mps": 65 * 0.44704,
        "ramps": [],
    }


def import_ppuu(
    dir: str | os.PathLike,
    out_path: str | os.PathLike,
    state_shift: bool = True,
    old_channels: bool = False,
    *,
    road: dict | None = None,
    m_per_px: float = M_PER_PX,
    px_per_m: float = VIEW_PX_PER_M,
    origin_px: tuple[float, float] = (0.0, 0.0),
    car_sizes: dict[int, tuple[float, float]] | None = None,
    seed: int = 0,
) -> dict:
    """Convert a directory of PPUU ``car{id}.pkl`` dumps (one recording) to episodes.h5.

    ``road``: the road description (default: 3.7 m lanes covering the data, no ramps, 65 mph);
    ``origin_px``: the screen point of the road start at its left edge; ``car_sizes``: {id: (length_m,
    width_m)} instead of the ego mask's extent; ``seed``: for ``split_for_vehicle``.
    Returns a summary: ``episodes``, ``frames``, ``splits`` (episodes per split), ``skipped``, ``repairs``.
    """
    folder = Path(dir)
    if folder.exists() and not folder.is_dir():
        raise DataError(folder, "is a file, not a directory; pass the directory of its car{id}.pkl dumps")
    if not folder.is_dir():
        raise DataError(folder, "no such directory")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CAR_FILE.fullmatch(p.name))]
    if not found:
        raise DataError(folder, "no car{id}.pkl files")
    summary = {
        "source": str(folder),
        "output": str(out_path),
        "episodes": 0,
        "frames": 0,
        "splits": {"train": 0, "val": 0, "test": 0},
        "skipped": {"too_short": 0},
        "repairs": {"truncated_frames": 0, "default_size": 0},
    }
    max_xy = np.zeros(2)
    writer = None
    try:
        for vehicle, path in sorted(found):
            size = None if car_sizes is None or vehicle not in car_sizes else car_sizes[vehicle]
            ep = convert_dump(load_dump(path), path, state_shift, old_channels, m_per_px, px_per_m, origin_px, size)
            summary["repairs"]["truncated_frames"] += ep["frames_cut"]
            if len(ep["images"]) < 1:
                summary["skipped"]["too_short"] += 1
                continue
            summary["repairs"]["default_size"] += int(ep["default_size"])
            if writer is None:
                h, w = ep["images"].shape[2:]
                view = {"height_px": int(h), "width_px": int(w), "px_per_m": float(px_per_m)}
                costs = {"proximity": "PPUU proximity_cost", "lane": "PPUU lane_cost", "offroad": "none (0)"}
                placeholder = road or _default_road(1.0, 1.0)
                writer = EpisodeWriter(out_path, placeholder, f"ppuu:{folder.name}", view, costs)
            split = split_for_vehicle(vehicle, seed)
            try:
                writer.add_episode(
                    vehicle,
                    ep["length"],
                    ep["width"],
                    split,
                    ep["images"],
                    ep["states"],
                    ep["actions"],
                    ep["costs"],
                    ep["ego_mask"],
                )
            except DataError as exc:  # e.g. an image size differing from the first dump's
                raise DataError(path, str(exc)) from exc
            max_xy = np.maximum(max_xy, ep["states"][:, :2].max(axis=0))
            summary["episodes"] += 1
            summary["frames"] += len(ep["images"])
            summary["splits"][("train", "val", "test")[split]] += 1
        if writer is None:
            raise DataError(folder, "no dump has a usable frame")
        writer.set_road(road or _default_road(*max_xy))
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    log.info("imported %s: %d episodes, %d frames", folder, summary["episodes"], summary["frames"])
    return summary
