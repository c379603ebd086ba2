"""TrafficSimulation: every vehicle as one column of a ``[F, capacity]`` float64 array, stepped with numpy.

Bots drive with IDM + MOBIL (``drivers.py``) through a lateral controller; controlled cars take actions
from outside. Every car moves with the same kinematics (``kinematics.step``); bots' actions are rounded to
float32 before they are applied, so recorded actions replay their trajectories exactly.

One ``step()`` is a fixed sequence of array operations, whatever the number of vehicles:
1. neighbours: sort lane keys (a car is listed in every lane its body overlaps), ``searchsorted`` for leaders;
2. IDM accelerations (own lane and every lane the body overlaps, ramp ends, the downstream zone), noise;
3. MOBIL once per ``lane_change_period_s`` for every driver at once (decisions at a lower rate than the
   dynamics; cars that change into the same gap see each other at once through the occupancy);
4. lateral controller -> curvature; controlled cars' actions; kinematics;
5. collisions (exact oriented boxes after an exact broad phase), exits; inflow from the queues comes
   first, every ``_SPAWN_EVERY`` steps.
All randomness comes from one seeded ``np.random.Generator``: same seed, same traffic, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.traffic import kinematics
from worldmodel.traffic.drivers import clip, idm_accel, lateral_curvature, mobil_incentive
from worldmodel.traffic.geometry import boxes_overlap, candidate_pairs
from worldmodel.traffic.road import Road
from worldmodel.traffic.scenario import Scenario
from worldmodel.traffic.stats import SectionStats

# Rows of the vehicle array (one column per vehicle).
(ID, X, Y, PSI, V, LENGTH, WIDTH, KIND, LANE, ORIGIN, V0, HEADWAY, S0, AMAX, BCOMF, POLITE, THRESH,
 NOISE, COOLDOWN, CONTROLLED, ACCEL, CURV, SPAWN_FRAME, MAX_HEADING, WANDER) = range(25)  # fmt: skip
N_FIELDS = 25
_LANE_KEY = 1.0e5  # lane * _LANE_KEY + x orders cars by lane, then position (x stays far below this)
_NO_LANE = -10  # lane of a controlled car off the road: a key nobody queries
_MIN_CHANGE_SPEED_MPS = 1.0  # no discretionary lane change below this speed [m/s]
_MAX_SWING_M = 0.5  # a bot turns at most so far that its ends swing this much sideways [m]
_WANDER_CLEARANCE_M = 0.3  # lateral wander keeps a bot's side at least this far inside its lane [m]
_KEEP_SWING_M = 0.25  # a bot keeping its lane turns at most so far that its ends swing this much (< the clearance)
_CONTACT_MEMORY_S = 10.0  # a pair of cars that touches again within this time is the same collision [s]
_COURTESY_ZONE_M = 40.0  # mainline cars yield to ramp cars within this distance of the ramp's end [m]
_SPAWN_EVERY = 10  # inflow is admitted every this many steps (1 s; up to 3,600 vehicles/h/lane)
_DOWNSTREAM_EVERY = 5  # the downstream speed process is updated every this many steps


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
        self._kinds = scenario.vehicles
        shares = np.array([k.share for k in self._kinds], dtype=np.float64)
        self._kind_p = shares / shares.sum()
        b = scenario.behaviour
        self._period_steps = max(1, round(b.lane_change_period_s / self.dt))
        n_ramps = len(scenario.road.ramps)
        # Entries: one per mainline lane (at x = 0), one per ramp (at its start).
        self._entry_lane = np.concatenate([np.arange(self.road.lanes), self.road.lanes + np.arange(n_ramps)])
        self._entry_x = np.concatenate([np.zeros(self.road.lanes), [r.start_m for r in scenario.road.ramps]])
        rate_per_h = np.concatenate(
            [np.full(self.road.lanes, scenario.demand.mainline_veh_per_h_per_lane),
             [r.demand_veh_per_h for r in scenario.road.ramps]]
        )  # fmt: skip
        self._entry_rate = rate_per_h / 3600.0 * self.dt  # expected arrivals per step
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
        self.queue = np.zeros(len(self._entry_lane), dtype=np.int64)
        self._pending = self._draw_vehicles(len(self._entry_lane))  # next vehicle of each entry [F, entries]
        ds = self.scenario.downstream
        self._ds_state = self.rng.standard_normal(1 + self.road.total_lanes)  # common + per lane, unit OU
        self._ds_speed = np.full(self.road.total_lanes, ds.speed_mean_mps)
        self._update_downstream(first=True)
        self.stats = SectionStats(self.road, self.dt)
        self._contacts: dict[tuple[int, int], int] = {}  # pair of ids -> last frame in contact
        self._place_initial_traffic()

    def _col(self, row: int) -> np.ndarray:
        return self._d[row, : self.n]

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
        return [k.kind for k in self._kinds]

    def index_of(self, vehicle_id: int) -> int:
        """Column of ``vehicle_id`` (raises KeyError if it is not on the road)."""
        hits = np.nonzero(self._d[ID, : self.n] == vehicle_id)[0]
        if len(hits) == 0:
            raise KeyError(f"vehicle {vehicle_id} is not on the road")
        return int(hits[0])

    # ------------------------------------------------------------------------------------ spawning
    def _draw_vehicles(self, k: int) -> np.ndarray:
        """Attributes of ``k`` new bots ``[F, k]`` (position, speed and id filled at insertion)."""
        rng, dr, c = self.rng, self.scenario.drivers, np.zeros((N_FIELDS, k))
        kind = rng.choice(len(self._kinds), size=k, p=self._kind_p)
        c[KIND] = kind
        for i, vk in enumerate(self._kinds):
            sel = kind == i
            c[LENGTH, sel] = vk.length_m.sample(rng, int(sel.sum()))
            c[WIDTH, sel] = vk.width_m.sample(rng, int(sel.sum()))
        accel_scale = np.array([vk.max_accel_scale for vk in self._kinds])[kind]
        speed_scale = np.array([vk.desired_speed_scale for vk in self._kinds])[kind]
        c[V0] = dr.desired_speed_factor.sample(rng, k) * self.scenario.road.speed_limit_mps * speed_scale
        c[HEADWAY] = dr.time_headway_s.sample(rng, k)
        c[S0] = dr.min_gap_m.sample(rng, k)
        c[AMAX] = dr.max_accel_mps2.sample(rng, k) * accel_scale
        c[BCOMF] = dr.comfort_decel_mps2.sample(rng, k)
        c[POLITE] = dr.politeness.sample(rng, k)
        c[THRESH] = dr.change_threshold_mps2.sample(rng, k)
        c[NOISE] = rng.standard_normal(k) * self.scenario.noise.accel_std_mps2
        c[WANDER] = rng.standard_normal(k) * self.scenario.noise.lateral_std_m
        self._set_max_heading(c)
        return c

    @staticmethod
    def _set_max_heading(c: np.ndarray) -> None:
        """Long vehicles turn less, so their ends do not swing into the next lane."""
        c[MAX_HEADING] = np.minimum(0.25, np.arcsin(np.minimum(1.0, _MAX_SWING_M / (0.5 * c[LENGTH]))))

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

    def _place_initial_traffic(self) -> None:
        """Fill the mainline at the initial density: cars about ``1 / density`` apart, moved back where a long
        vehicle would not fit (bumper to bumper at least the car's standstill gap), each at the IDM speed that
        suits its gap to the car ahead."""
        density = self.scenario.demand.initial_density_veh_per_km_per_lane / 1000.0
        if density <= 0:
            return
        spacing = 1.0 / density
        lanes, starts = [], []
        for lane in range(self.road.lanes):
            pos = np.arange(spacing * self.rng.uniform(0.2, 1.0), self.road.length_m - 10.0, spacing)
            lanes.append(np.full(len(pos), lane))
            starts.append(pos)
        lane, x = np.concatenate(lanes), np.concatenate(starts)
        c = self._draw_vehicles(len(x))
        gap = np.full(len(x), spacing) - c[LENGTH]  # bumper to bumper; the first car of a lane: nobody ahead
        for k in np.unique(lane):
            cars = np.flatnonzero(lane == k)  # in increasing x
            half = 0.5 * c[LENGTH, cars]
            for a, b in zip(cars[:-1], cars[1:], strict=True):  # push each car ahead clear of the one behind
                x[b] = max(x[b], x[a] + 0.5 * (c[LENGTH, a] + c[LENGTH, b]) + c[S0, a] + 1.0)
            gap[cars[:-1]] = np.diff(x[cars]) - (half[:-1] + half[1:])
        keep = x < self.road.length_m - 10.0
        c = c[:, keep]
        c[X], c[LANE], c[ORIGIN] = x[keep], lane[keep], lane[keep]
        c[Y] = self.road.lane_center_y(lane[keep])
        c[V] = clip((gap[keep] - c[S0]) / c[HEADWAY], 0.0, c[V0])
        self._append(c)

    def _spawn(self) -> np.ndarray:
        """Admit queued vehicles where the entry has a safe gap (called before the step's neighbour search)."""
        arrivals = self.rng.poisson(self._entry_rate * _SPAWN_EVERY)
        self.queue += arrivals
        self.stats.record_arrivals(int(arrivals.sum()))
        waiting = np.nonzero(self.queue > 0)[0]
        if len(waiting) == 0:
            return np.zeros(0, dtype=np.int64)
        d, n = self._d, self.n
        cand = self._pending[:, waiting]
        lane = self._entry_lane[waiting].astype(np.float64)
        x_new = self._entry_x[waiting] + 0.5 * cand[LENGTH]
        # the nearest car ahead of the entry point in the entry lane (or still partly in it): [entries, n]
        in_lane = (d[LANE, :n][None, :] == lane[:, None]) | (d[ORIGIN, :n][None, :] == lane[:, None])
        rear = d[X, :n] - 0.5 * d[LENGTH, :n]
        ahead = in_lane & (d[X, :n][None, :] >= self._entry_x[waiting][:, None])
        rear_ahead = np.where(ahead, rear[None, :], np.inf)
        lead = np.argmin(rear_ahead, axis=1) if n else np.zeros(len(waiting), dtype=np.int64)
        gap = (
            (rear_ahead[np.arange(len(waiting)), lead] if n else np.full(len(waiting), np.inf))
            - x_new
            - 0.5 * cand[LENGTH]
        )
        behind = in_lane & (d[X, :n][None, :] < self._entry_x[waiting][:, None])
        front_behind = np.where(behind, (d[X, :n] + 0.5 * d[LENGTH, :n])[None, :], -np.inf)
        rear_gap = x_new - 0.5 * cand[LENGTH] - (front_behind.max(axis=1) if n else -np.inf)
        v_lead = np.where(np.isfinite(gap), d[V, lead] if n else np.inf, np.inf)
        v_ins = np.minimum(np.minimum(cand[V0], v_lead + 1.0), np.maximum(gap - cand[S0], 0.0) / cand[HEADWAY])
        ok = (gap >= cand[S0] + 1.0) & (rear_gap >= 1.0)
        if not ok.any():
            return np.zeros(0, dtype=np.int64)
        entries = waiting[ok]
        new = cand[:, ok]
        new[X], new[V], new[LANE], new[ORIGIN] = x_new[ok], v_ins[ok], lane[ok], lane[ok]
        new[Y] = self.road.lane_center_y(lane[ok])
        ids = self._append(new.copy())
        self.queue[entries] -= 1
        self._pending[:, entries] = self._draw_vehicles(len(entries))
        return ids

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
        c = self._draw_vehicles(len(x))
        c[X], c[LANE], c[ORIGIN], c[V] = x, lane, lane, v
        c[Y] = self.road.lane_center_y(lane)
        c[NOISE] = c[WANDER] = 0.0
        if length is not None:
            c[LENGTH] = length
            self._set_max_heading(c)
        rows = {"v0": V0, "headway": HEADWAY, "s0": S0, "amax": AMAX, "bcomf": BCOMF, "polite": POLITE,
                "thresh": THRESH, "width": WIDTH}  # fmt: skip
        for name, value in params.items():
            c[rows[name]] = value
        return self._append(c)

    def add_controlled(self, x: float, y: float, psi: float, v: float, length: float, width: float) -> int:
        """Put a controlled car on the road; it moves only by the actions given to ``step``. Returns its id."""
        c = self._draw_vehicles(1)
        c[X], c[Y], c[PSI], c[V], c[LENGTH], c[WIDTH], c[CONTROLLED] = x, y, psi, v, length, width, 1
        lane = self.road.lane_at(np.array([x]), np.array([y]))
        c[LANE] = c[ORIGIN] = lane if lane >= 0 else _NO_LANE
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
    def _build_occupancy(self) -> None:
        """Sorted lane keys of all cars. A car occupies its lane (during a lane change: its target lane) and
        every lane its body still reaches (the lane it is leaving; a long truck at an angle overlaps its
        neighbour): those extra entries are kept in ``_extra_idx`` / ``_extra_lane`` so the car also follows
        the leaders there. Once its body has left a lane it no longer waits for that lane's traffic."""
        d, n = self._d, self.n
        lane, x = d[LANE, :n], d[X, :n]
        reach = 0.5 * (d[LENGTH, :n] * np.abs(np.sin(d[PSI, :n])) + d[WIDTH, :n] * np.cos(d[PSI, :n]))
        top = self.road.total_lanes - 1
        lo = clip(np.floor((d[Y, :n] - reach) / self.road.lane_width_m), 0, top)
        hi = clip(np.floor((d[Y, :n] + reach) / self.road.lane_width_m), 0, top)
        on_road = lane != _NO_LANE
        extra_idx, extra_lane = [], []
        for other, also_new in ((lo, True), (hi, lo != hi)):
            sel = np.nonzero((other != lane) & also_new & on_road)[0]
            extra_idx.append(sel)
            extra_lane.append(other[sel])
        # courtesy (zipper merge): a ramp car near the end of its lane is also listed in the mainline lane
        # beside it, so the cars there let it in instead of streaming past a car that cannot move sideways
        if self.road.ramps:
            end = self._lane_end[clip(lane, 0, top).astype(np.int64)]
            waiting = np.nonzero((lane >= self.road.lanes) & (x > end - _COURTESY_ZONE_M) & (lo >= self.road.lanes))[0]
            extra_idx.append(waiting)
            extra_lane.append(lane[waiting] - 1)
        self._extra_idx = np.concatenate(extra_idx)
        self._extra_lane = np.concatenate(extra_lane)
        keys = np.concatenate([lane * _LANE_KEY + x, self._extra_lane * _LANE_KEY + x[self._extra_idx]])
        idx = np.concatenate([np.arange(n), self._extra_idx])
        order = np.argsort(keys, kind="stable")
        self._occ_keys, self._occ_idx = keys[order], idx[order]
        self._occ_lane = np.concatenate([lane, self._extra_lane])[order]

    def _neighbour(self, lane: np.ndarray, x: np.ndarray, ahead: bool) -> tuple[np.ndarray, np.ndarray]:
        """Nearest car strictly ahead (or at/behind, excluding an exact key match ahead) in ``lane`` of
        position ``x``: (column index, found). Uses the occupancy built this step."""
        keys, idx = self._occ_keys, self._occ_idx
        m = len(keys)
        q = lane * _LANE_KEY + x
        if ahead:
            pos = np.searchsorted(keys, q, side="right")
        else:
            pos = np.searchsorted(keys, q, side="left") - 1
        if m == 0:
            return np.zeros(len(q), dtype=np.int64), np.zeros(len(q), dtype=bool)
        safe = pos % m  # -1 -> m - 1 and m -> 0; both rejected below unless in the same lane by chance
        found = (self._occ_lane[safe] == lane) & (pos >= 0) & (pos < m)
        return idx[safe], found

    def _idm_behind(self, f: np.ndarray, lead: np.ndarray, has_lead: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """IDM acceleration of cars ``f`` following ``lead`` (free road where not ``has_lead``)."""
        d = self._d
        gap = np.where(has_lead, d[X, lead] - d[X, f] - 0.5 * (d[LENGTH, lead] + d[LENGTH, f]), np.inf)
        dv = np.where(has_lead, d[V, f] - d[V, lead], 0.0)
        return idm_accel(d[V, f], v0, gap, dv, d[HEADWAY, f], d[S0, f], d[AMAX, f], d[BCOMF, f])

    # ------------------------------------------------------------------------------------ dynamics
    def _update_downstream(self, first: bool = False) -> None:
        ds = self.scenario.downstream
        if ds.speed_std_mps == 0:
            return
        if not first and self.frame % _DOWNSTREAM_EVERY:
            return
        decay = np.exp(-self.dt * _DOWNSTREAM_EVERY / ds.time_constant_s)
        if not first:
            self._ds_state = decay * self._ds_state + np.sqrt(1 - decay**2) * self.rng.standard_normal(
                len(self._ds_state)
            )
        c = ds.lane_correlation
        z = np.sqrt(c) * self._ds_state[0] + np.sqrt(1 - c) * self._ds_state[1:]
        self._ds_speed = np.maximum(ds.speed_mean_mps + ds.speed_std_mps * z, ds.speed_min_mps)

    def _desired_speed(self, cols: np.ndarray, lane: np.ndarray) -> np.ndarray:
        """Desired speed of cars ``cols`` driving in ``lane``: their own, capped in the downstream zone."""
        d = self._d
        in_zone = d[X, cols] > self.scenario.downstream.start_m
        lane_safe = clip(lane, 0, self.road.total_lanes - 1).astype(np.int64)
        return np.where(in_zone, np.minimum(d[V0, cols], self._ds_speed[lane_safe]), d[V0, cols])

    def _end_of_lane_accel(self, cols: np.ndarray, lane: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """IDM acceleration toward the end of a ramp lane (a standing obstacle); +inf on mainline lanes."""
        d = self._d
        lane_safe = clip(lane, 0, self.road.total_lanes - 1).astype(np.int64)
        end = self._lane_end[lane_safe]
        gap = end - d[X, cols] - 0.5 * d[LENGTH, cols]
        a = idm_accel(d[V, cols], v0, gap, d[V, cols], d[HEADWAY, cols], d[S0, cols], d[AMAX, cols], d[BCOMF, cols])
        return np.where(np.isfinite(end), a, np.inf)

    def _mobil(self, a_own: np.ndarray, lead: np.ndarray, has_lead: np.ndarray) -> None:
        """Lane-change decisions for the drivers whose turn it is this step."""
        d, b, road = self._d, self.scenario.behaviour, self.road
        n = self.n
        if self.frame % self._period_steps:
            return
        due = (d[ORIGIN, :n] == d[LANE, :n]) & (d[COOLDOWN, :n] <= 0) & (d[CONTROLLED, :n] == 0)
        c = np.nonzero(due)[0]
        if len(c) == 0:
            return
        lane = d[LANE, c]
        x = d[X, c]
        on_ramp = lane >= road.lanes
        # Old follower (in the own lane) and how it fares before / after c leaves.
        of, has_of = self._neighbour(lane, x, ahead=False)
        v0_of = self._desired_speed(of, lane)
        a_of_old = np.where(has_of, self._idm_behind(of, c, np.ones(len(c), bool), v0_of), 0.0)
        a_of_new = np.where(has_of, self._idm_behind(of, lead[c], has_lead[c], v0_of), 0.0)
        best_gain = np.full(len(c), -np.inf)
        best_target = lane.copy()
        for direction in (-1.0, 1.0):
            target = lane + direction
            allowed = (target >= 0) & (target < road.lanes)  # never into a ramp lane
            allowed &= ~on_ramp | (direction < 0)
            if not allowed.any():
                continue
            nl, has_nl = self._neighbour(target, x, ahead=True)
            nf, has_nf = self._neighbour(target, x, ahead=False)
            front_gap = np.where(has_nl, d[X, nl] - x - 0.5 * (d[LENGTH, nl] + d[LENGTH, c]), np.inf)
            rear_gap = np.where(has_nf, x - d[X, nf] - 0.5 * (d[LENGTH, nf] + d[LENGTH, c]), np.inf)
            v0_c = self._desired_speed(c, target)
            a_c_new = self._idm_behind(c, nl, has_nl, v0_c)
            v0_nf = self._desired_speed(nf, target)
            a_nf_new = np.where(has_nf, self._idm_behind(nf, c, np.ones(len(c), bool), v0_nf), 0.0)
            a_nf_old = np.where(has_nf, self._idm_behind(nf, nl, has_nl, v0_nf), 0.0)
            safe = (front_gap >= b.min_change_gap_m) & (rear_gap >= b.min_change_gap_m)
            safe &= a_nf_new >= -b.safe_decel_mps2
            safe &= a_c_new >= -b.safe_decel_mps2
            bias = np.where(on_ramp, 10.0, direction * b.right_bias_mps2)
            politeness = np.where(on_ramp, 0.0, d[POLITE, c])
            # accelerations compared within the comfortable range: a car about to brake hard for its leader
            # does not see a huge "gain" in every other lane
            low, high = -d[BCOMF, c], d[AMAX, c]
            own_gain = clip(a_c_new, low, high) - clip(a_own[c], low, high)
            gain = mobil_incentive(own_gain, a_nf_new - a_nf_old, a_of_new - a_of_old, politeness, bias)
            # discretionary changes need some speed: a car cannot move sideways without moving forward
            moving = on_ramp | (d[V, c] > _MIN_CHANGE_SPEED_MPS)
            take = allowed & safe & moving & (gain > d[THRESH, c]) & (gain > best_gain)
            best_gain = np.where(take, gain, best_gain)
            best_target = np.where(take, target, best_target)
        change = best_target != lane
        if change.any():
            cc = c[change]
            d[ORIGIN, cc] = d[LANE, cc]
            d[LANE, cc] = best_target[change]
            self.stats.record_lane_changes(d[X, cc])

    def _update_controlled_lanes(self) -> None:
        """A controlled car's lane is the one under its centre (or off the road); the lanes its body also
        reaches come from the footprint in ``_build_occupancy``, as for every car."""
        ctrl = np.nonzero(self._col(CONTROLLED) > 0)[0]
        if len(ctrl) == 0:
            return
        d = self._d
        lane = self.road.lane_at(d[X, ctrl], d[Y, ctrl])
        d[LANE, ctrl] = d[ORIGIN, ctrl] = np.where(lane >= 0, lane, _NO_LANE)

    def step(self, actions: dict[int, tuple[float, float]] | None = None) -> StepEvents:
        """Advance one ``dt``. ``actions`` maps controlled vehicle ids to (accel [m/s^2], curvature [1/m])."""
        spawned = self._spawn() if self.frame % _SPAWN_EVERY == 0 else np.zeros(0, dtype=np.int64)
        d, n, b = self._d, self.n, self.scenario.behaviour
        self._update_controlled_lanes()
        self._build_occupancy()
        cols = np.arange(n)
        lane, origin = d[LANE, :n], d[ORIGIN, :n]
        x_old = d[X, :n].copy()
        # 2. longitudinal: IDM in the own lane; also the origin lane while changing; ramp ends (a car
        #    already merging out of a ramp no longer brakes for its end, or it could stop and never finish).
        v0 = self._desired_speed(cols, lane)
        # one neighbour search and one IDM evaluation for the own lane and every extra lane the body overlaps
        extra = self._extra_idx
        q = np.concatenate([cols, extra])
        lanes_q, v0_q = np.concatenate([lane, self._extra_lane]), np.concatenate([v0, v0[extra]])
        lead_all, has_all = self._neighbour(lanes_q, d[X, q], ahead=True)
        a_all = self._idm_behind(q, lead_all, has_all, v0_q)
        # the next car ahead too: a long truck's rear can be nearer than that of the shorter car whose centre
        # is nearer (a car just ahead in the next lane, its body reaching into this one)
        second, has_second = self._neighbour(lanes_q, np.where(has_all, d[X, lead_all], np.inf), ahead=True)
        has_second &= has_all
        if has_second.any():
            a_all = np.where(has_second, np.minimum(a_all, self._idm_behind(q, second, has_second, v0_q)), a_all)
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
            d[NOISE, :n] = decay * d[NOISE, :n] + nz.accel_std_mps2 * np.sqrt(1 - decay**2) * self.rng.standard_normal(
                n
            )
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
        # 4. lateral control (toward the lane centre + the driver's wander), actions, kinematics
        y_target = self.road.lane_center_y(d[LANE, :n]) + self._lateral_wander()
        curv = lateral_curvature(
            d[Y, :n],
            d[PSI, :n],
            d[V, :n],
            y_target,
            self.dt,
            b.lateral_time_s,
            b.max_lateral_speed_mps,
            self._max_heading(origin != lane),
        )
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
        done = (origin != lane) & (np.abs(d[Y, :n] - y_target) < 0.15) & (d[CONTROLLED, :n] == 0)
        if done.any():
            self.stats.record_merges(d[ORIGIN, :n][done], d[LANE, :n][done], self.road.lanes)
            d[ORIGIN, :n][done] = d[LANE, :n][done]
            d[COOLDOWN, :n][done] = b.lane_change_cooldown_s
        d[COOLDOWN, :n] -= self.dt
        # 5. collisions, exits, inflow, statistics
        collisions = self._collisions()
        self.stats.update(x_old, d[X, :n], d[V, :n], d[LANE, :n], d[CONTROLLED, :n] > 0)
        exited_mask = d[X, :n] - 0.5 * d[LENGTH, :n] > self.road.length_m
        exited = d[ID, :n][exited_mask].astype(np.int64)
        if len(exited):
            self._compact(~exited_mask)
        self._update_downstream()
        self.frame += 1
        self.stats.record_step(self.n, int(self.queue.sum()), len(spawned))
        return StepEvents(collisions=collisions, exited=exited, spawned=spawned)

    def _max_heading(self, changing: np.ndarray) -> np.ndarray:
        """Heading limit [rad] of each car: its own (``MAX_HEADING``) while changing lanes; while keeping its
        lane, also so small that its ends swing at most ``_KEEP_SWING_M``: with the wander's clearance, two
        long trucks side by side never touch."""
        d, n = self._d, self.n
        keep = np.arcsin(np.minimum(1.0, _KEEP_SWING_M / (0.5 * d[LENGTH, :n])))
        return np.where(changing, d[MAX_HEADING, :n], np.minimum(d[MAX_HEADING, :n], keep))

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

    def _collisions(self) -> np.ndarray:
        d, n = self._d, self.n
        c, s_ = np.abs(np.cos(d[PSI, :n])), np.abs(np.sin(d[PSI, :n]))
        reach_x = 0.5 * (d[LENGTH, :n] * c + d[WIDTH, :n] * s_)  # half extents of the axis-aligned bounding box
        reach_y = 0.5 * (d[LENGTH, :n] * s_ + d[WIDTH, :n] * c)
        pairs = candidate_pairs(d[X, :n], d[Y, :n], reach_x, reach_y)
        if len(pairs) == 0:
            ids = np.zeros((0, 2), dtype=np.int64)
        else:
            i, j = pairs[:, 0], pairs[:, 1]
            hit = boxes_overlap(
                d[X, i], d[Y, i], d[PSI, i], d[LENGTH, i], d[WIDTH, i],
                d[X, j], d[Y, j], d[PSI, j], d[LENGTH, j], d[WIDTH, j],
            )  # fmt: skip
            ids = np.sort(d[ID][pairs[hit]].astype(np.int64), axis=1)
        self._count_new_contacts(ids)
        return ids

    def _count_new_contacts(self, ids: np.ndarray) -> None:
        """Count a collision once per contact: a pair in contact now that was not in the last
        ``_CONTACT_MEMORY_S`` (a side contact that flickers as the cars wander is one collision)."""
        memory = round(_CONTACT_MEMORY_S / self.dt)
        new = 0
        for a, b in ids:
            pair = (int(a), int(b))
            last = self._contacts.get(pair)
            new += last is None or self.frame - last > memory
            self._contacts[pair] = self.frame
        if self._contacts and self.frame % memory == 0:
            self._contacts = {p: f for p, f in self._contacts.items() if self.frame - f <= memory}
        if new:
            self.stats.record_collisions(new)

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the per-vehicle arrays (for recording and rendering)."""
        return {
            "id": self.ids, "x": self.x.copy(), "y": self.y.copy(), "psi": self.psi.copy(), "v": self.v.copy(),
            "length": self.length.copy(), "width": self.width.copy(), "kind": self.kind, "lane": self.lane,
            "controlled": self.controlled, "accel": self.accel.copy(), "curvature": self.curvature.copy(),
        }  # fmt: skip
