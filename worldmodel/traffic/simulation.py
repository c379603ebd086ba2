"""TrafficSimulation: every vehicle as one column of a ``[F, capacity]`` float64 array, stepped with numpy.

Bots drive with IDM + MOBIL + lane keeping (``drivers.py``, the same bot as the closed-loop ``BotDriver``);
controlled cars take actions from outside. Every car moves with the same kinematics (``kinematics.step``);
bots' actions are rounded to float32 before they are applied, so recorded actions replay their trajectories
exactly. The vehicle array's rows are in ``vehicles.py``.

One ``step()`` is a fixed sequence of array operations, whatever the number of vehicles:
1. neighbours: sort lane keys (``occupancy.py``: a car is listed in every lane its body overlaps),
   ``searchsorted`` for leaders;
2. IDM accelerations (own lane and every lane the body overlaps, ramp ends, the downstream zone
   (``downstream.py``)), noise;
3. MOBIL once per ``lane_change_period_s`` for every driver at once (decisions at a lower rate than the
   dynamics; cars that change into the same gap see each other at once through the occupancy);
4. lane keeping -> curvature; controlled cars' actions; kinematics;
5. collisions (``collisions.py``), exits; inflow from the queues comes first, every ``_SPAWN_EVERY`` steps.
All randomness comes from one seeded ``np.random.Generator``: same seed, same traffic, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.traffic import kinematics
from worldmodel.traffic.collisions import ContactMemory, overlapping_pairs
from worldmodel.traffic.downstream import DownstreamSpeed
from worldmodel.traffic.drivers import (
    DriverSettings,
    best_lane,
    change_incentive,
    clip,
    end_of_lane_accel,
    follow_accel,
    lane_keeping_curvature,
    turn_limit_rad,
)
from worldmodel.traffic.inflow import Inflow, initial_traffic
from worldmodel.traffic.occupancy import NO_LANE, LaneOccupancy
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import Scenario
from worldmodel.traffic.stats import SectionStats

# the rows of the vehicle array
from worldmodel.traffic.vehicles import (  # isort: skip
    ACCEL, AMAX, BCOMF, CONTROLLED, COOLDOWN, CURV, HEADWAY, ID, KIND, LANE, LENGTH, MAX_HEADING, N_FIELDS,
    NOISE, ORIGIN, PARAMETER_ROWS, POLITE, PSI, S0, SPAWN_FRAME, THRESH, V, V0, WANDER, WIDTH, X, Y,
    draw_vehicles,
)  # fmt: skip

_WANDER_CLEARANCE_M = 0.3  # lateral wander keeps a bot's side at least this far inside its lane [m]
_CONTACT_MEMORY_S = 10.0  # a pair of cars that touches again within this time is the same collision [s]
_SPAWN_EVERY = 10  # inflow is admitted every this many steps (1 s; up to 3,600 vehicles/h/lane)


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

    def __init__(self, scenario: Scenario, seed: int = 0, capacity: int = 1024):
        self.scenario = scenario
        self.road = Road(scenario.road)
        self.dt = scenario.dt_s
        self.capacity = capacity
        b = scenario.behaviour
        self._period_steps = max(1, round(b.lane_change_period_s / self.dt))
        # the bots' settings shared by all drivers; the per-driver ones are columns (``_settings``)
        self._shared = dict(right_bias_mps2=b.right_bias_mps2, safe_decel_mps2=b.safe_decel_mps2,
                            min_change_gap_m=b.min_change_gap_m, follower_horizon_s=0.0,
                            change_period_s=b.lane_change_period_s, change_cooldown_s=b.lane_change_cooldown_s,
                            lateral_time_s=b.lateral_time_s, max_lateral_speed_mps=b.max_lateral_speed_mps)  # fmt: skip
        self._lane_keeping = DriverSettings(**self._shared)
        self._inflow = Inflow(scenario, self.road, self.dt)
        self._lane_end = self.road.ramp_end_m(np.arange(self.road.total_lanes))  # [lanes_total], inf mainline
        self.reset(seed)

    # ----------------------------------------------------------------------------------------- state
    def reset(self, seed: int | None = None) -> None:
        """Start again from an empty (or initially filled) road with a fresh generator."""
        self.rng = np.random.default_rng(seed)
        self._d = np.zeros((N_FIELDS, self.capacity))
        self.n = 0
        self.frame = 0
        self._next_id = 0
        self._inflow.reset(self.rng)
        self._downstream = DownstreamSpeed(self.scenario.downstream, self.road.total_lanes, self.dt, self.rng)
        self.stats = SectionStats(self.road, self.dt)
        self._contacts = ContactMemory(round(_CONTACT_MEMORY_S / self.dt))
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
        if self.n + k > self.capacity:
            grown = np.zeros((N_FIELDS, max(2 * self.capacity, self.n + k)))
            grown[:, : self.n] = self._d[:, : self.n]
            self._d, self.capacity = grown, grown.shape[1]
        ids = np.arange(self._next_id, self._next_id + k)
        cols[ID] = ids
        cols[SPAWN_FRAME] = self.frame
        self._d[:, self.n : self.n + k] = cols
        self.n += k
        self._next_id += k
        return ids

    def _spawn(self) -> np.ndarray:
        """Admit queued vehicles where the entry has a safe gap (called before the step's neighbour search)."""
        new, arrivals = self._inflow.admit(self.rng, self._d, self.n, _SPAWN_EVERY)
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

    # ---------------------------------------------------------------------------------- neighbours
    def _settings(self, cols: np.ndarray) -> DriverSettings:
        """The bot settings of cars ``cols``: their own IDM and MOBIL parameters, the scenario's behaviour."""
        d = self._d
        return DriverSettings(time_headway_s=d[HEADWAY, cols], min_gap_m=d[S0, cols], max_accel_mps2=d[AMAX, cols],
                              comfort_decel_mps2=d[BCOMF, cols], politeness=d[POLITE, cols],
                              change_threshold_mps2=d[THRESH, cols], **self._shared)  # fmt: skip

    def _gap(self, f: np.ndarray, lead: np.ndarray, has_lead: np.ndarray) -> np.ndarray:
        """Bumper gap [m] from cars ``f`` to ``lead`` (inf where not ``has_lead``)."""
        d = self._d
        return np.where(has_lead, d[X, lead] - d[X, f] - 0.5 * (d[LENGTH, lead] + d[LENGTH, f]), np.inf)

    def _idm_behind(
        self, f: np.ndarray, lead: np.ndarray, has_lead: np.ndarray, v0: np.ndarray,
        second: np.ndarray | None = None, has_second: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """IDM acceleration of cars ``f`` following ``lead`` (free road where not ``has_lead``) and, if given,
        the ``second`` car ahead."""
        d = self._d
        dv = np.where(has_lead, d[V, f] - d[V, lead], 0.0)
        if second is None:
            return follow_accel(self._settings(f), d[V, f], v0, self._gap(f, lead, has_lead), dv)
        dv2 = np.where(has_second, d[V, f] - d[V, second], 0.0)
        return follow_accel(self._settings(f), d[V, f], v0, self._gap(f, lead, has_lead), dv,
                            self._gap(f, second, has_second), dv2)  # fmt: skip

    # ------------------------------------------------------------------------------------ dynamics
    def _desired_speed(self, cols: np.ndarray, lane: np.ndarray) -> np.ndarray:
        """Desired speed of cars ``cols`` driving in ``lane``: their own, capped in the downstream zone."""
        d = self._d
        in_zone = d[X, cols] > self.scenario.downstream.start_m
        lane_safe = clip(lane, 0, self.road.total_lanes - 1).astype(np.int64)
        return np.where(in_zone, np.minimum(d[V0, cols], self._downstream.speed[lane_safe]), d[V0, cols])

    def _end_of_lane_accel(self, cols: np.ndarray, lane: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """IDM acceleration toward the end of a ramp lane (a standing obstacle); +inf on mainline lanes."""
        d = self._d
        end = self._lane_end[clip(lane, 0, self.road.total_lanes - 1).astype(np.int64)]
        a = end_of_lane_accel(self._settings(cols), d[V, cols], v0, end - d[X, cols] - 0.5 * d[LENGTH, cols])
        return np.where(np.isfinite(end), a, np.inf)

    def _mobil(self, a_own: np.ndarray, lead: np.ndarray, has_lead: np.ndarray) -> None:
        """Lane-change decisions for the drivers whose turn it is this step (``drivers.change_incentive``)."""
        d, road, occ = self._d, self.road, self._occupancy
        n = self.n
        if self.frame % self._period_steps:
            return
        due = (d[ORIGIN, :n] == d[LANE, :n]) & (d[COOLDOWN, :n] <= 0) & (d[CONTROLLED, :n] == 0)
        c = np.nonzero(due)[0]
        if len(c) == 0:
            return
        lane, x, every = d[LANE, c], d[X, c], np.ones(len(c), bool)
        on_ramp = lane >= road.lanes
        # old follower (in the own lane) and how it fares before / after c leaves
        of, has_of = occ.neighbour(lane, x, ahead=False)
        v0_of = self._desired_speed(of, lane)
        old_follower = (np.where(has_of, self._idm_behind(of, c, every, v0_of), 0.0),
                        np.where(has_of, self._idm_behind(of, lead[c], has_lead[c], v0_of), 0.0))  # fmt: skip
        settings, options = self._settings(c), []
        for direction in (-1.0, 1.0):
            target = lane + direction
            allowed = (target >= 0) & (target < road.lanes) & (~on_ramp | (direction < 0))  # never into a ramp
            if not allowed.any():
                continue
            nl, has_nl = occ.neighbour(target, x, ahead=True)
            nf, has_nf = occ.neighbour(target, x, ahead=False)
            v0_nf = self._desired_speed(nf, target)
            new_follower = (np.where(has_nf, self._idm_behind(nf, nl, has_nl, v0_nf), 0.0),
                            np.where(has_nf, self._idm_behind(nf, c, every, v0_nf), 0.0))  # fmt: skip
            a_new = self._idm_behind(c, nl, has_nl, self._desired_speed(c, target))
            gain = change_incentive(settings, direction, on_ramp, d[V, c], a_own[c], a_new, self._gap(c, nl, has_nl),
                                    self._gap(nf, c, has_nf), 0.0, new_follower, old_follower)  # fmt: skip
            options.append((target, np.where(allowed, gain, -np.inf)))
        target = best_lane(lane, options)
        change = target != lane
        if change.any():
            cc = c[change]
            d[ORIGIN, cc] = d[LANE, cc]
            d[LANE, cc] = target[change]
            self.stats.record_lane_changes(d[X, cc])

    def _update_controlled_lanes(self) -> None:
        """A controlled car's lane is the one under its centre (or off the road); the lanes its body also
        reaches come from its footprint in the ``LaneOccupancy``, as for every car."""
        ctrl = np.nonzero(self._col(CONTROLLED) > 0)[0]
        if len(ctrl) == 0:
            return
        d = self._d
        lane = self.road.lane_at(d[X, ctrl], d[Y, ctrl])
        d[LANE, ctrl] = d[ORIGIN, ctrl] = np.where(lane >= 0, lane, NO_LANE)

    def step(self, actions: dict[int, tuple[float, float]] | None = None) -> StepEvents:
        """Advance one ``dt``. ``actions`` maps controlled vehicle ids to (accel [m/s^2], curvature [1/m])."""
        spawned = self._spawn() if self.frame % _SPAWN_EVERY == 0 else np.zeros(0, dtype=np.int64)
        d, n, b = self._d, self.n, self.scenario.behaviour
        self._update_controlled_lanes()
        occ = self._occupancy = LaneOccupancy(
            self.road, self._lane_end, *(d[r, :n] for r in (LANE, X, Y, PSI, LENGTH, WIDTH))
        )
        cols = np.arange(n)
        lane, origin = d[LANE, :n], d[ORIGIN, :n]
        x_old = d[X, :n].copy()
        # 2. longitudinal: IDM in the own lane; also the origin lane while changing; ramp ends (a car
        #    already merging out of a ramp no longer brakes for its end, or it could stop and never finish).
        v0 = self._desired_speed(cols, lane)
        # one neighbour search and one IDM evaluation for the own lane and every extra lane the body overlaps,
        # behind the leader and the car after it
        extra = occ.extra_idx
        q = np.concatenate([cols, extra])
        lanes_q, v0_q = np.concatenate([lane, occ.extra_lane]), np.concatenate([v0, v0[extra]])
        lead_all, has_all = occ.neighbour(lanes_q, d[X, q], ahead=True)
        second, has_second = occ.neighbour(lanes_q, np.where(has_all, d[X, lead_all], np.inf), ahead=True)
        a_all = self._idm_behind(q, lead_all, has_all, v0_q, second, has_second & has_all)
        lead, has_lead, a_own = lead_all[:n], has_all[:n], a_all[:n]
        accel = a_own.copy()
        if len(extra):
            np.minimum.at(accel, extra, a_all[n:])
        on_ramp = np.nonzero(lane >= self.road.lanes)[0]
        if len(on_ramp):
            accel[on_ramp] = np.minimum(accel[on_ramp], self._end_of_lane_accel(on_ramp, lane[on_ramp], v0[on_ramp]))
        changing = np.nonzero(origin != lane)[0]
        # noise (Ornstein-Uhlenbeck per driver), then physical limits; speeds stay >= 0
        nz = self.scenario.noise
        if nz.accel_std_mps2 > 0:
            decay = np.exp(-self.dt / nz.accel_time_constant_s)
            shock = nz.accel_std_mps2 * np.sqrt(1 - decay**2) * self.rng.standard_normal(n)
            d[NOISE, :n] = decay * d[NOISE, :n] + shock
            accel = accel + d[NOISE, :n]
        # a car blocked at a standstill early in its lane change gives up (it cannot move sideways without
        # moving forward, and waiting in two lanes at once can lock a queue)
        if len(changing):
            y_origin = self.road.lane_center_y(origin[changing])
            stuck = (d[V, changing] < 0.2) & (accel[changing] <= 0) & (np.abs(d[Y, changing] - y_origin) < 0.6)
            stuck &= d[CONTROLLED, changing] == 0
            if stuck.any():
                give_up = changing[stuck]
                d[LANE, give_up] = d[ORIGIN, give_up]
                d[COOLDOWN, give_up] = b.lane_change_cooldown_s
                self.stats.record_aborted(len(give_up))
        accel = clip(accel, -b.max_decel_mps2, d[AMAX, :n] + 0.5)
        accel = np.maximum(accel, -d[V, :n] / self.dt)
        # 3. lane changes
        self._mobil(a_own, lead, has_lead)
        # 4. lane keeping (toward the lane centre + the driver's wander), actions, kinematics
        y_target = self.road.lane_center_y(d[LANE, :n]) + self._lateral_wander()
        curv = lane_keeping_curvature(self._lane_keeping, d[Y, :n], d[PSI, :n], d[V, :n], y_target, d[LENGTH, :n],
                                      origin != lane, self.dt, d[MAX_HEADING, :n])  # fmt: skip
        accel = accel.astype(np.float32).astype(np.float64)
        curv = curv.astype(np.float32).astype(np.float64)
        if actions:
            ids = np.fromiter(actions.keys(), dtype=np.float64, count=len(actions))
            col = np.nonzero(d[ID, :n][:, None] == ids[None, :])[0]
            order = np.argsort(d[ID, col])
            vals = np.array([actions[int(i)] for i in np.sort(ids)], dtype=np.float64).reshape(-1, 2)
            col = col[order]
            accel[col], curv[col] = vals[: len(col), 0], vals[: len(col), 1]
        d[ACCEL, :n], d[CURV, :n] = accel, curv
        d[X, :n], d[Y, :n], d[PSI, :n], d[V, :n] = kinematics.step(
            d[X, :n], d[Y, :n], d[PSI, :n], d[V, :n], accel, curv, self.dt
        )
        # lane changes end when the car is near its target in the new lane
        near = np.abs(d[Y, :n] - y_target) < self._lane_keeping.change_done_m
        done = (origin != lane) & near & (d[CONTROLLED, :n] == 0)
        if done.any():
            self.stats.record_merges(d[ORIGIN, :n][done], d[LANE, :n][done], self.road.lanes)
            d[ORIGIN, :n][done] = d[LANE, :n][done]
            d[COOLDOWN, :n][done] = b.lane_change_cooldown_s
        d[COOLDOWN, :n] -= self.dt
        # 5. collisions, exits, inflow, statistics
        collisions = overlapping_pairs(*(d[r, :n] for r in (ID, X, Y, PSI, LENGTH, WIDTH)))
        new_contacts = self._contacts.count_new(collisions, self.frame)
        if new_contacts:
            self.stats.record_collisions(new_contacts)
        self.stats.update(x_old, d[X, :n], d[V, :n], d[LANE, :n], d[CONTROLLED, :n] > 0)
        exited_mask = d[X, :n] - 0.5 * d[LENGTH, :n] > self.road.length_m
        exited = d[ID, :n][exited_mask].astype(np.int64)
        if len(exited):
            self._compact(~exited_mask)
        self._downstream.update(self.rng, self.frame)
        self.frame += 1
        self.stats.record_step(self.n, int(self.queue.sum()), len(spawned))
        return StepEvents(collisions=collisions, exited=exited, spawned=spawned)

    def _lateral_wander(self) -> np.ndarray:
        """Each bot's offset [m] from its lane centre, an Ornstein-Uhlenbeck process per driver
        (``noise.lateral_std_m``, ``noise.lateral_time_constant_s``) advanced one step, bounded so that the
        car's side stays ``_WANDER_CLEARANCE_M`` inside the lane: human drivers do not hold the centre line."""
        d, n, nz = self._d, self.n, self.scenario.noise
        if nz.lateral_std_m <= 0:
            return np.zeros(n)
        decay = np.exp(-self.dt / nz.lateral_time_constant_s)
        shock = nz.lateral_std_m * np.sqrt(1 - decay**2) * self.rng.standard_normal(n)
        d[WANDER, :n] = decay * d[WANDER, :n] + shock
        bound = np.maximum(0.5 * (self.road.lane_width_m - d[WIDTH, :n]) - _WANDER_CLEARANCE_M, 0.0)
        return clip(d[WANDER, :n], -bound, bound)

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the per-vehicle arrays (for recording and rendering)."""
        return {
            "id": self.ids, "x": self.x.copy(), "y": self.y.copy(), "psi": self.psi.copy(), "v": self.v.copy(),
            "length": self.length.copy(), "width": self.width.copy(), "kind": self.kind, "lane": self.lane,
            "controlled": self.controlled, "accel": self.accel.copy(), "curvature": self.curvature.copy(),
        }  # fmt: skip
