"""Recorded traffic replayed around one controlled car that nobody sees (SPEC §1).

"Driving an invisible car in real traffic": every recorded vehicle moves exactly as recorded (positions from
the file, frame by frame) and never reacts; one vehicle of the recording becomes the controlled car.

Timeline of an episode started with ``ReplaySimulation.start(vehicle_id)`` at the car's first recorded frame
``f0``:

- frames ``f0 .. f0 + context_frames - 1`` (the context): the car follows its own recording exactly
  (``step()`` without an action moves it to the next recorded frame);
- at the hand-over frame ``f0 + context_frames - 1`` (the last context frame) its recorded state (position,
  heading, speed = hypot(vx, vy)) becomes the initial state of ``kinematics.step``, and every later
  ``step(action)`` drives it: an action taken at frame t moves the car from t to t + 1, like the recorded
  actions of the trajectories format.

After each step (``ReplayEvents``): collisions (exact oriented boxes against the recorded vehicles present
at that frame, the car's own recording excluded), split by where the other car is (ahead / behind: the sign
of its position projected on the controlled car's heading; being rear-ended is not the driver's fault, PPUU
counted it anyway); off-road (centre off the road); arrived (x at or past the end of the evaluated zone);
end of data (the recording has no frame after this one).

Headings of recorded vehicles come from the ``heading`` column when the file has one, else from the
velocity (atan2(vy, vx)), held over stops (below ``STOPPED_MPS``).

``replay_drift`` measures how well actions reproduce recorded trajectories: actions inferred from positions
(``kinematics.invert_actions``: accelerations clipped as PPUU did), and the exact actions when the file has them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from worldmodel.data.trajectories import FrameTable, TrajectoryReader
from worldmodel.traffic import kinematics
from worldmodel.traffic.geometry import boxes_overlap
from worldmodel.traffic.road import Road

#: Below this speed [m/s] a velocity says nothing about the heading: the last one is held.
STOPPED_MPS = 0.2
#: Horizons [s] at which ``replay_drift`` reports the mean position error.
DRIFT_HORIZONS_S = (1.0, 3.0, 10.0)

_TRACK_COLUMNS = ("frame", "x", "y", "vx", "vy", "lane")


def recorded_headings(
    vx: np.ndarray, vy: np.ndarray, counts: np.ndarray, heading: np.ndarray | None = None
) -> np.ndarray:
    """Heading [rad] of every row of consecutive tracks ``[R]`` (rows of a vehicle together, ``counts [V]``
    rows each): the ``heading`` column if given, else atan2(vy, vx), held from the last row where the car
    moved faster than ``STOPPED_MPS`` (before its first such row: that row's heading; never moving: 0)."""
    if heading is not None:
        return np.asarray(heading, dtype=np.float64)
    vx, vy = np.asarray(vx, dtype=np.float64), np.asarray(vy, dtype=np.float64)
    n = len(vx)
    raw = np.arctan2(vy, vx)
    moving = np.hypot(vx, vy) > STOPPED_MPS
    rows = np.arange(n)
    counts = np.asarray(counts, dtype=np.int64)
    first_row = np.repeat(np.cumsum(counts) - counts, counts)  # [R] first row of each row's vehicle
    end_row = first_row + np.repeat(counts, counts)
    last_moving = np.maximum.accumulate(np.where(moving, rows, -1)) if n else rows
    next_moving = np.minimum.accumulate(np.where(moving, rows, n)[::-1])[::-1] if n else rows
    held = raw[np.clip(last_moving, 0, max(n - 1, 0))]
    ahead = raw[np.clip(next_moving, 0, max(n - 1, 0))]
    return np.where(last_moving >= first_row, held, np.where(next_moving < end_row, ahead, 0.0))


@dataclass(frozen=True)
class ReplayEvents:
    """What the controlled car ran into at the current frame."""

    collision_ahead: bool
    """It overlaps a recorded vehicle whose centre is ahead of it (along its heading)."""
    collision_behind: bool
    """It overlaps a recorded vehicle whose centre is behind it (it was rear-ended, or drove backwards)."""
    colliding_ids: np.ndarray
    """[P] ids of the recorded vehicles it overlaps."""
    offroad: bool
    """Its centre is off the road."""
    arrived: bool
    """Its centre is at or past the end of the evaluated zone."""
    end_of_data: bool
    """The recording has no frame after this one."""

    @property
    def collision(self) -> bool:
        return self.collision_ahead or self.collision_behind

    @property
    def event(self) -> str | None:
        """The most important event: "collision_ahead", "collision_behind", "offroad", "arrived",
        "end_of_data", or None."""
        for name in ("collision_ahead", "collision_behind", "offroad", "arrived", "end_of_data"):
            if getattr(self, name):
                return name
        return None


class ReplaySimulation:
    """A recording (trajectories.h5) replayed frame by frame, with one invisible controlled car.

    The whole recording is held in memory (about 110 bytes per row; the file is closed after loading).
    ``ReplaySimulation(other_simulation)`` shares ``other_simulation``'s loaded recording (no copy, nothing
    read again) and runs its own episodes: episodes in lockstep need one simulation each.
    Attributes: ``road`` (``Road``), ``dt`` [s], ``kind_names``, ``vehicle_table`` (``/vehicles`` columns
    ``id, start, count, length, width, kind`` [V]), ``frame_range`` (first, stop) half-open,
    ``context_frames``. After ``start``: ``ego_id``, ``frame``, ``start_frame``, ``handover_frame``, and
    the controlled car's state ``x, y`` [m], ``psi`` [rad], ``v`` [m/s], size ``length, width`` [m].
    """

    def __init__(self, trajectories: str | os.PathLike | TrajectoryReader | ReplaySimulation, context_frames: int = 20):
        if context_frames < 1:
            raise ValueError(f"ReplaySimulation: context_frames must be >= 1, got {context_frames}")
        self.context_frames = int(context_frames)
        if isinstance(trajectories, ReplaySimulation):  # share its loaded recording (read-only), not its episode
            self.__dict__.update({name: getattr(trajectories, name) for name in self._LOADED})
        elif isinstance(trajectories, TrajectoryReader):
            self._load(trajectories)
        else:
            with TrajectoryReader(trajectories) as reader:
                self._load(reader)
        self.ego_id: int | None = None
        self._others_key: tuple | None = None  # (ego, frame) of the cached ``_others``

    #: What ``_load`` reads from the file: shared by simulations built from another one.
    _LOADED = ("road", "dt", "kind_names", "frame_range", "vehicle_table", "_index", "_tracks", "_frames")

    def _load(self, reader: TrajectoryReader) -> None:
        self.road = Road.from_dict(reader.road)
        self.dt = float(reader.dt)
        self.kind_names = list(reader.kinds)
        self.frame_range = tuple(int(f) for f in reader.frame_range)
        self.vehicle_table = {name: values.copy() for name, values in reader.vehicles.items()}
        self._index = {int(vid): k for k, vid in enumerate(self.vehicle_table["id"])}
        names = _TRACK_COLUMNS + (("heading",) if "heading" in reader.columns else ())
        rows = reader.read_rows(0, reader.num_rows, names)  # vehicle order
        counts = self.vehicle_table["count"]
        psi = recorded_headings(rows["vx"], rows["vy"], counts, rows.get("heading"))
        # tracks in vehicle order, float64: the controlled car's recording and its ghost
        self._tracks = {
            "frame": rows["frame"].astype(np.int64),
            "x": rows["x"].astype(np.float64),
            "y": rows["y"].astype(np.float64),
            "psi": psi,
            "v": np.hypot(rows["vx"].astype(np.float64), rows["vy"].astype(np.float64)),
        }
        # the same rows sorted by frame (then vehicle), with per-frame offsets: who is where when
        first, stop = self.frame_range
        order = np.argsort(self._tracks["frame"], kind="stable")
        owner = np.repeat(np.arange(len(counts)), counts)[order]
        per_frame = np.bincount(self._tracks["frame"] - first, minlength=stop - first) if len(order) else []
        columns = {"vehicle": self.vehicle_table["id"][owner].astype(np.int64)}
        columns.update({name: self.vehicle_table[name][owner].astype(np.float64) for name in ("length", "width")})
        columns["kind"] = self.vehicle_table["kind"][owner].astype(np.int64)
        columns.update({name: self._tracks[name][order] for name in ("x", "y", "psi", "v")})
        columns["lane"] = rows["lane"][order].astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(per_frame)]).astype(np.int64)
        self._frames = FrameTable(first_frame=first, offsets=offsets, columns=columns)

    # ------------------------------------------------------------------------------------- episodes
    def eligible_vehicles(self) -> np.ndarray:
        """Ids of the vehicles worth an episode: recorded for at least ``context_frames + 1`` frames (the
        context and one controlled step) and, at the hand-over, still short of the end of the evaluated zone
        (a car present when the recording starts may already be past it)."""
        table = self.vehicle_table
        enough = np.nonzero(table["count"] > self.context_frames)[0]
        handover_x = self._tracks["x"][table["start"][enough] + self.context_frames - 1]
        return table["id"][enough[handover_x < self.road.config.evaluated_m[1]]].astype(np.int64)

    def start(self, vehicle_id: int) -> ReplayEvents:
        """Put the controlled car at ``vehicle_id``'s first recorded frame, in its recorded state."""
        k = self._index.get(int(vehicle_id))
        if k is None:
            raise KeyError(f"ReplaySimulation: no vehicle {vehicle_id} in the recording")
        count = int(self.vehicle_table["count"][k])
        if count < self.context_frames:
            raise ValueError(
                f"ReplaySimulation: vehicle {vehicle_id} has {count} frames, fewer than the "
                f"{self.context_frames} context frames"
            )
        self.ego_id = int(vehicle_id)
        self._row0, self._count = int(self.vehicle_table["start"][k]), count
        self.length = float(self.vehicle_table["length"][k])
        self.width = float(self.vehicle_table["width"][k])
        self.kind = int(self.vehicle_table["kind"][k])
        self.start_frame = int(self._tracks["frame"][self._row0])
        self.handover_frame = self.start_frame + self.context_frames - 1
        self.frame = self.start_frame
        self._follow_recording()
        self.start_x = self.x
        return self.events()

    @property
    def in_context(self) -> bool:
        """True while the car still follows its recording (before the hand-over frame)."""
        return self.frame < self.handover_frame

    @property
    def controlled_steps(self) -> int:
        """Steps driven by actions since the hand-over."""
        return max(self.frame - self.handover_frame, 0)

    @property
    def distance_m(self) -> float:
        """Distance travelled along x since ``start`` [m]."""
        return self.x - self.start_x

    def _follow_recording(self) -> None:
        r = self._row0 + self.frame - self.start_frame
        t = self._tracks
        self.x, self.y, self.psi, self.v = (float(t[name][r]) for name in ("x", "y", "psi", "v"))

    def step(self, action: tuple[float, float] | np.ndarray | None = None) -> ReplayEvents:
        """Advance one frame. In the context the car follows its recording (``action`` must be None); after
        the hand-over ``action`` = (accel [m/s^2], curvature [1/m]) drives it (no clipping here)."""
        if self.ego_id is None:
            raise RuntimeError("ReplaySimulation: call start(vehicle_id) before step()")
        if self.frame + 1 >= self.frame_range[1]:
            raise RuntimeError(f"ReplaySimulation: no recorded frame after {self.frame} (end of data)")
        if self.in_context:
            if action is not None:
                raise ValueError(
                    f"ReplaySimulation: the car follows its recording until frame {self.handover_frame} "
                    f"(now {self.frame}); step() takes no action before the hand-over"
                )
            self.frame += 1
            self._follow_recording()
            return self.events()
        if action is None:
            raise ValueError("ReplaySimulation: after the hand-over step() needs an action (accel, curvature)")
        accel, curvature = (float(a) for a in np.asarray(action, dtype=np.float64).reshape(2))
        state = kinematics.step(*(np.array([s]) for s in (self.x, self.y, self.psi, self.v, accel, curvature)), self.dt)
        self.x, self.y, self.psi, self.v = (float(s[0]) for s in state)
        self.frame += 1
        return self.events()

    # ---------------------------------------------------------------------------------- what is where
    def _others(self) -> dict[str, np.ndarray]:
        """The recorded vehicles at the current frame, the controlled car's own recording excluded: [n]
        (computed once per frame: ``events`` and ``vehicles`` both need them)."""
        key = (self.ego_id, self.frame)
        if self._others_key != key:
            rows = self._frames.at(self.frame)
            keep = rows["vehicle"] != self.ego_id
            self._others_now, self._others_key = {name: values[keep] for name, values in rows.items()}, key
        return self._others_now

    def events(self) -> ReplayEvents:
        """Collisions, off-road, arrival and end of data at the current frame (see the module docstring)."""
        o = self._others()
        # broad phase on bounding circles, then exact oriented boxes
        reach = 0.5 * (np.hypot(o["length"], o["width"]) + np.hypot(self.length, self.width))
        near = np.nonzero((np.abs(o["x"] - self.x) < reach) & (np.abs(o["y"] - self.y) < reach))[0]
        n = len(near)
        hit = boxes_overlap(
            np.full(n, self.x), np.full(n, self.y), np.full(n, self.psi), np.full(n, self.length),
            np.full(n, self.width), o["x"][near], o["y"][near], o["psi"][near], o["length"][near],
            o["width"][near],
        )  # fmt: skip
        hits = near[hit]
        forward = (o["x"][hits] - self.x) * np.cos(self.psi) + (o["y"][hits] - self.y) * np.sin(self.psi)
        return ReplayEvents(
            collision_ahead=bool((forward > 0).any()),
            collision_behind=bool((forward <= 0).any()),
            colliding_ids=o["vehicle"][hits],
            offroad=not bool(self.road.on_road(np.array([self.x]), np.array([self.y]))[0]),
            arrived=self.x >= self.road.config.evaluated_m[1],
            end_of_data=self.frame + 1 >= self.frame_range[1],
        )

    def vehicles(self) -> dict[str, np.ndarray]:
        """Everything present now, the controlled car first (row 0): ``id``, ``x``, ``y`` [m], ``psi`` [rad],
        ``v`` [m/s], ``length``, ``width`` [m], ``lane`` (-1 off the lanes), ``kind``, ``controlled`` (bool)
        [n + 1] (for ``EgoRasterizer.render`` and ``render_topdown``)."""
        o = self._others()
        lane = int(self.road.lane_at(np.array([self.x]), np.array([self.y]))[0])
        ego = {"vehicle": self.ego_id, "x": self.x, "y": self.y, "psi": self.psi, "v": self.v,
               "length": self.length, "width": self.width, "lane": lane, "kind": self.kind}  # fmt: skip
        out = {name: np.concatenate([np.array([ego[name]], dtype=o[name].dtype), o[name]]) for name in ego}
        out["id"] = out.pop("vehicle")
        out["controlled"] = np.arange(len(out["x"])) == 0
        return out

    @property
    def ghost(self) -> dict[str, float] | None:
        """Where the controlled car's recording is at the current frame (``x, y`` [m], ``psi`` [rad], ``v``
        [m/s], ``length, width`` [m]), or None once the recording has ended."""
        k = self.frame - self.start_frame
        if self.ego_id is None or not 0 <= k < self._count:
            return None
        r = self._row0 + k
        return {"x": float(self._tracks["x"][r]), "y": float(self._tracks["y"][r]),
                "psi": float(self._tracks["psi"][r]), "v": float(self._tracks["v"][r]), "length": self.length,
                "width": self.width}  # fmt: skip

    def recorded_steps_to_zone_end(self) -> int | None:
        """Steps the controlled car's recording took from the hand-over frame to its first frame at or past the
        end of the evaluated zone (x >= ``evaluated_m[1]``; 0 if already there), or None when it never gets
        there. Needs ``start``."""
        if self.ego_id is None:
            raise RuntimeError("ReplaySimulation: call start(vehicle_id) before recorded_steps_to_zone_end()")
        x = self._tracks["x"][self._row0 + self.context_frames - 1 : self._row0 + self._count]  # from the hand-over
        there = np.nonzero(x >= self.road.config.evaluated_m[1])[0]
        return int(there[0]) if len(there) else None


