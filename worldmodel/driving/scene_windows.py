"""Object-level imagined worlds of recorded moments, and a scene policy driven through them (issue 14).

In ``Replay-v0`` the other cars never react to the ego, so the world around a recorded car's moment can be
imagined once, along the car's recorded future (the *reference*), and any policy moved through it afterwards
by the exact kinematics. A scene policy (``nn.scene_policy``) reads object-level features (``driving.scene``),
so the world it trains in must keep the other cars as objects; the costs are read from the same cars rendered
as views along the reference (``pose_costs``, the objective the planners minimise). Per window:

- the recorded car at a row of its recording (``window_worlds.Recordings.handover``): its state, the action
  that brought it there (the step into that row, inverted), its size, its recorded poses over the next T steps
  and the actions between them, the speed target it observes (``objective.target_speed``, as the planner);
- the other cars at steps 0..T as the world predicts them (``WORLDS``): ``oracle`` the recording (privileged),
  ``cv`` those of step 0 at constant velocity, ``traffic`` moved by a learned traffic model
  (``worlds.TrafficWorld.predict_cars``);
- the frames of steps 1..T rendered from those cars at the recorded poses (the ego drawn as nothing).

``scene_drive`` moves a scene policy T steps: at step t it reads the features of the cars of step t at its own
state (``scene.features_at``, differentiable in the state and the last action), acts, and the kinematics move
it; ``training.scene_mpur.imagined_terms`` scores the drive with the driving objective at its poses
(``policy_decoupled.mpur_terms`` reads the frames).
Shapes: N windows in a pool, B in a batch, T steps, H x W views.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldmodel.data.hdf5 import DT_S
from worldmodel.driving import kinematics
from worldmodel.driving.episode_selection import dataset_files, select_episodes
from worldmodel.driving.imagined_worlds import EgoWindow
from worldmodel.driving.objective import target_speed
from worldmodel.driving.scene import EGO_FEATURES, FEATURE_NAMES, features_at
from worldmodel.driving.window_worlds import Recordings, recorded_poses
from worldmodel.driving.worlds import Renderer, TrafficWorld, constant_velocity, recorded_others
from worldmodel.nn.scene_policy import ScenePolicy
from worldmodel.traffic.view import ViewSpec

#: Worlds a scene policy can be imagined in (the forward model predicts views, not cars).
WORLDS = ("oracle", "cv", "traffic")
#: What a window keeps of the other cars (what ``scene.features_at`` reads).
KEPT = ("x", "y", "psi", "v", "length")


@dataclass
class ScenePool:
    """N imagined windows: ``start`` ``[N, 4]`` (x, y, psi, v), ``previous_action`` ``[N, 2]``, ``car_size``
    ``[N, 2]``, ``reference`` ``[N, T, 3]`` and ``actions`` ``[N, T, 2]`` (recorded), ``target_speed`` ``[N]``,
    ``frames`` uint8 ``[N, T, 3, H, W]`` (steps 1..T at the reference), ``others[n][t]`` the other cars at step t
    (0..T - 1, dicts of arrays), ``roads[n]``, ``moments[n]`` (``Moment``)."""

    start: Tensor
    previous_action: Tensor
    car_size: Tensor
    reference: Tensor
    actions: Tensor
    target_speed: Tensor
    frames: Tensor
    others: list[list[dict]]
    roads: list
    moments: list

    def __len__(self) -> int:
        return len(self.moments)

    @classmethod
    def join(cls, pools: list[ScenePool]) -> ScenePool:
        """The windows of ``pools``, in order."""
        tensors = ("start", "previous_action", "car_size", "reference", "actions", "target_speed", "frames")
        lists = ("others", "roads", "moments")
        return cls(**{name: torch.cat([getattr(p, name) for p in pools]) for name in tensors},
                   **{name: [x for p in pools for x in getattr(p, name)] for name in lists})  # fmt: skip

    def ego(self, index: Tensor) -> EgoWindow:
        """The recorded cars of windows ``index`` ``[B]`` as ``EgoWindow`` (SI, world coordinates)."""
        return EgoWindow(self.start[index], self.actions[index], self.reference[index], self.target_speed[index],
                         self.previous_action[index], self.car_size[index])  # fmt: skip


def recorded_state(sim, frame: int) -> np.ndarray:
    """The controlled car's recorded (x, y, psi, v) at ``frame`` of its recording."""
    row = sim._row0 + frame - sim.start_frame
    return np.array([sim._tracks[name][row] for name in ("x", "y", "psi", "v")], dtype=np.float64)


