"""World providers: the future around the ego as frames along a reference trajectory (SPEC §9).

In ``Replay-v0`` the other cars never react to the ego, so the world's future does not depend on what the
ego does. A provider predicts it once per control step as ego views ``[B, K, T, 3, H, W]`` (K futures, T
steps) centred on a reference pose per step (``[B, T, 3]``: x, y, psi; the planner's current plan, or the
zero-action path); the objective then reads the costs at any other pose by moving its masks
(``pose_costs``). Providers:

- ``oracle``: the recording's true future, rendered (K = 1). Privileged: no real driver knows it; the
  ceiling of what a perfect world model could give.
- ``cv``: the cars of the current frame extrapolated at constant velocity along their heading, rendered
  (K = 1): the trivial baseline a learned model has to beat.
- ``model``: a trained forward model rolled out once along the reference (``worldmodel.driving.model_world``).
- ``traffic``: the cars of the current frame moved by a learned traffic model (``nn.traffic_model``: each car's
  displacement from constant velocity, from its speed, acceleration, gap and closing speed to the car ahead,
  ...), rendered (K = 1).

Rendering uses the simulator's ``EgoRasterizer`` (the same views as the dataset), with the ego drawn as
nothing, so that no obstacle pixel is erased where the reference overlaps another car.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from worldmodel.data.replay import ReplaySimulation
from worldmodel.nn.traffic_model import TrafficModel, car_features, moved_cars
from worldmodel.traffic.raster import EgoRasterizer
from worldmodel.traffic.view import ViewSpec

#: World providers by name (``--world``); ``model`` is built by ``model_world``.
WORLDS = ("oracle", "cv", "model", "traffic")


@dataclass(frozen=True)
class WorldFrames:
    """Futures of B episodes: ``images`` ``[B, K, F, 3, H, W]`` float32 in [0, 1] at F steps of the horizon,
    centred on ``reference`` ``[B, F, 3]`` (x, y [m], psi [rad]); ``replicas``: consecutive futures along K that share
    a latent and differ by dropout only (K = samples x replicas; 1 when there is no dropout); ``uncertainty``:
    the statistics that normalise the replicas' disagreement (``driving.uncertainty``), when it is a cost."""

    images: Tensor
    reference: Tensor
    replicas: int = 1
    uncertainty: object = None


class WorldProvider(Protocol):
    """What predicts the future frames of the episodes driven in lockstep."""

    name: str
    privileged: bool

    def futures(self, sims: list[ReplaySimulation], reference: np.ndarray, steps: list[int], plan: Tensor,
                windows: list) -> WorldFrames:  # fmt: skip
        """Frames at ``steps`` (``[F]``, counted from each simulation's current frame, 1 = the next) centred on
        ``reference`` ``[B, F, 3]``, the poses of the reference ``plan`` ``[B, T, 2]`` (SI actions);
        ``windows``: the episodes' observation windows (what a learned model conditions on; None each for
        providers without ``new_window``)."""
        ...


def recorded_others(sim: ReplaySimulation, frame: int) -> dict[str, np.ndarray]:
    """The recorded vehicles at ``frame`` (clamped to the recording), the controlled car's own recording
    excluded: arrays ``[n]`` vehicle, x, y, psi, v, length, width, lane."""
    frame = min(max(frame, sim.frame_range[0]), sim.frame_range[1] - 1)
    rows = sim._frames.at(frame)
    keep = rows["vehicle"] != sim.ego_id
    return {name: rows[name][keep] for name in ("vehicle", "x", "y", "psi", "v", "length", "width", "lane")}


def constant_velocity(others: dict[str, np.ndarray], seconds: float) -> dict[str, np.ndarray]:
    """``others`` moved ``seconds`` ahead at their current speed and heading."""
    moved = dict(others)
    moved["x"] = others["x"] + others["v"] * np.cos(others["psi"]) * seconds
    moved["y"] = others["y"] + others["v"] * np.sin(others["psi"]) * seconds
    return moved


