"""Probes on frozen features: what a representation knows about the traffic scene (no labels needed).

Targets, each at the last frame of an encoder window (row a of an episode):
- ``speed_mps``: |(vx, vy)| from the state [m/s]. The encoder reads the state, so every representation
  that keeps it is at the ceiling (R^2 ~0.9994 on ``tiny``): a sanity check more than a contest;
- ``headway_m``: distance from the ego's front to the nearest vehicle pixel ahead of it in the ego's columns
  of the vehicles channel (> 0.5), rows to metres with the view's ``px_per_m``. The episodes file stores
  only the ego's state, so the headway is read from the raster itself (exactly what the model sees); with
  no vehicle ahead in view it is the visible range (~36 m), i.e. censored at the view edge;
- ``lane_position``: where the ego is across its lane, as the point ``(sin phi, cos phi)`` with
  ``phi = 2 pi o / lane_width`` and ``o = y - (floor(y / lane_width) + 1/2) lane_width`` the signed offset
  from the lane centre (from the absolute state y: the encoder gets ego-relative positions, so this must
  come from the images); R^2 over both components. The signed offset itself jumps from +w/2 to -w/2 where
  the ego's centre crosses a marking, for images that differ by a fraction of a pixel: on ``tiny`` the 3 %
  of test anchors within 0.35 m of a marking held 69 % of a pixel ridge fit's squared error and 34 % of the
  variance, so its R^2 mostly scored which side of a marking those few cars were on. The phase is the same
  quantity without the seam (continuous across markings, 0 at the centre: cos 1, sin 0);
- ``neighbours``: connected components of the vehicles channel (> 0.5) in the frame (the ego is not drawn
  there).

Samples: anchors evenly spaced over the valid rows of each split's episodes (splits are by vehicle, so the
test episodes are held-out cars). Probes, all fit on train, hyper-parameters picked on val, R^2 on test:
- ridge regression (closed form on standardised features, lambda picked on val): the linear probe;
- the same with only ``few_labels`` training anchors (evenly spaced), the label-efficiency probe (as the
  1 % / 10 % label evaluations of SimCLR and BYOL): what a representation gives a task with few labels;
- kNN regression (Euclidean on standardised features, k picked on val): the geometry of the features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from worldmodel.data.episodes import SPLITS, EpisodeReader
from worldmodel.ssl.heads import Encoder
from worldmodel.ssl.health import health_metrics

TARGETS = ("speed_mps", "headway_m", "lane_position", "neighbours")


@dataclass(frozen=True)
class ProbeConfig:
    """Sample counts and hyper-parameter grids of the probes."""

    samples_per_split: int = 4000
    """Anchors drawn (evenly spaced) from each split's episodes (all of them when a split has fewer)."""
    few_labels: int = 400
    """Training anchors of the label-efficiency ridge probe (``ridge_few_r2``; 10 % of the default)."""
    ridge_lambdas: tuple[float, ...] = tuple(10.0**k for k in np.arange(-3.0, 4.01, 0.5))
    """Ridge penalties tried (times the number of training samples); the best on val is kept."""
    knn_k: tuple[int, ...] = (5, 10, 20, 40)
    """Neighbour counts tried for kNN regression; the best on val is kept."""
    batch_size: int = 256
    """Windows per forward pass when extracting features."""


def lane_phase(y: np.ndarray, lane_width_m: float) -> np.ndarray:
    """[N, 2] (sin phi, cos phi), phi = 2 pi (signed offset from the lane centre) / lane width, of the
    absolute lateral positions y [N] [m] (see the module doc)."""
    offset = y - (np.floor(y / lane_width_m) + 0.5) * lane_width_m
    phi = 2.0 * np.pi * offset / lane_width_m
    return np.stack([np.sin(phi), np.cos(phi)], axis=1)


def probe_targets(
    last_images: np.ndarray, states: np.ndarray, ego_masks: np.ndarray, px_per_m: float, lane_width_m: float
) -> dict[str, np.ndarray]:
    """The probe targets of N frames.

    last_images: [N, 3, H, W] uint8; states: [N, 4] (x, y [m], vx, vy [m/s]) absolute; ego_masks: [N, H, W]
    uint8. Returns {name: [N] float64} ([N, 2] for ``lane_position``).
    """
    n = len(states)
    speed = np.hypot(states[:, 2], states[:, 3]).astype(np.float64)
    lane = lane_phase(states[:, 1].astype(np.float64), lane_width_m)
    headway = np.empty(n)
    neighbours = np.empty(n)
    for i in range(n):
        cars = (last_images[i, 1] > 127).astype(np.uint8)  # H W
        ego = ego_masks[i] > 127
        rows, cols = np.nonzero(ego)
        front = rows.min() if len(rows) else last_images.shape[2] // 2
        lo, hi = (cols.min(), cols.max() + 1) if len(cols) else (0, last_images.shape[3])
        ahead = np.nonzero(cars[:front, lo:hi].any(axis=1))[0]
        headway[i] = (front - (ahead.max() + 1) if len(ahead) else front) / px_per_m
        count, _ = cv2.connectedComponents(cars, connectivity=8)
        neighbours[i] = count - 1
    return {"speed_mps": speed, "headway_m": headway, "lane_position": lane, "neighbours": neighbours}