def future_others(world: str, sim, horizon: int, traffic: TrafficWorld | None = None) -> list[dict]:
    """The other cars at steps 0..``horizon`` from ``sim``'s current frame as ``world`` predicts them."""
    now = recorded_others(sim, sim.frame)
    if world == "oracle":
        return [now] + [recorded_others(sim, sim.frame + k) for k in range(1, horizon + 1)]
    if world == "cv":
        return [now] + [constant_velocity(now, k * sim.dt) for k in range(1, horizon + 1)]
    if world == "traffic":
        if traffic is None:
            raise ValueError("the traffic world needs a traffic model")
        return [now] + traffic.predict_cars([sim], horizon)[0]
    raise ValueError(f"unknown scene world {world!r}: expected one of {WORLDS}")


@dataclass(frozen=True)
class Moment:
    """Where a window starts: episode ``vehicle``'s car ``row`` frames after its first recorded one. Without
    ``driven``, the car is where its recording has it; with ``driven`` ``[T + 1, 4]`` (x, y, psi, v: the start,
    then after each step) and ``previous`` ``[2]`` (the action executed before the start), where a driver took it
    (``driven_moments``): the reference is then its own drive."""

    vehicle: int
    row: int
    driven: np.ndarray | None = None
    previous: np.ndarray | None = None


def window_moments(folder: str | Path, split: str, count: int, horizon: int, seed: int,
                   context_frames: int = 20) -> list[Moment]:  # fmt: skip
    """``count`` recorded moments of the split's evaluated cars, drawn with ``seed``: a car at random, then a row
    from its hand-over (``context_frames - 1``) to the last one before the evaluated zone's end whose recording
    still runs ``horizon`` rows further."""
    files, episodes, _ = select_episodes(folder, split, context_frames)
    if not episodes:
        raise ValueError(f"{folder}: no evaluated cars in the {split} split")
    recordings = Recordings(files)
    rng = np.random.default_rng(seed)
    rows: dict[int, np.ndarray] = {}
    out = []
    while len(out) < count:
        vehicle = episodes[int(rng.integers(len(episodes)))].vehicle
        if vehicle not in rows:
            sim = recordings.handover(vehicle, context_frames - 1)
            first, last = context_frames - 1, sim._count - 1 - horizon
            xs = sim._tracks["x"][sim._row0 + np.arange(first, max(last, first) + 1)]
            rows[vehicle] = first + np.nonzero(xs < sim.road.config.evaluated_m[1])[0] if last >= first else []
        if len(rows[vehicle]):
            out.append(Moment(vehicle, int(rng.choice(rows[vehicle]))))
    return out


def driven_moments(vehicle: int, drive: dict[str, np.ndarray], horizon: int, stride: int) -> list[Moment]:
    """Moments every ``stride`` steps of one driven episode (``recorded_drives.DriveRecorder``: ``rows`` ``[N]``,
    ``states`` ``[N, 4]`` before each step, ``actions`` ``[N, 2]``, ``last`` ``[4]`` after the last step). The
    reference of a moment is the drive's next ``horizon`` states; past the drive's end (a collision, the end of
    the zone) the car coasts on at its last speed and heading (the world goes on without it)."""
    states = np.concatenate([drive["states"], drive["last"][None]]).astype(np.float64)  # [N + 1, 4]
    coast = kinematics.rollout(torch.from_numpy(states[-1]), torch.zeros(horizon, 2, dtype=torch.float64), DT_S)
    states = np.concatenate([states, coast.numpy()])
    actions = drive["actions"].astype(np.float64)
    out = []
    for n in range(0, len(actions), stride):
        previous = actions[n - 1] if n > 0 else np.zeros(2)
        out.append(Moment(vehicle, int(drive["rows"][n]), states[n : n + horizon + 1], previous))
    return out


def ego_path(recordings: Recordings, moment: Moment, horizon: int) -> tuple:
    """``(simulation at the moment, the ego's states [T + 1, 4] from the start, the action before the start [2])``:
    the recording's (the action inverted from the step into the start), or the driver's (``Moment.driven``)."""
    if moment.driven is not None:
        sim = recordings.at(moment.vehicle, moment.row, moment.driven[0])
        return sim, torch.from_numpy(moment.driven[: horizon + 1]), torch.from_numpy(moment.previous)
    sim = recordings.handover(moment.vehicle, moment.row)
    poses, speeds = recorded_poses(sim, horizon)
    start = recorded_state(sim, sim.frame)
    before = recorded_state(sim, max(sim.frame - 1, sim.start_frame))
    states = np.concatenate([start[None], np.concatenate([poses, speeds[:, None]], axis=1)])
    previous = kinematics.invert_step(torch.from_numpy(before), torch.from_numpy(start), DT_S)
    return sim, torch.from_numpy(states), previous


