"""TrafficSimulation: every vehicle as one column of a ``[F, capacity]`` float64 array, stepped with numpy.

Bots drive with IDM + MOBIL + lane keeping (``drivers.py``, the same bot as the closed-loop ``BotDriver``);
controlled cars take actions from outside. Every car moves with the same kinematics (``kinematics.step``);
bots' actions are rounded to float32 before they are applied, so recorded actions replay their trajectories
exactly. The vehicle array's rows are in ``vehicles.py``; after the ``n`` cars come a few stand-in columns:
"no car" ahead (at +inf) and behind (at -inf), and the end of each ramp lane (a standing obstacle).

One ``step()`` is a fixed sequence of array operations, whatever the number of vehicles (a step costs
about 200 numpy calls on arrays of ~200 elements: their number, not their size, sets the speed):
1. neighbours: sort lane keys (``occupancy.py``: a car is listed in every lane its body overlaps; sentinel
   keys turn "nobody there" into a stand-in column), ``searchsorted`` for leaders and the cars after them;
2. IDM accelerations in one pass over ``[3, entries]`` pairs (behind the leader and the car after it in the
   own lane and every lane the body overlaps; ramp cars behind their lane's end), desired speeds capped in
   the downstream zone (``downstream.py``); noise (one draw for acceleration noise and lateral wander);
3. MOBIL once per ``lane_change_period_s`` for every driver at once (``lane_changes.py``: decisions at a
   lower rate than the dynamics; cars that change into the same gap see each other through the occupancy);
4. lane keeping -> curvature; controlled cars' actions; kinematics (the heading's cosine and sine are kept
   in the vehicle array from one step to the next);
5. collisions (``collisions.py``: a band sweep proves most steps free of contacts, else the exact test),
   exits; inflow from the queues comes first, every ``_SPAWN_EVERY`` steps.
All randomness comes from one seeded ``np.random.Generator``: same seed, same traffic, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.traffic import compiled, kinematics
from worldmodel.traffic.collisions import BAND_KEY, BandSweep, ContactMemory, overlapping_pairs
from worldmodel.traffic.downstream import DownstreamSpeed
from worldmodel.traffic.driver_noise import DriverNoise
from worldmodel.traffic.drivers import DriverSettings, idm_accel, steering_curvature, turn_limit_rad
from worldmodel.traffic.inflow import Inflow, initial_traffic
from worldmodel.traffic.lane_changes import lane_change_targets
from worldmodel.traffic.occupancy import AHEAD_NONE, BEHIND_NONE, COURTESY_ZONE_M, NO_LANE, LaneOccupancy, sentinels
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import Scenario
from worldmodel.traffic.stats import SectionStats

# the rows of the vehicle array
from worldmodel.traffic.vehicles import (  # isort: skip
    ACCEL, ACCEL_LIMIT, AMAX, BCOMF, CONTROLLED, COOLDOWN, COS, CURV, FOLLOWER_ROWS, HEADWAY, ID, KIND, LANE,
    LEADER_ROWS, LENGTH, MAX_HEADING, N_FIELDS, NOISE, ORIGIN, PARAMETER_ROWS, POLITE, PSI, S0, SIN, SIN_KEEP,
    SIN_TURN, SPAWN_FRAME, THRESH, V, V0, WANDER, WIDTH, X, Y, HALF_LENGTH, HALF_WIDTH,
    HALF_DIAGONAL, derive, draw_vehicles,
)  # fmt: skip

_WANDER_CLEARANCE_M = 0.3  # lateral wander keeps a bot's side at least this far inside its lane [m]
_CONTACT_MEMORY_S = 10.0  # a pair of cars that touches again within this time is the same collision [s]
_SPAWN_EVERY = 10  # inflow is admitted every this many steps (1 s; up to 3,600 vehicles/h/lane)
_NO_IDS = np.zeros(0, dtype=np.int64)


@dataclass
class StepEvents:
    """What happened during one step (vehicle ids)."""

    collisions: np.ndarray
    """[P, 2] pairs of ids whose boxes overlap after the step (new and ongoing)."""
    exited: np.ndarray
    """[E] ids that left the road at its end."""
    spawned: np.ndarray
    """[S] ids that entered."""


class TrafficSimulation:
    """A highway with bot-driven traffic and optional controlled cars.

    Public per-vehicle views (length ``n``, read-only by convention): ``ids, x, y, psi, v, length, width,
    kind, lane, controlled``, and ``accel, curvature`` (the action each car took in the last step).
    """

    def __init__(self, scenario: Scenario, seed: int = 0, capacity: int = 1024, compiled_kernel: bool | None = None):
        """``compiled_kernel``: steps 1-2 in the compiled kernel (``compiled.py``; the same traffic, faster);
        None: where numba is installed."""
        self.scenario = scenario
        self.compiled = compiled.available() if compiled_kernel is None else compiled_kernel
        if self.compiled and not compiled.available():
            raise ValueError("TrafficSimulation: compiled_kernel=True needs numba (pip install numba)")
        self.road = road = Road(scenario.road)
        self.dt = scenario.dt_s
        self.capacity = capacity
        b, nz = scenario.behaviour, scenario.noise
        self._period_steps = max(1, round(b.lane_change_period_s / self.dt))
        # the bots' settings shared by all drivers; the per-driver ones are columns (``_settings``)
        self._shared = dict(right_bias_mps2=b.right_bias_mps2, safe_decel_mps2=b.safe_decel_mps2,
                            min_change_gap_m=b.min_change_gap_m, follower_horizon_s=0.0,
                            change_period_s=b.lane_change_period_s, change_cooldown_s=b.lane_change_cooldown_s,
                            lateral_time_s=b.lateral_time_s, max_lateral_speed_mps=b.max_lateral_speed_mps)  # fmt: skip
        self._lane_keeping = DriverSettings(**self._shared)
        self._inflow = Inflow(scenario, self.road, self.dt)
        self._lanes, self._top = road.lanes, road.total_lanes - 1
        lane_end = road.ramp_end_m(np.arange(road.total_lanes))  # [lanes_total], inf mainline
        # where each lane's courtesy zone starts [m], by integer lane (inf on the mainline, at NO_LANE)
        self._courtesy_start = np.concatenate([lane_end - COURTESY_ZONE_M, np.full(1 - NO_LANE, np.inf)])
        # the columns after the cars that stand for "no car" ahead (at +inf) and behind (at -inf) and for
        # the end of each ramp lane (a standing obstacle): [N_FIELDS, 2 + ramps] (``occupancy.py``)
        stand_ins = np.zeros((N_FIELDS, 2 + len(road.ramps)))
        stand_ins[X, AHEAD_NONE], stand_ins[X, BEHIND_NONE] = np.inf, -np.inf
        stand_ins[X, 2:] = lane_end[road.lanes :]
        stand_ins[[V0, HEADWAY, S0, AMAX, BCOMF]] = 1.0  # a harmless driver, should one be asked
        self._stand_ins = stand_ins
        self._noise = DriverNoise(nz, self.dt)  # acceleration noise and lateral wander per driver
        self.reset(seed)

    # ----------------------------------------------------------------------------------------- state
    def reset(self, seed: int | None = None) -> None:
        """Start again from an empty (or initially filled) road with a fresh generator."""
        self.rng = np.random.default_rng(seed)
        self._d = np.zeros((N_FIELDS, self.capacity))
        self._columns = np.arange(self.capacity)
        self.n = 0
        self.frame = 0
        self._next_id = 0
        self._inflow.reset(self.rng)
        self._downstream = DownstreamSpeed(self.scenario.downstream, self.road.total_lanes, self.dt, self.rng)
        self.stats = SectionStats(self.road, self.dt)
        self._contacts = ContactMemory(round(_CONTACT_MEMORY_S / self.dt))
        self._sweep = BandSweep(self.road.lane_width_m)
        self._backlog = 0  # vehicles waiting in the queues
        self._append(initial_traffic(self.rng, self.scenario, self.road))

    def _col(self, row: int) -> np.ndarray:
        return self._d[row, : self.n]

    queue = property(lambda self: self._inflow.queue, doc="[entries] vehicles waiting at each entry")
    ids = property(lambda self: self._col(ID).astype(np.int64))
    x = property(lambda self: self._col(X))
    y = property(lambda self: self._col(Y))
    psi = property(lambda self: self._col(PSI))
    v = property(lambda self: self._col(V))
    length = property(lambda self: self._col(LENGTH))
    width = property(lambda self: self._col(WIDTH))
    kind = property(lambda self: self._col(KIND).astype(np.int64))
    lane = property(lambda self: self._col(LANE).astype(np.int64))
    controlled = property(lambda self: self._col(CONTROLLED) > 0)
    accel = property(lambda self: self._col(ACCEL))
    curvature = property(lambda self: self._col(CURV))

    @property
    def time_s(self) -> float:
        return self.frame * self.dt

    @property
    def kind_names(self) -> list[str]:
        return [k.kind for k in self.scenario.vehicles]

    def index_of(self, vehicle_id: int) -> int:
        """Column of ``vehicle_id`` (raises KeyError if it is not on the road)."""
        hits = np.nonzero(self._d[ID, : self.n] == vehicle_id)[0]
        if len(hits) == 0:
            raise KeyError(f"vehicle {vehicle_id} is not on the road")
        return int(hits[0])

    # ------------------------------------------------------------------------------------ spawning
    def _append(self, cols: np.ndarray) -> np.ndarray:
        """Add vehicles ``[F, k]``; returns their ids."""
        k = cols.shape[1]
        if self.n + k + self._stand_ins.shape[1] > self.capacity:
            grown = np.zeros((N_FIELDS, max(2 * self.capacity, self.n + k + self._stand_ins.shape[1])))
            grown[:, : self.n] = self._d[:, : self.n]
            self._d, self.capacity = grown, grown.shape[1]
            self._columns = np.arange(self.capacity)
        ids = np.arange(self._next_id, self._next_id + k)
        cols[ID] = ids
        cols[SPAWN_FRAME] = self.frame
        derive(cols, self.road.lane_width_m, _WANDER_CLEARANCE_M)
        self._d[:, self.n : self.n + k] = cols
        self.n += k
        self._next_id += k
        return ids

    def _spawn(self) -> np.ndarray:
        """Admit queued vehicles where the entry has a safe gap (called before the step's neighbour search)."""
        new, arrivals = self._inflow.admit(self.rng, self._d, self.n, _SPAWN_EVERY)
        self._backlog = int(self._inflow.queue.sum())
        self.stats.record_arrivals(arrivals)
        return self._append(new)

    def place_bots(
        self,
        x: np.ndarray,
        lane: np.ndarray,
        v: np.ndarray,
        length: float | np.ndarray | None = None,
        **params: float,
    ) -> np.ndarray:
        """Put bots at positions ``x`` [m] in lanes ``lane`` with speeds ``v`` [m/s] (scripted situations and
        tests). Their driver parameters are drawn as usual unless given: ``v0, headway, s0, amax, bcomf,
        polite, thresh`` (e.g. ``v0=10.0``). Returns their ids."""
        x, lane, v = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (x, lane, v))
        c = draw_vehicles(self.rng, self.scenario, len(x))
        c[X], c[LANE], c[ORIGIN], c[V] = x, lane, lane, v
        c[Y] = self.road.lane_center_y(lane)
        c[NOISE] = c[WANDER] = 0.0
        if length is not None:
            c[LENGTH] = length
            c[MAX_HEADING] = turn_limit_rad(c[LENGTH])
        for name, value in params.items():
            c[PARAMETER_ROWS[name]] = value
        return self._append(c)

    def add_controlled(self, x: float, y: float, psi: float, v: float, length: float, width: float) -> int:
        """Put a controlled car on the road; it moves only by the actions given to ``step``. Returns its id."""
        c = draw_vehicles(self.rng, self.scenario, 1)
        c[X], c[Y], c[PSI], c[V], c[LENGTH], c[WIDTH], c[CONTROLLED] = x, y, psi, v, length, width, 1
        lane = self.road.lane_at(np.array([x]), np.array([y]))
        c[LANE] = c[ORIGIN] = lane if lane >= 0 else NO_LANE
        return int(self._append(c)[0])

    def remove(self, vehicle_ids: np.ndarray) -> None:
        """Take vehicles off the road."""
        keep = ~np.isin(self._d[ID, : self.n], np.asarray(vehicle_ids))
        self._compact(keep)

    def _compact(self, keep: np.ndarray) -> None:
        k = int(keep.sum())
        if k < self.n:
            self._d[:, :k] = self._d[:, : self.n][:, keep]
            self.n = k

    # ------------------------------------------------------------------------------------ following
    def _settings(self, cols: np.ndarray) -> DriverSettings:
        """The bot settings of cars ``cols``: their own IDM and MOBIL parameters, the scenario's behaviour."""
        d = self._d
        return DriverSettings(time_headway_s=d[HEADWAY, cols], min_gap_m=d[S0, cols], max_accel_mps2=d[AMAX, cols],
                              comfort_decel_mps2=d[BCOMF, cols], politeness=d[POLITE, cols],
                              change_threshold_mps2=d[THRESH, cols], **self._shared)  # fmt: skip

    def _desired_speed(self, v0: np.ndarray, x: np.ndarray, lane: np.ndarray) -> np.ndarray:
        """Desired speed [m/s] of cars of own desired speed ``v0`` at ``x`` [m] driving in ``lane`` (integer
        lane indices, any a query names): capped in the downstream zone."""
        in_zone = x > self.scenario.downstream.start_m
        return np.where(in_zone, np.minimum(v0, self._downstream.by_index[lane]), v0)

    def _follow(self, f: np.ndarray, lead: np.ndarray, v0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IDM acceleration [m/s^2] of columns ``f`` [P] behind columns ``lead`` [P] or [K, P] (a car, a ramp's
        end or "no car": the bumper gap is then inf), desired speeds ``v0`` [P]; and the bumper gaps [m]."""
        d = self._d
        xf, vf, lf, headway, s0, amax, bcomf = d[FOLLOWER_ROWS].take(f, axis=1)
        xl, vl, ll = d[LEADER_ROWS].take(lead, axis=1)
        gap = xl - xf - 0.5 * (ll + lf)
        return idm_accel(vf, v0, gap, vf - vl, headway, s0, amax, bcomf), gap

    def _follow_in_lane(self, f: np.ndarray, lead: np.ndarray, lane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``_follow`` at the desired speed of each follower in ``lane`` [P] (integer lane indices)."""
        d = self._d
        return self._follow(f, lead, self._desired_speed(d[V0][f], d[X][f], lane))

    # ------------------------------------------------------------------------------------ lane changes

    def _mobil(self, occ: LaneOccupancy, a_own: np.ndarray, lead: np.ndarray) -> None:
        """Lane-change decisions of every bot that may decide (``lane_changes.py``). ``a_own``, ``lead``:
        ``[n]`` from this step."""
        d, n = self._d, self.n
        due = (d[ORIGIN, :n] == d[LANE, :n]) & (d[COOLDOWN, :n] <= 0) & (d[CONTROLLED, :n] == 0)
        # a car too slow to move sideways has no discretionary incentive (``change_incentive``): skipped
        due &= (d[V, :n] > self._lane_keeping.min_change_speed_mps) | (d[LANE, :n] >= self._lanes)
        c = due.nonzero()[0]
        if len(c) == 0:
            return
        target = lane_change_targets(d, n, c, occ, a_own, lead, self._follow_in_lane, self._settings(c), self._lanes)
        change = target != d[LANE, c]
        if change.any():
            cc = c[change]
            d[ORIGIN, cc] = d[LANE, cc]
            d[LANE, cc] = target[change]
            self.stats.record_lane_changes(d[X, cc])

    def _update_controlled_lanes(self) -> None:
        """A controlled car's lane is the one under its centre (or off the road); the lanes its body also
        reaches come from its footprint in the ``LaneOccupancy``, as for every car."""
        ctrl = np.flatnonzero(self._col(CONTROLLED) > 0)
        d = self._d
        lane = self.road.lane_at(d[X, ctrl], d[Y, ctrl])
        d[LANE, ctrl] = d[ORIGIN, ctrl] = np.where(lane >= 0, lane, NO_LANE)

    # ------------------------------------------------------------------------------------------ step
    def step(self, actions: dict[int, tuple[float, float]] | None = None) -> StepEvents:
        """Advance one ``dt``. ``actions`` maps controlled vehicle ids to (accel [m/s^2], curvature [1/m])."""
        spawned = self._spawn() if self.frame % _SPAWN_EVERY == 0 else _NO_IDS
        d, n, b = self._d, self.n, self.scenario.behaviour
        d[:, n : n + self._stand_ins.shape[1]] = self._stand_ins
        any_controlled = np.count_nonzero(d[CONTROLLED, :n])
        if any_controlled:
            self._update_controlled_lanes()
        lane, origin, x, v = d[LANE, :n], d[ORIGIN, :n], d[X, :n], d[V, :n]
        x_old = x.copy()
        # 1.-2. neighbours and car following
        occ, leader, a_own, accel = (self._neighbours_compiled if self.compiled else self._neighbours)(any_controlled)
        changing = (origin != lane).nonzero()[0]
        accel = self._noise.advance(self.rng, d, n, accel)
        # a car blocked at a standstill early in its lane change gives up (it cannot move sideways without
        # moving forward, and waiting in two lanes at once can lock a queue)
        if len(changing):
            self._give_up(changing, accel)
        accel = np.minimum(np.maximum(accel, -b.max_decel_mps2), d[ACCEL_LIMIT, :n])
        accel = np.maximum(accel, -v / self.dt)
        # 3. lane changes
        if self.frame % self._period_steps == 0:
            self._mobil(occ, a_own, leader)
        # 4. lane keeping (toward the lane centre + the driver's wander), actions, kinematics
        changing = origin != lane
        y_target = self.road.lane_center_y(lane) + self._noise.lateral_offset(d, n)
        sin_bound = np.where(changing, d[SIN_TURN, :n], d[SIN_KEEP, :n])
        keep = self._lane_keeping
        curv = steering_curvature(d[Y, :n], d[PSI, :n], v, y_target, self.dt, keep.lateral_time_s,
                                  keep.max_lateral_speed_mps, sin_bound)  # fmt: skip
        d[ACCEL, :n], d[CURV, :n] = accel.astype(np.float32), curv.astype(np.float32)
        if actions:
            self._apply(actions)
        d[X, :n], d[Y, :n], d[PSI, :n], d[V, :n] = kinematics.step(
            x, d[Y, :n], d[PSI, :n], v, d[ACCEL, :n], d[CURV, :n], self.dt, d[COS, :n], d[SIN, :n]
        )
        np.cos(d[PSI, :n], out=d[COS, :n])
        np.sin(d[PSI, :n], out=d[SIN, :n])
        # lane changes end when the car is near its target in the new lane
        done = changing & (np.abs(d[Y, :n] - y_target) < keep.change_done_m)
        if any_controlled:
            done &= d[CONTROLLED, :n] == 0
        if done.any():
            self.stats.record_merges(origin[done], lane[done], self._lanes)
            origin[done] = lane[done]
            d[COOLDOWN, :n][done] = b.lane_change_cooldown_s
        d[COOLDOWN, :n] -= self.dt
        # 5. collisions, exits, inflow, statistics
        if self._apart():
            collisions = np.zeros((0, 2), dtype=np.int64)
        else:
            collisions = overlapping_pairs(*(d[r, :n] for r in (ID, X, Y, PSI, LENGTH, WIDTH, COS, SIN)))
        new_contacts = self._contacts.count_new(collisions, self.frame)
        if new_contacts:
            self.stats.record_collisions(new_contacts)
        self.stats.update(x_old, x, v, lane, d[CONTROLLED, :n] > 0 if any_controlled else None)
        exited_mask = x - 0.5 * d[LENGTH, :n] > self.road.length_m
        exited = _NO_IDS
        if np.count_nonzero(exited_mask):
            exited = d[ID, :n][exited_mask].astype(np.int64)
            self._compact(~exited_mask)
        self._downstream.update(self.rng, self.frame)
        self.frame += 1
        self.stats.record_step(self.n, self._backlog, len(spawned))
        return StepEvents(collisions=collisions, exited=exited, spawned=spawned)

    def _neighbours(self, any_controlled: bool) -> tuple[LaneOccupancy, np.ndarray, np.ndarray, np.ndarray]:
        """Steps 1-2 of ``step`` (numpy): the ``LaneOccupancy`` of cars ``[:n]``, the leader of every entry
        [n + E], the IDM acceleration in the own lane ``a_own`` [n] and the one each car takes ``accel`` [n]."""
        d, n = self._d, self.n
        lane, x = d[LANE, :n], d[X, :n]
        lane_i = lane.astype(np.intp)
        ramp = (lane_i >= self._lanes).nonzero()[0]
        occ = LaneOccupancy(self.road, self._courtesy_start, lane, x, d[Y, :n], d[SIN, :n], d[COS, :n],
                            d[LENGTH, :n], d[WIDTH, :n], lane_i, (lane_i != NO_LANE) if any_controlled else None)  # fmt: skip
        # IDM in the own lane; also the origin lane while changing; ramp ends (a car already merging out of a
        # ramp no longer brakes for its end, or it could stop and never finish). One IDM pass: every entry (own
        # lane and every extra lane the body overlaps) behind its leader, behind the car after it and (ramp
        # cars) behind their lane's end: leaders [3, entries].
        v0 = self._desired_speed(d[V0, :n], x, lane_i)
        extra = occ.extra_idx
        entries = np.concatenate([self._columns[:n], extra]) if len(extra) else self._columns[:n]
        m = len(entries)
        leaders = np.empty((3, m), dtype=np.intp)
        _, pos = occ.ahead(occ.keys, out=leaders[0])
        occ.after(pos, out=leaders[1])
        leaders[2] = n + AHEAD_NONE
        leaders[2, ramp] = n + 2 - self._lanes + lane_i[ramp]
        a, _ = self._follow(entries, leaders, v0[entries] if len(extra) else v0)
        a_all = np.minimum(a[0], a[1])
        a_own = a_all[:n]
        accel = a_own.copy()
        if len(extra):
            np.minimum.at(accel, extra, a_all[n:])
        if len(ramp):
            accel[ramp] = np.minimum(accel[ramp], a[2, ramp])
        return occ, leaders[0], a_own, accel

    def _neighbours_compiled(self, any_controlled: bool) -> tuple[LaneOccupancy, np.ndarray, np.ndarray, np.ndarray]:
        """``_neighbours`` in one call of the compiled kernel (``compiled.py``): the same values."""
        road = self.road
        keys, sorted_keys, sorted_index, extra, extra_lane, leader, a_own, accel = compiled.neighbours_and_following(
            self._d,
            self.n,
            bool(any_controlled),
            self._courtesy_start,
            road.lane_width_m,
            road.total_lanes,
            self._lanes,
            *sentinels(road.total_lanes),
            self._downstream.by_index,
            self.scenario.downstream.start_m,
        )
        return LaneOccupancy.from_sorted(keys, sorted_keys, sorted_index, extra, extra_lane), leader, a_own, accel

    def _apart(self) -> bool:
        """Whether the band sweep proves that no two cars touch (``collisions.BandSweep``)."""
        d, n = self._d, self.n
        if self.compiled:
            return compiled.bands_apart(d, n, self._sweep.band_m, BAND_KEY)
        return self._sweep.apart(*(d[r, :n] for r in (X, Y, SIN, HALF_LENGTH, HALF_WIDTH, HALF_DIAGONAL)))

    def _give_up(self, changing: np.ndarray, accel: np.ndarray) -> None:
        """Cars ``changing`` lanes that stand still, would not move forward (``accel`` [n]) and have barely
        left their origin lane go back to it."""
        d = self._d
        slow = d[V, changing] < 0.2
        if not slow.any():
            return
        changing = changing[slow]
        y_origin = self.road.lane_center_y(d[ORIGIN, changing])
        stuck = (accel[changing] <= 0) & (np.abs(d[Y, changing] - y_origin) < 0.6) & (d[CONTROLLED, changing] == 0)
        if stuck.any():
            give_up = changing[stuck]
            d[LANE, give_up] = d[ORIGIN, give_up]
            d[COOLDOWN, give_up] = self.scenario.behaviour.lane_change_cooldown_s
            self.stats.record_aborted(len(give_up))

    def _apply(self, actions: dict[int, tuple[float, float]]) -> None:
        """Controlled cars take their actions: ``actions`` maps ids to (accel [m/s^2], curvature [1/m])."""
        d, n = self._d, self.n
        ids = np.fromiter(actions.keys(), dtype=np.float64, count=len(actions))
        col = np.nonzero(d[ID, :n][:, None] == ids[None, :])[0]
        order = np.argsort(d[ID, col])
        vals = np.array([actions[int(i)] for i in np.sort(ids)], dtype=np.float64).reshape(-1, 2)
        col = col[order]
        d[ACCEL, col], d[CURV, col] = vals[: len(col), 0], vals[: len(col), 1]

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the per-vehicle arrays (for recording and rendering)."""
        return {
            "id": self.ids, "x": self.x.copy(), "y": self.y.copy(), "psi": self.psi.copy(), "v": self.v.copy(),
            "length": self.length.copy(), "width": self.width.copy(), "kind": self.kind, "lane": self.lane,
            "controlled": self.controlled, "accel": self.accel.copy(), "curvature": self.curvature.copy(),
        }  # fmt: skip