def load_probe_split(
    path: str | os.PathLike,
    split: str,
    context_frames: int,
    state_mean: Tensor,
    state_std: Tensor,
    max_samples: int,
) -> dict:
    """Encoder inputs and probe targets of up to ``max_samples`` anchors of a split.

    Returns ``images`` uint8 [N, Tc, 3, H, W], ``states`` float32 [N, Tc, 4] (positions relative to the
    anchor, normalised with ``state_mean``, ``state_std``), ``targets`` {name: [N]}, ``vehicles`` [N].
    """
    with EpisodeReader(path) as reader:
        e = reader.episodes
        chosen = np.flatnonzero(e["split"] == SPLITS.index(split))
        valid = [np.arange(e["start"][k] + context_frames - 1, e["start"][k] + e["count"][k]) for k in chosen]
        owner = [np.full(len(v), e["vehicle"][k]) for k, v in zip(chosen, valid, strict=True)]
        rows = np.concatenate(valid) if valid else np.zeros(0, np.int64)
        owner = np.concatenate(owner) if owner else np.zeros(0, np.int64)
        if len(rows) == 0:
            raise ValueError(f"{path}: no {split} episode has {context_frames} frames for the probes")
        pick = np.unique(np.linspace(0, len(rows) - 1, min(max_samples, len(rows))).round().astype(np.int64))
        anchors, vehicles = rows[pick], owner[pick]
        episode_of = np.searchsorted(e["start"], anchors, side="right") - 1
        images, states, masks = [], [], []
        for a, k in zip(anchors, episode_of, strict=True):
            d = reader.read(int(a) - context_frames + 1, int(a) + 1, names=("images", "states"))
            images.append(d["images"])
            states.append(d["states"])
            masks.append(reader.ego_mask(int(k)))
        lane_width = float(reader.road["lane_width_m"])
        px_per_m = float(reader.view["px_per_m"])
    images, raw, masks = np.stack(images), np.stack(states).astype(np.float32), np.stack(masks)
    targets = probe_targets(images[:, -1], raw[:, -1], masks, px_per_m, lane_width)
    rel = raw.copy()
    rel[:, :, :2] -= raw[:, -1:, :2]
    normed = (torch.from_numpy(rel) - state_mean) / state_std
    return {"images": torch.from_numpy(images), "states": normed.float(), "targets": targets, "vehicles": vehicles}


@torch.no_grad()
def extract_features(encoder: Encoder, images: Tensor, states: Tensor, batch_size: int = 256) -> Tensor:
    """Frozen features [N, D_r] (eval mode: no dropout, BatchNorm statistics fixed) of uint8 windows
    [N, Tc, C, H, W] and states [N, Tc, S]; computed on the encoder's device, returned on the CPU."""
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float().div_(255.0)
        out.append(encoder(x, states[i : i + batch_size].to(device)).float().cpu())
    encoder.train(was_training)
    return torch.cat(out)


def r2_score(y: Tensor, pred: Tensor) -> float:
    """1 - SS_res / SS_tot (0 for predicting the mean; negative when worse). y, pred: [N] or [N, K] (sums
    over every component, each about its own mean)."""
    ss_tot = ((y - y.mean(0)) ** 2).sum()
    return float(1.0 - ((y - pred) ** 2).sum() / ss_tot.clamp_min(1e-12))


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


class RidgeFit:
    """Closed-form ridge on standardised features, decomposed once for every target and lambda.

    ``w = (X^T X + lambda N I)^-1 X^T (y - mean)``. With fewer samples than features (N < D) the same
    predictions come from the dual form ``X_new X^T (X X^T + lambda N I)^-1 (y - mean)``, one eigen-
    decomposition of the N x N Gram matrix instead of the D x D one.
    x: {"train" | "val" | "test": [N, D]}.
    """

    def __init__(self, x: dict[str, Tensor]) -> None:
        xtr, xva, xte = (t.double() for t in _standardise(x["train"], x["val"], x["test"]))
        self.n = len(xtr)
        self.dual = self.n < xtr.shape[1]
        gram = xtr @ xtr.T if self.dual else xtr.T @ xtr
        self.evals, self.evecs = torch.linalg.eigh(gram)
        self.evals = self.evals.clamp_min(0)
        self.xtr, self.new = xtr, {"val": xva, "test": xte}
        self.kernel = {s: v @ xtr.T for s, v in self.new.items()} if self.dual else None

    def predict(self, y_train: Tensor, lam: float) -> dict[str, Tensor]:
        """Predictions on val and test of the ridge fit to ``y_train`` [N] or [N, K] with penalty
        ``lam * N``."""
        mu = y_train.double().mean(0)
        yc = y_train.double() - mu
        shrink = (self.evals + lam * self.n).view(-1, *([1] * (yc.dim() - 1)))  # [E] or [E, 1]
        if self.dual:
            alpha = self.evecs @ ((self.evecs.T @ yc) / shrink)
            return {s: k @ alpha + mu for s, k in self.kernel.items()}
        w = self.evecs @ ((self.evecs.T @ (self.xtr.T @ yc)) / shrink)
        return {s: v @ w + mu for s, v in self.new.items()}


