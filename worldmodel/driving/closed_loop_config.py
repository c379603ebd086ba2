"""What ``worldmodel.driving.closed_loop.evaluate_driving`` evaluates, and how: ``EvalPolicyConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EvalPolicyConfig:
    """What ``evaluate_driving`` evaluates, and how."""

    driver: str = "no-action"
    """Driver spec for ``make_driver``: "no-action", "expert", "bot", a policy checkpoint, "plan:grad", ..."""
    data: str = "datasets/tiny"
    """Dataset directory (episodes.h5 + trajectories-*.h5), or its episodes.h5."""
    split: str = "test"
    """Cars of this split (train, val, test) are evaluated."""
    episodes: int | None = None
    """Evaluate only this many cars: a seeded choice (``seed``) among the selected ones, then sorted by
    vehicle id; None: all."""
    vehicles: tuple[int, ...] | None = None
    """Evaluate only these vehicle ids (``vehicle`` in the CSV; each an eligible car of the split), e.g. the
    failures of another run; None: every eligible car (or ``episodes`` of them)."""
    workers: int = 1
    """Worker processes (1: in this process)."""
    batch: int = 16
    """Episodes one process drives in lockstep (a policy acts for all of them in one forward pass; drivers
    that cannot, the planners and the simple ones, drive one at a time). Results depend on it (batched
    arithmetic), never on ``workers``."""
    seed: int = 0
    """Seeds the episode choice, the driver (``make_driver``) and every episode (with its vehicle id)."""
    out: str | None = "runs/eval.json"
    """Output JSON (a CSV of the episodes is written beside it); None: write nothing."""
    fm: str | None = None
    """Checkpoint of a model-based driver's model: a forward model (policies, planners with ``--world model``) or
    a traffic model (planners with ``--world traffic``, ``worldmodel train traffic``)."""
    device: str = "cpu"
    """Torch device of model-based drivers."""
    context_frames: int = 20
    """Frames the car follows its recording before the driver takes over."""
    max_steps: int | None = None
    """Truncate episodes after this many controlled steps ("timeout"); None: only at the end of the data."""
    stuck_factor: float | None = 2.0
    """Truncate an episode ("stuck") after floor(stuck_factor x the steps its recorded car took from the
    hand-over to the end of the evaluated zone) controlled steps; None: no such cap."""
    driver_options: dict = field(default_factory=dict)
    """Extra keyword options of ``make_driver``."""
    progress: bool = True
    """Show a progress bar."""