def build_pool(folder: str | Path, moments: list[Moment], horizon: int, world: str,
               traffic: TrafficWorld | None = None, spec: ViewSpec | None = None) -> ScenePool:  # fmt: skip
    """The imagined windows of ``moments`` in ``world``, rendered in ``spec``."""
    recordings = Recordings(dataset_files(folder)[1])
    renderer = Renderer(spec or ViewSpec())
    paths, previous, sizes, targets, frames, others, roads = [], [], [], [], [], [], []
    for moment in moments:
        sim, states, before = ego_path(recordings, moment, horizon)
        cars = future_others(world, sim, horizon, traffic)
        poses = states[1:, :3].numpy()
        paths.append(states)
        previous.append(before)
        sizes.append([sim.length, sim.width])
        targets.append(target_speed(sim.vehicles(), sim.road))
        frames.append(np.stack([renderer.view(sim, cars[k], poses[k - 1]) for k in range(1, horizon + 1)]))
        others.append([{name: c[name] for name in KEPT} for c in cars[:horizon]])
        roads.append(sim.road)
    states = torch.stack(paths)  # [N, T + 1, 4]
    return ScenePool(states[:, 0].float(), torch.stack(previous).float(), torch.tensor(sizes, dtype=torch.float32),
                     states[:, 1:, :3].float(), kinematics.invert_step(states[:, :-1], states[:, 1:], DT_S).float(),
                     torch.tensor(targets, dtype=torch.float32), torch.from_numpy(np.stack(frames)), others, roads,
                     list(moments))  # fmt: skip


@dataclass(frozen=True)
class SceneDrive:
    """A scene policy's imagined drive: ``states`` ``[B, T, 4]`` after each action, ``actions`` ``[B, T, 2]``
    SI, ``normalised`` ``[B, T, 2]`` (the policy's outputs), ``features`` ``[B, T, F]`` (what it read)."""

    states: Tensor
    actions: Tensor
    normalised: Tensor
    features: Tensor


def start_lanes(pool: ScenePool, index: Tensor) -> list[int]:
    """The lane nearest to each window's start (``index`` ``[B]``)."""
    start = pool.start[index].double().numpy()
    return [int(pool.roads[i].nearest_lane(start[b, :1], start[b, 1:2])[0]) for b, i in enumerate(index.tolist())]


def lane_centres(pool: ScenePool, index: Tensor, lanes: list[int]) -> tuple[Tensor, Tensor]:
    """``[B]`` each lane's centre y and ``[B]`` the lane width [m], on the roads of windows ``index`` ``[B]``."""
    roads = [pool.roads[i] for i in index.tolist()]
    centre = torch.tensor([float(road.lane_center_y(lane)) for road, lane in zip(roads, lanes, strict=True)])
    return centre, torch.tensor([float(road.lane_width_m) for road in roads])


def scene_drive(policy: ScenePolicy, pool: ScenePool, index: Tensor, steps: int | None = None,
                feature_gradient: bool = False, lanes: list[int] | None = None,
                ego_gradient: bool = False) -> SceneDrive:  # fmt: skip
    """``policy`` driven ``steps`` (default T) steps from the windows ``index`` ``[B]`` of ``pool``, toward the
    lanes ``lanes[b]`` (a policy with a lane choice: the offset of that lane's centre is its ``lane_target``); with
    ``feature_gradient`` the features it reads (and the lane target) carry their gradient in the state and last
    action; with ``ego_gradient`` only the ego's own (``scene.EGO_FEATURES``: its speed, heading, lane offset and
    last action) and the lane target do."""
    device = next(policy.parameters()).device
    state = pool.start[index].to(device)
    last = pool.previous_action[index].to(device)
    size = pool.car_size[index].to(device)
    windows = index.tolist()
    roads = [pool.roads[i] for i in windows]
    states, actions, normalised, features = [], [], [], []
    own = torch.tensor([name in EGO_FEATURES for name in FEATURE_NAMES])
    if lanes is not None:
        centre, width = (x.to(state) for x in lane_centres(pool, index, lanes))
    for t in range(pool.reference.shape[1] if steps is None else steps):
        inputs = (state, last) if feature_gradient or ego_gradient else (state.detach(), last.detach())
        seen = features_at(*inputs, [pool.others[i][t] for i in windows], roads, size)
        if ego_gradient and not feature_gradient:
            seen = torch.where(own.to(seen.device), seen, seen.detach())
        target = None if lanes is None else (centre - inputs[0][:, 1]) / width
        action = policy(seen, target)["action"]
        last = policy.unnormalise_actions(action)
        state = kinematics.step(state, last, DT_S)
        states.append(state)
        actions.append(last)
        normalised.append(action)
        features.append(seen)
    return SceneDrive(*(torch.stack(x, 1) for x in (states, actions, normalised, features)))


__all__ = ["WORLDS", "Moment", "SceneDrive", "ScenePool", "build_pool", "driven_moments", "ego_path", "future_others",
           "lane_centres", "recorded_state", "scene_drive", "start_lanes", "window_moments"]  # fmt: skip