# ------------------------------------------------------------------------------------------- drift
def _replay(
    x0: np.ndarray, y0: np.ndarray, psi0: np.ndarray, v0: np.ndarray, accel: np.ndarray, curv: np.ndarray, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``[N, T + 1]`` of N cars driven from their initial states ``[N]`` by actions ``[N, T]``."""
    n, t_max = accel.shape
    xs, ys = np.empty((n, t_max + 1)), np.empty((n, t_max + 1))
    x, y, psi, v = x0, y0, psi0, v0
    xs[:, 0], ys[:, 0] = x, y
    for t in range(t_max):
        x, y, psi, v = kinematics.step(x, y, psi, v, accel[:, t], curv[:, t], dt)
        xs[:, t + 1], ys[:, t + 1] = x, y
    return xs, ys


def _drift_summary(err: np.ndarray, valid: np.ndarray, dt: float) -> dict[str, float]:
    """Summary of position errors ``[N, T]`` [m] where ``valid``."""
    worst = np.where(valid, err, 0.0).max(axis=1) if err.size else np.zeros(0)
    out = {
        "max_error_m_mean": float(worst.mean()) if len(worst) else float("nan"),
        "max_error_m_max": float(worst.max()) if len(worst) else float("nan"),
    }
    for h in DRIFT_HORIZONS_S:
        k = round(h / dt)
        have = valid[:, k] if k < valid.shape[1] else np.zeros(len(valid), bool)
        out[f"error_m_at_{h:g}s"] = float(err[have, k].mean()) if have.any() else float("nan")
        out[f"vehicles_at_{h:g}s"] = int(have.sum())
    return out


def replay_drift(
    trajectories: str | os.PathLike | TrajectoryReader,
    vehicle_ids: np.ndarray | list[int] | None = None,
    max_vehicles: int | None = None,
) -> dict:
    """How far cars drift from their recordings when replayed by actions from their first state.

    ``inferred``: actions inferred from the recorded positions (``kinematics.invert_actions``), accelerations
    clipped to ``|a| <= MAX_REPLAY_ACCEL_MPS2`` (PPUU), replayed from the inferred first state. ``recorded``
    (only when the file has ``accel`` and ``curvature`` columns): the file's actions, unclipped, replayed
    from the recorded first state (position, heading, speed = hypot(vx, vy)); ~0 for simulated bots.

    Each gives ``max_error_m_mean`` / ``max_error_m_max``: the mean and max over cars of a car's largest
    position error [m]; ``error_m_at_{1,3,10}s``: the mean error at that horizon over the cars recorded that
    long (``vehicles_at_...``). Also ``vehicles`` (cars measured) and ``clipped_fraction`` (inferred
    accelerations that hit the clip). All cars are replayed together, one vectorised step per frame.
    """
    if not isinstance(trajectories, TrajectoryReader):
        with TrajectoryReader(trajectories) as reader:
            return replay_drift(reader, vehicle_ids, max_vehicles)
    reader, table = trajectories, trajectories.vehicles
    ids = table["id"] if vehicle_ids is None else np.asarray(vehicle_ids)
    if max_vehicles is not None:
        ids = ids[:max_vehicles]
    k = np.searchsorted(table["id"], ids)
    if np.any(k >= len(table["id"])) or np.any(table["id"][np.minimum(k, len(table["id"]) - 1)] != ids):
        raise KeyError(f"replay_drift: vehicles not in {reader.path}: {sorted(set(ids) - set(table['id']))}")
    exact = "accel" in reader.columns and "curvature" in reader.columns
    n, dt = len(ids), float(reader.dt)
    if n == 0:
        return {"vehicles": 0}
    starts, counts = table["start"][k].astype(np.int64), table["count"][k].astype(np.int64)
    lo, hi = int(starts.min()), int((starts + counts).max())  # one contiguous read (rows sorted by vehicle)
    names = ("x", "y", "vx", "vy") + (("heading",) if "heading" in reader.columns else ())
    names += ("accel", "curvature") if exact else ()
    rows = {name: values.astype(np.float64) for name, values in reader.read_rows(lo, hi, names).items()}
    t_max = int(counts.max())
    # [N, T] padded tracks (rows of car i at 0..count_i - 1)
    valid = np.arange(t_max)[None, :] < counts[:, None]
    src = np.where(valid, starts[:, None] - lo + np.arange(t_max)[None, :], 0)
    x, y = rows["x"][src], rows["y"][src]
    # inferred actions, car by car (kinematics.invert_actions works on one track)
    accel, curv, clipped = np.zeros((n, t_max)), np.zeros((n, t_max)), np.zeros((n, t_max), dtype=bool)
    psi0, v0 = np.zeros(n), np.zeros(n)
    for i in range(n):
        c = int(counts[i])
        psi, v, accel[i, :c], curv[i, :c], clipped[i, :c] = kinematics.invert_actions(x[i, :c], y[i, :c], dt)
        psi0[i], v0[i] = psi[0], v[0]
    clipped = clipped[valid]
    xr, yr = _replay(x[:, 0], y[:, 0], psi0, v0, accel[:, :-1], curv[:, :-1], dt)
    out = {
        "vehicles": n,
        "inferred": _drift_summary(np.hypot(xr - x, yr - y), valid, dt),
        "clipped_fraction": float(clipped.mean()) if clipped.size else 0.0,
    }
    if exact:
        sel = src[:, 0]
        heading = rows["heading"][sel] if "heading" in rows else None
        if heading is None:  # heading from velocity, held over stops: computed on the cars' own rows
            own_rows = src[valid]  # [sum(counts)] car by car
            psi_rows = recorded_headings(rows["vx"][own_rows], rows["vy"][own_rows], counts)
            heading = psi_rows[np.cumsum(counts) - counts]
        v_start = np.hypot(rows["vx"][sel], rows["vy"][sel])
        xr, yr = _replay(x[:, 0], y[:, 0], heading, v_start, rows["accel"][src][:, :-1],
                         rows["curvature"][src][:, :-1], dt)  # fmt: skip
        out["recorded"] = _drift_summary(np.hypot(xr - x, yr - y), valid, dt)
    return out