def ridge_probe(x: dict[str, Tensor] | RidgeFit, y: dict[str, Tensor], lambdas: tuple[float, ...]) -> dict[str, float]:
    """Ridge regression: fit on ``train``, pick lambda on ``val``, R^2 on ``test`` (see ``RidgeFit``).

    x: {split: [N, D]} (or a ``RidgeFit`` of them, to share the decomposition), y: {split: [N] or [N, K]}.
    """
    fit = x if isinstance(x, RidgeFit) else RidgeFit(x)
    best = (-np.inf, None, None)
    for lam in lambdas:
        pred = fit.predict(y["train"], lam)
        r2 = r2_score(y["val"].double(), pred["val"])
        if r2 > best[0]:
            best = (r2, lam, pred["test"])
    r2_val, lam, pred_test = best
    return {"r2": r2_score(y["test"].double(), pred_test), "val_r2": r2_val, "lambda": lam}


def knn_probe(x: dict[str, Tensor], y: dict[str, Tensor], ks: tuple[int, ...]) -> dict[str, float]:
    """kNN regression (mean of the k nearest train targets, Euclidean on standardised features): k picked
    on ``val``, R^2 on ``test``."""
    xtr, xva, xte = _standardise(x["train"], x["val"], x["test"])
    ytr = y["train"].double()
    kmax = min(max(ks), len(xtr))
    idx_va = torch.cdist(xva, xtr).topk(kmax, largest=False).indices
    idx_te = torch.cdist(xte, xtr).topk(kmax, largest=False).indices
    best = (-np.inf, None)
    for k in ks:
        k = min(k, kmax)
        r2 = r2_score(y["val"].double(), ytr[idx_va[:, :k]].mean(1))
        if r2 > best[0]:
            best = (r2, k)
    r2_val, k = best
    return {"r2": r2_score(y["test"].double(), ytr[idx_te[:, :k]].mean(1)), "val_r2": r2_val, "k": k}


def evaluate_probes(encoder: Encoder, data: dict[str, dict], config: ProbeConfig = ProbeConfig()) -> dict:
    """Ridge (all and ``few_labels`` training anchors) and kNN R^2 of every target, and the health metrics
    of the test features.

    data: {"train" | "val" | "test": ``load_probe_split`` output}. Returns
    ``{"probes": {target: {"ridge_r2", "ridge_few_r2", "knn_r2", ...}}, "health": {...}}``.
    """
    feats = {s: extract_features(encoder, d["images"], d["states"], config.batch_size) for s, d in data.items()}
    n_train = len(feats["train"])
    few = torch.from_numpy(
        np.unique(np.linspace(0, n_train - 1, min(config.few_labels, n_train)).round().astype(np.int64))
    )
    fit, fit_few = RidgeFit(feats), RidgeFit(feats | {"train": feats["train"][few]})
    probes = {}
    for name in TARGETS:
        y = {s: torch.as_tensor(d["targets"][name]) for s, d in data.items()}
        ridge = ridge_probe(fit, y, config.ridge_lambdas)
        ridge_few = ridge_probe(fit_few, y | {"train": y["train"][few]}, config.ridge_lambdas)
        knn = knn_probe(feats, y, config.knn_k)
        probes[name] = {
            "ridge_r2": ridge["r2"],
            "ridge_few_r2": ridge_few["r2"],
            "knn_r2": knn["r2"],
            "ridge_lambda": ridge["lambda"],
            "ridge_few_lambda": ridge_few["lambda"],
            "knn_k": knn["k"],
        }
    return {"probes": probes, "health": health_metrics(feats["test"], "repr_")}


__all__ = [
    "TARGETS",
    "ProbeConfig",
    "RidgeFit",
    "evaluate_probes",
    "extract_features",
    "knn_probe",
    "lane_phase",
    "load_probe_split",
    "probe_targets",
    "r2_score",
    "ridge_probe",
]
