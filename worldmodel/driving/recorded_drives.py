"""A driver's own drives, kept step by step: where the states a policy reaches come from when it is trained on
them (``training.scene_mpur``'s rounds: windows imagined at the policy's own states, ``scene_windows.driven_moments``).

``DriveRecorder`` wraps any lockstep driver; at each controlled step it keeps the episode's row (frames since its
car's first recorded frame), the ego's state (x, y, psi, v) before the step and the action executed; when the
episode ends the runner asks ``slot_collected`` for them and the state after the last step.
Shapes: N controlled steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel.driving.driver_protocol import as_lockstep


class DriveRecorder:
    """``driver`` driving, its episodes kept (``slot_collected``: ``rows`` ``[N]``, ``states`` ``[N, 4]``,
    ``actions`` ``[N, 2]``, ``last`` ``[4]``)."""

    def __init__(self, driver) -> None:
        self.driver = driver = as_lockstep(driver)
        self.max_slots = getattr(driver, "max_slots", None)
        self.needs_context = getattr(driver, "needs_context", True)
        self.view = getattr(driver, "view", None)
        self.name = f"recorded[{driver.name}]"
        self._slots: dict[int, tuple] = {}

    def reset_slot(self, slot: int, env, obs: dict, info: dict) -> None:
        self.driver.reset_slot(slot, env, obs, info)
        self._slots[slot] = (env.sim, [], [], [])

    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        actions = np.asarray(self.driver.act_slots(slots, observations, infos), dtype=np.float64)
        for slot, action in zip(slots, actions, strict=True):
            sim, rows, states, executed = self._slots[slot]
            rows.append(sim.frame - sim.start_frame)
            states.append((sim.x, sim.y, sim.psi, sim.v))
            executed.append(action.copy())
        return actions

    def slot_diagnostics(self, slot: int) -> dict[str, float]:
        return self.driver.slot_diagnostics(slot)

    def slot_collected(self, slot: int) -> dict[str, np.ndarray]:
        """The finished episode of ``slot``."""
        sim, rows, states, executed = self._slots.pop(slot)
        return {"rows": np.asarray(rows, dtype=np.int64), "states": np.asarray(states, dtype=np.float64).reshape(-1, 4),
                "actions": np.asarray(executed, dtype=np.float64).reshape(-1, 2),
                "last": np.array([sim.x, sim.y, sim.psi, sim.v], dtype=np.float64)}  # fmt: skip


def build_recorder(checkpoint: str | Path, seed: int = 0) -> DriveRecorder:
    """A ``DriveRecorder`` around the policy ``checkpoint`` (``model_drivers.make_model_driver``); top-level and
    built from plain values, so that worker processes can build their own."""
    from worldmodel.driving.model_drivers import make_model_driver

    return DriveRecorder(make_model_driver(str(checkpoint), seed=seed))


__all__ = ["DriveRecorder", "build_recorder"]
