"""What a driver of the controlled car in ``ReplayEnv`` is: the ``Driver`` protocol (one episode at a time),
the ``LockstepDriver`` protocol (several episodes at once, one batched network forward per step for all of
them) and the adapters between the two (``OneSlot``, ``FirstSlot``, ``as_lockstep``).

A driver that plans or imagines may also say what it intends after its last action: an optional ``intent()``
(``slot_intent(slot)`` in lockstep) returning an ``Intent`` (its planned poses and the world it imagined), or
None; ``driver_intent`` asks any driver (None for those without the method: the simple drivers).

The drivers themselves are in ``worldmodel.driving.drivers`` (simple ones) and
``worldmodel.driving.model_drivers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worldmodel.driving.envs import ReplayEnv
from worldmodel.traffic.view import ViewSpec


@dataclass(frozen=True)
class Intent:
    """What a driver intends after its last ``act`` (road frame, SI).

    ``poses``: ``[T, 3]`` float64 (x, y [m], psi [rad]) of the ego after each of its next T actions as it plans
    them (row 0: the pose after the action just returned). ``frames``: the world it imagined, ``[K, F, 3, H,
    W]`` float32 in [0, 1] (K futures: samples x replicas) at the horizon steps ``frame_steps`` ``[F]`` (1 =
    the next step), frame f centred on ``frame_poses[f]`` (x, y, psi) in the view geometry ``view``; None
    when it imagines no frames. ``world``: the name of the imagined world (``oracle``, ``cv``, ``model``)."""

    poses: np.ndarray
    frames: np.ndarray | None = None
    frame_steps: tuple[int, ...] = ()
    frame_poses: np.ndarray | None = None
    view: ViewSpec | None = None
    world: str = ""


class Driver(Protocol):
    """What drives the controlled car of a ``ReplayEnv`` episode."""

    name: str

    def reset(self, env: ReplayEnv, obs: dict, info: dict) -> None:
        """Called after ``env.reset``; ``info["context"]`` (when the harness asked for it) is the list of
        context observations (dicts with ``"image"`` uint8 [4, H, W] and ``"state"`` float32 [4] (x, y, vx,
        vy) [m, m/s]), the last one ``obs``."""
        ...

    def act(self, obs: dict, info: dict) -> np.ndarray:
        """The action for the current observation: float [2] (accel [m/s^2], curvature [1/m])."""
        ...

    def diagnostics(self) -> dict[str, float]:
        """Extra numbers about the last ``act`` (e.g. ``{"uncertainty": u}``); ``{}`` for simple drivers."""
        ...


class LockstepDriver(Protocol):
    """Drives several episodes at once, each in its own environment; slot ``s`` holds one episode at a time.
    ``max_slots``: how many slots it can drive (None: any number)."""

    name: str
    max_slots: int | None

    def reset_slot(self, slot: int, env: ReplayEnv, obs: dict, info: dict) -> None:
        """A new episode in ``slot`` (as ``Driver.reset``)."""
        ...

    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        """Actions ``[len(slots), 2]`` (SI) for the current observations of those slots, in that order."""
        ...

    def slot_diagnostics(self, slot: int) -> dict[str, float]:
        """``Driver.diagnostics`` of the slot's last action."""
        ...


class OneSlot:
    """A per-episode ``Driver`` as a ``LockstepDriver`` of one slot."""

    max_slots = 1

    def __init__(self, driver: Driver) -> None:
        self.driver, self.name = driver, driver.name
        self.needs_context = bool(getattr(driver, "needs_context", True))

    def reset_slot(self, slot: int, env: ReplayEnv, obs: dict, info: dict) -> None:
        self.driver.reset(env, obs, info)

    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        return np.asarray(self.driver.act(observations[0], infos[0]), dtype=np.float64)[None]

    def slot_diagnostics(self, slot: int) -> dict[str, float]:
        return self.driver.diagnostics()

    def slot_intent(self, slot: int) -> Intent | None:
        return driver_intent(self.driver)


class FirstSlot:
    """The ``Driver`` methods of a ``LockstepDriver`` that drives one episode in slot 0 (a mixin)."""

    def reset(self, env: ReplayEnv, obs: dict, info: dict) -> None:
        self.reset_slot(0, env, obs, info)

    def act(self, obs: dict, info: dict) -> np.ndarray:
        return self.act_slots([0], [obs], [info])[0]

    def diagnostics(self) -> dict[str, float]:
        return self.slot_diagnostics(0)

    def intent(self) -> Intent | None:
        slot_intent = getattr(self, "slot_intent", None)
        return None if slot_intent is None else slot_intent(0)


def driver_intent(driver) -> Intent | None:
    """``driver.intent()`` after its last ``act``; None for a driver without the method."""
    intent = getattr(driver, "intent", None)
    return None if intent is None else intent()


def as_lockstep(driver: Driver | LockstepDriver) -> LockstepDriver:
    """``driver`` itself if it drives in lockstep (has ``act_slots``), else ``OneSlot(driver)``."""
    return driver if hasattr(driver, "act_slots") else OneSlot(driver)