class Renderer:
    """Ego views of one pose among given vehicles, one ``EgoRasterizer`` per road."""

    def __init__(self, spec: ViewSpec) -> None:
        self.spec = spec
        self._rasterizers: dict[int, EgoRasterizer] = {}

    def view(self, sim: ReplaySimulation, others: dict[str, np.ndarray], pose: np.ndarray) -> np.ndarray:
        """uint8 ``[3, H, W]``: the view at ``pose`` (x, y, psi) among ``others``."""
        rasterizer = self._rasterizers.get(id(sim.road))
        if rasterizer is None:
            rasterizer = self._rasterizers[id(sim.road)] = EgoRasterizer(sim.road, self.spec)
        ego = {"x": pose[0], "y": pose[1], "psi": pose[2], "length": 1e-3, "width": 1e-3, "lane": -1}
        vehicles = {name: np.concatenate([[ego[name]], others[name]]) for name in ego}
        return rasterizer.render(vehicles, np.array([0]))[0]


@dataclass(frozen=True)
class ReuseTolerance:
    """How far a frame rendered for an earlier control step may be from the new reference pose and still be
    reused (the oracle's recorded future does not change between control steps; the costs are read at the
    ego's pose wherever the frame is centred, so only the frame's coverage moves)."""

    along_m: float = 2.0
    across_m: float = 0.5
    heading_rad: float = 0.03

    def close(self, rendered: np.ndarray, wanted: np.ndarray) -> bool:
        """Whether a frame centred on ``rendered`` (x, y, psi) may stand for one centred on ``wanted``."""
        dx, dy = wanted[0] - rendered[0], wanted[1] - rendered[1]
        cos, sin = np.cos(rendered[2]), np.sin(rendered[2])
        return (abs(dx * cos + dy * sin) <= self.along_m and abs(dy * cos - dx * sin) <= self.across_m
                and abs(wanted[2] - rendered[2]) <= self.heading_rad)  # fmt: skip


class RenderedWorld:
    """``oracle`` (the recorded future) or ``cv`` (constant velocity from the current frame), rendered.

    The oracle's frames are kept per episode and world frame and reused while the new reference stays within
    ``reuse`` of the pose they were rendered at (about one frame in five is rendered anew); None: always
    render. The cv world's frames depend on the current observation and are rendered at every call.
    An episode is a simulation object driving one car from one start (an environment's simulation drives
    episode after episode); the frames of every simulation seen are kept until its episode changes, whichever
    simulations a call asks for (a driver asks for its episodes in groups, e.g. by horizon)."""

    def __init__(
        self, name: str, spec: ViewSpec | None = None, reuse: ReuseTolerance | None = ReuseTolerance()
    ) -> None:
        if name not in ("oracle", "cv"):
            raise ValueError(f"RenderedWorld: {name!r} is not a rendered world (oracle, cv)")
        self.name, self.privileged = name, name == "oracle"
        self.renderer = Renderer(spec or ViewSpec())
        self.reuse = reuse if self.privileged else None
        self._kept: dict[int, tuple[ReplaySimulation, tuple, dict[int, tuple[np.ndarray, np.ndarray]]]] = {}
        self.rendered = self.reused = 0

    def futures(self, sims: list[ReplaySimulation], reference: np.ndarray, steps: list[int], plan: Tensor | None = None,
                windows: list | None = None) -> WorldFrames:  # fmt: skip
        b, t = reference.shape[:2]
        spec = self.renderer.spec
        out = np.empty((b, 1, t, 3, spec.height_px, spec.width_px), dtype=np.uint8)
        centres = np.array(reference, dtype=np.float64)  # [B, F, 3]: where each frame is centred
        for i, sim in enumerate(sims):
            kept = self._frames_of(sim)
            now = None if self.privileged else recorded_others(sim, sim.frame)
            for k, step in enumerate(steps):
                frame = sim.frame + step
                if frame in kept and self.reuse.close(kept[frame][0], centres[i, k]):
                    centres[i, k], out[i, 0, k] = kept[frame]
                    self.reused += 1
                    continue
                others = recorded_others(sim, frame) if self.privileged else constant_velocity(now, step * sim.dt)
                out[i, 0, k] = self.renderer.view(sim, others, centres[i, k])
                self.rendered += 1
                if self.reuse is not None:
                    kept[frame] = (centres[i, k].copy(), out[i, 0, k].copy())
        images = torch.from_numpy(out).float().div_(255.0)
        return WorldFrames(images, torch.from_numpy(centres.astype(np.float32)))

    def _frames_of(self, sim: ReplaySimulation) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The frames kept for ``sim``'s episode (those of past world frames dropped), to be added to."""
        if self.reuse is None:
            return {}
        episode = (sim.ego_id, sim.start_frame)
        owner, owner_episode, kept = self._kept.get(id(sim), (None, None, {}))
        if owner is not sim or owner_episode != episode:  # a new episode (or a new simulation under an old id)
            kept = {}
        kept = {frame: entry for frame, entry in kept.items() if frame > sim.frame}
        self._kept[id(sim)] = (sim, episode, kept)
        return kept


