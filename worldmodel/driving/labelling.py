"""A teacher labelling the states another driver reaches: the data of DAgger (Ross, Gordon, Bagnell 2011).

``LabellingDriver`` is a ``LockstepDriver`` around a teacher (e.g. the gradient planner over a world provider)
and an optional student (a policy): at every step both act on every live episode; the executed action is the
teacher's with probability ``beta`` (per step, from the episode's own seeded generator), else the student's;
the teacher's action is kept as the label of the observation it answered. Without a student the teacher drives.

When an episode ends the runner asks ``slot_collected(slot)`` for what was seen (``Demo``): the views and
states of the context and of every controlled step (what a policy's ``ObservationWindow`` holds), the
teacher's action at each step, the ego mask and the car's size.
Shapes: N controlled steps, Tc context frames, H x W view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from worldmodel.driving.scene import scene_features


@dataclass
class Demo:
    """One episode's observations and labels: ``images`` uint8 ``[Tc - 1 + N, 3, H, W]`` (the context's views,
    then the view each step's action answered), ``states`` float32 ``[Tc - 1 + N, 4]`` (x, y, vx, vy) alike,
    ``labels`` float32 ``[N, 2]`` (the teacher's SI action at each step), ``ego_mask`` uint8 ``[H, W]``,
    ``car_size`` float32 ``[2]`` (length, width [m]), ``context`` = Tc - 1 (so that step t's window of Tc frames
    is ``images[t : t + Tc]``), ``executed_by_teacher`` int (steps the teacher's action was executed),
    ``features`` float32 ``[N, F]`` (``scene.scene_features`` at each step, with the action executed before it)."""

    images: list = field(default_factory=list)
    states: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    ego_mask: np.ndarray | None = None
    car_size: np.ndarray | None = None
    context: int = 0
    executed_by_teacher: int = 0
    features: list = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"images": np.stack(self.images).astype(np.uint8), "states": np.stack(self.states).astype(np.float32),
                "labels": np.asarray(self.labels, dtype=np.float32).reshape(-1, 2), "ego_mask": self.ego_mask,
                "car_size": self.car_size, "context": np.int64(self.context),
                "executed_by_teacher": np.int64(self.executed_by_teacher),
                "features": np.asarray(self.features, dtype=np.float32).reshape(len(self.labels), -1)}  # fmt: skip


class _Slot:
    def __init__(self, demo: Demo, generator: np.random.Generator, sim) -> None:
        self.demo, self.generator, self.sim = demo, generator, sim
        self.last_action = np.zeros(2)


class LabellingDriver:
    """``teacher`` labels, ``student`` (None: the teacher) drives, with probability ``beta`` of executing the
    teacher's action at each step; ``context_frames`` (Tc) views of the context are kept per episode."""

    max_slots = None
    needs_context = True

    def __init__(self, teacher, student=None, beta: float = 0.0, context_frames: int = 4) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"LabellingDriver: beta must be in [0, 1], got {beta}")
        if context_frames < 1:
            raise ValueError(f"LabellingDriver: context_frames must be >= 1, got {context_frames}")
        self.teacher, self.student = teacher, student
        self.beta = 1.0 if student is None else beta
        self.context_frames = context_frames
        self.view = getattr(teacher, "view", None)
        student_view = getattr(student, "view", None)
        if student is not None and student_view is not None and student_view != self.view:
            raise ValueError(f"LabellingDriver: the student sees {student_view}, the teacher {self.view}")
        self.name = f"label[{teacher.name}<-{'teacher' if student is None else student.name}]"
        self._slots: dict[int, _Slot] = {}

    def reset_slot(self, slot: int, env, obs: dict, info: dict) -> None:
        seed = int(torch.randint(0, 2**62, (1,)))  # the harness seeds torch per episode
        self.teacher.reset_slot(slot, env, obs, info)
        if self.student is not None:
            self.student.reset_slot(slot, env, obs, info)
        context = info["context"][-self.context_frames :]
        if len(context) < self.context_frames:
            raise ValueError(f"LabellingDriver: needs {self.context_frames} context observations, got {len(context)}")
        demo = Demo(ego_mask=np.asarray(obs["image"][3], dtype=np.uint8),
                    car_size=np.array([env.sim.length, env.sim.width], dtype=np.float32),
                    context=self.context_frames - 1)  # fmt: skip
        for seen in context[:-1]:  # the last context observation is ``obs``: kept by the first act
            demo.images.append(np.asarray(seen["image"][:3], dtype=np.uint8))
            demo.states.append(np.asarray(seen["state"], dtype=np.float32))
        self._slots[slot] = _Slot(demo, np.random.default_rng(seed), env.sim)

    def act_slots(self, slots: list[int], observations: list[dict], infos: list[dict]) -> np.ndarray:
        labels = np.asarray(self.teacher.act_slots(slots, observations, infos), dtype=np.float64)
        if self.student is None:
            actions = labels.copy()
        else:
            actions = np.asarray(self.student.act_slots(slots, observations, infos), dtype=np.float64)
        for i, (slot, obs) in enumerate(zip(slots, observations, strict=True)):
            state = self._slots[slot]
            demo = state.demo
            demo.images.append(np.asarray(obs["image"][:3], dtype=np.uint8))
            demo.states.append(np.asarray(obs["state"], dtype=np.float32))
            demo.labels.append(labels[i].astype(np.float32))
            demo.features.append(scene_features(state.sim.vehicles(), state.sim.road, state.last_action))
            if self.student is None or state.generator.random() < self.beta:
                actions[i] = labels[i]
                demo.executed_by_teacher += 1
                if hasattr(self.student, "executed"):
                    self.student.executed(slot, actions[i])
            elif hasattr(self.teacher, "executed"):
                self.teacher.executed(slot, actions[i])
            state.last_action = actions[i].copy()
        return actions

    def slot_diagnostics(self, slot: int) -> dict[str, float]:
        return {}

    def slot_collected(self, slot: int) -> dict[str, np.ndarray]:
        """The finished episode of ``slot`` (``Demo.arrays``)."""
        return self._slots.pop(slot).demo.arrays()


__all__ = ["Demo", "LabellingDriver"]