class TrafficWorld:
    """``traffic``: the cars of the current frame moved by the traffic model of ``checkpoint`` (dropout off),
    rendered at the reference's poses (K = 1). The model reads each car's acceleration over its last
    ``history`` frames (the recording seen so far)."""

    name, privileged = "traffic", False

    def __init__(self, checkpoint: str, spec: ViewSpec | None = None) -> None:
        self.model = TrafficModel.from_checkpoint(checkpoint).eval()
        self.renderer = Renderer(spec or ViewSpec())

    @torch.no_grad()
    def predict_cars(self, sims: list[ReplaySimulation], horizon: int) -> list[list[dict[str, np.ndarray]]]:
        """The other cars of each simulation's current frame (``recorded_others``) at steps 1..``horizon``, as the
        model moves them: per simulation, ``horizon`` dicts of arrays ``[n]``."""
        c = self.model.config
        if horizon > c.horizon:
            raise ValueError(f"the traffic model predicts {c.horizon} steps, {horizon} were asked for")
        cars = [recorded_others(sim, sim.frame) for sim in sims]
        features = [car_features(now, recorded_others(sim, sim.frame - c.history), sim.road, sim.dt, c.history)
                    for now, sim in zip(cars, sims, strict=True)]  # fmt: skip
        moved = self.model(torch.from_numpy(np.concatenate(features))).numpy().astype(np.float64)
        out, start = [], 0
        for sim, now in zip(sims, cars, strict=True):
            n = len(now["x"])
            out.append(moved_cars(now, moved[start : start + n, :horizon], sim.dt))
            start += n
        return out

    def futures(self, sims: list[ReplaySimulation], reference: np.ndarray, steps: list[int], plan: Tensor | None = None,
                windows: list | None = None) -> WorldFrames:  # fmt: skip
        spec = self.renderer.spec
        b, f = reference.shape[:2]
        out = np.empty((b, 1, f, 3, spec.height_px, spec.width_px), dtype=np.uint8)
        for i, (sim, future) in enumerate(zip(sims, self.predict_cars(sims, max(steps)), strict=True)):
            for k, step in enumerate(steps):
                out[i, 0, k] = self.renderer.view(sim, future[step - 1], reference[i, k])
        return WorldFrames(torch.from_numpy(out).float().div_(255.0), torch.as_tensor(reference, dtype=torch.float32))


__all__ = [
    "WORLDS",
    "RenderedWorld",
    "Renderer",
    "TrafficWorld",
    "ReuseTolerance",
    "WorldFrames",
    "WorldProvider",
    "constant_velocity",
    "recorded_others",
]
