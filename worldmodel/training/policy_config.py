"""What a policy training run is: ``TrainPolicyConfig`` (``worldmodel train policy``'s flags; saved resolved as
``<out>/config.json``), and the methods and action ranges it names (``training.policy`` runs it)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from worldmodel.costs import CostConfig
from worldmodel.driving.imagined_worlds import TRAIN_WORLDS
from worldmodel.driving.objective import ObjectiveConfig
from worldmodel.training.loop import LoopConfig

METHODS = ("mpur", "distill", "dagger", "mpur-ppuu", "mper", "il")
#: What a policy reads (``TrainPolicyConfig.observation``).
OBSERVATIONS = ("view", "scene")
#: What a policy can output (``TrainPolicyConfig.action_range``).
ACTION_RANGES = ("kinematic", "sigma")
#: Methods over decoupled imagined worlds (``policy_decoupled``).
DECOUPLED = ("mpur", "distill")


@dataclass(frozen=True)
class TrainPolicyConfig:
    """A policy training run (saved resolved as ``<out>/config.json``)."""

    data: str = "datasets/i80-sim"
    """Dataset directory (episodes.h5 + trajectories-*.h5 for closed-loop validation) or an episodes.h5."""
    fm: str = "runs/fm/checkpoints/last.pt"
    """The trained forward model (frozen)."""
    out: str = "runs/policy"
    """Run directory: config.json, metrics.jsonl, checkpoints/last.pt and best.pt."""
    method: str = "mpur"
    """``"mpur"`` (decoupled imagination), ``"distill"`` (regress the gradient planner), ``"dagger"`` (the
    planner distilled in closed loop, ``training.dagger``), ``"mpur-ppuu"`` (PPUU's coupled rollout), ``"mper"``
    or ``"il"``."""
    world: str = "model"
    """dagger: the planner's world (``oracle``, ``cv``, ``traffic`` or ``model``). mpur, distill: the imagined
    world: ``"model"`` (the forward model along the recorded actions), ``"oracle"`` (the window's recorded
    future, K = 1), ``"cv"`` (the window's last context frame at constant velocity, rendered at the recorded
    poses, K = 1) or ``"traffic"`` (its cars moved by the traffic model ``traffic``, rendered likewise, K = 1)."""
    traffic: str | None = None
    """The traffic model (``worldmodel train traffic``) of ``world="traffic"``."""
    objective: str = "drive"
    """mpur, distill: the driving objective's preset (``"drive"`` or ``"ppuu"``)."""
    uncertainty: float = 0.1
    """mpur, distill: weight of the uncertainty cost at the ego's pose (model world; 0: off)."""
    progress_weight: float | None = None
    """mpur, distill: weight of the objective's progress (speed) term; None: the preset's (``drive``: 0.1)."""
    samples: int = 1
    """mpur, distill: z draws per window (K = samples x replicas futures)."""
    world_pool: int = 512
    """mpur, distill: train windows trained on (a fixed seeded random subset), each one's world built once
    and kept in memory (uint8: ~2.5 MB a window at K = 10, T = 30)."""
    teacher_iterations: int = 10
    """distill: Adam iterations of the gradient planner (teacher) per window."""
    own_steps: int = 0
    """distill: DAgger in imagination: per update the policy first drives 0 to ``own_steps`` steps itself (drawn
    uniformly), then the teacher plans from where it got to and the policy regresses that plan (0: the teacher's
    plan from the window's start only, cached)."""
    rounds: int = 4
    """dagger: rounds of driving train cars (the planner in round 0, then the latest policy) and regression.
    mpur with ``observation="scene"``: rounds of training; before each after the first the policy drives
    ``round_episodes`` train cars and windows at its own states join the imagined pool (1: recorded moments only)."""
    round_episodes: int = 100
    """dagger: train cars driven (and labelled at every step by the planner) per round; scene mpur: driven per
    round by the policy."""
    driven_stride: int = 10
    """scene mpur: a window is cut every this many steps of the policy's drives."""
    feature_gradient: bool = False
    """scene mpur: the gradient also flows through the features the policy reads at its imagined states, through
    the whole closed loop (True; its 30-step products of Jacobians blew the runs up at lr 1e-4 to 3e-4); False:
    they are inputs only, each action is credited with the costs it causes through the kinematics."""
    ego_gradient: bool = False
    """scene mpur: the gradient flows through the ego's own features (speed, heading, lane offset, last action) and
    the lane target, not through the other cars' (what a steering correction needs: a turn credited with the
    counter-turn that follows it)."""
    first_round_episodes: int | None = None
    """dagger: train cars of round 0 (the planner driving; None: ``round_episodes``)."""
    beta: float = 0.5
    """dagger: in round r > 0 the planner's action is executed with probability beta ** r per step."""
    sequence_steps: int = 16
    """dagger: consecutive labelled steps per training sequence (its frames encoded once for all of its windows;
    ``batch_size`` sequences per update)."""
    episode_workers: int = 2
    """dagger: worker processes driving the cars (collection and validation)."""
    holdout: float = 0.0
    """dagger: share of each round's drives kept out of the regression; after each round the policy's mean
    squared error on their labels (per action, normalised units) is logged beside their variance: how much of
    the teacher's behaviour the policy learned to read from its views, on drives it never saw (0: none kept)."""
    observation: str = "view"
    """What the policy reads: ``"view"`` (the ego's views and states, ``nn.policy``) or ``"scene"`` (dagger and
    mpur: object-level features of the lanes and the nearest cars, ``driving.scene``, through an MLP,
    ``nn.scene_policy``; ``--fm`` is not read; dagger: its normalisation from the first round's drives; mpur:
    trained in an object-level imagined world, ``training.scene_mpur``, of ``world`` oracle, cv or traffic)."""
    scene_closing: bool = True
    """scene: a fresh policy also reads, per car slot, 1 / time to contact and the time headway
    (``nn.scene_policy.closing_inputs``)."""
    scene_lane_choice: bool = False
    """scene mpur: a fresh policy also chooses its lane (``nn.scene_policy``: a head predicting the imagined
    objective of keeping the lane and of changing to either neighbour; in training each window is driven toward a
    lane drawn among those that exist, the head regressing what that drive cost)."""
    lane_intent: float = 0.2
    """scene mpur with a lane choice: weight of the discounted squared distance from the given lane's centre [lane
    widths^2]."""
    lag_weight: float = 0.0
    """scene mpur: weight of a term on falling behind the recorded car (windows of recorded moments only; the
    discounted squared lag beyond ``LAG_FREE_M``, in units of 5 m): a training signal from the recording, which
    the policy does not see."""
    init_policy: str | None = None
    """mpur with ``observation="scene"``: the scene policy to start from (e.g. a DAgger run's
    ``checkpoints/best.pt``); None: a fresh one, standardised with the train windows' recorded features."""
    policy_kind: str = "deterministic"
    """``"deterministic"`` or ``"gaussian"``."""
    action_range: str = "kinematic"
    """What the policy can output: ``"kinematic"`` (the environment's action bounds, |a| <= 6.2 m/s^2,
    |curvature| <= 0.2 1/m) or ``"sigma"`` (PPUU's +-3 sigma of the data's actions: on i80-sim braking stops
    at -2.3 m/s^2)."""
    horizon: int = 30
    """T: imagined steps per rollout (MPUR, MPER; PPUU: 30)."""
    replicas: int = 10
    """Dropout replicas of the uncertainty cost (mpur, distill: per z draw)."""
    costs: CostConfig = field(default_factory=CostConfig)
    """Cost weights, discount, uncertainty weight (0: no uncertainty cost) and hinge; the geometry
    (``COST_GEOMETRY``: safe distance, tolerance, lane width) is the dataset's, whatever is set here."""
    steps: int = 100_000
    """Total optimiser steps (a resumed run continues up to this; dagger: steps / rounds after each round)."""
    batch_size: int = 6
    """Windows per update (PPUU: 6)."""
    lr: float = 1e-4
    """Adam learning rate (PPUU: 1e-4)."""
    grad_clip: float = 50.0
    """Maximum gradient norm (PPUU: 50)."""
    init_backbone: str | None = "fm"
    """Initialise the policy's trunk: ``"fm"`` (the forward model's backbone), a ``backbone.pt`` from
    ``train ssl``, or None (random)."""
    stats_windows: int = 60
    """Train windows for the uncertainty statistics (expert actions)."""
    val_every: int = 500
    """Steps between validations (0: never; the last step is always validated when > 0)."""
    val_windows: int = 60
    """Val windows of the model-predicted objective."""
    val_episodes: int = 20
    """Val cars driven in Replay-v0 per validation (0: no closed-loop validation)."""
    ckpt_every: int = 100
    """Steps between writes of ``checkpoints/last.pt``."""
    log_every: int = 10
    """Steps between lines of ``metrics.jsonl``."""
    max_bad_steps: int = 10
    """Stop after this many consecutive non-finite steps."""
    seed: int = 0
    """Seed of the policy's initialisation, the data order, z and dropout."""
    device: str = "auto"
    """``"auto"``, ``"cpu"``, ``"cuda"``, ..."""
    workers: int = 1
    """DataLoader worker processes."""
    resume: bool = True
    """Continue from ``checkpoints/last.pt`` when it exists."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"TrainPolicyConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.observation not in OBSERVATIONS or (self.observation == "scene"
                                                    and self.method not in ("dagger", "mpur")):  # fmt: skip
            raise ValueError(f"TrainPolicyConfig.observation must be one of {OBSERVATIONS} (scene: with method "
                             f"dagger or mpur), got {self.observation!r} with {self.method!r}")  # fmt: skip
        if self.observation == "scene" and self.method == "mpur" and self.world == "model":
            raise ValueError("TrainPolicyConfig: a scene policy is imagined among cars (--world oracle, cv or "
                             "traffic); the forward model predicts views")  # fmt: skip
        if self.scene_lane_choice and not (self.observation == "scene" and self.method == "mpur"):
            raise ValueError("TrainPolicyConfig: scene_lane_choice (--scene-lane-choice) is learnt by a scene policy's "
                             "mpur (--method mpur --observation scene)")  # fmt: skip
        if self.init_policy is not None and not (self.observation == "scene" and self.method == "mpur"):
            raise ValueError("TrainPolicyConfig: init_policy (--init-policy) starts a scene policy's mpur run")
        if self.action_range not in ACTION_RANGES:
            raise ValueError(
                f"TrainPolicyConfig.action_range must be one of {ACTION_RANGES}, got {self.action_range!r}"
            )
        if self.world not in TRAIN_WORLDS:
            raise ValueError(f"TrainPolicyConfig.world must be one of {TRAIN_WORLDS}, got {self.world!r}")
        if self.world == "traffic" and self.traffic is None:
            raise ValueError("TrainPolicyConfig: the traffic world needs a traffic model: pass --traffic TRAFFIC.pt")
        progress = self.progress_weight
        if progress is not None and not (math.isfinite(progress) and progress >= 0):
            raise ValueError(f"progress_weight (--progress-weight) must be a finite number >= 0, got {progress}")
        if self.samples < 1 or self.world_pool < 1 or self.teacher_iterations < 1 or self.uncertainty < 0:
            raise ValueError("TrainPolicyConfig: samples, world_pool, teacher_iterations >= 1, uncertainty >= 0")
        if (
            min(self.rounds, self.round_episodes, self.sequence_steps, self.driven_stride) < 1
            or not 0 <= self.beta <= 1
        ):
            raise ValueError("TrainPolicyConfig: rounds, round_episodes, sequence_steps, driven_stride >= 1 and "
                             "0 <= beta <= 1")  # fmt: skip
        if self.first_round_episodes is not None and self.first_round_episodes < 1:
            raise ValueError(f"TrainPolicyConfig: first_round_episodes must be >= 1, got {self.first_round_episodes}")
        if self.episode_workers < 1:
            raise ValueError(f"TrainPolicyConfig: episode_workers must be >= 1, got {self.episode_workers}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"TrainPolicyConfig: holdout must be in [0, 1), got {self.holdout}")
        if not 0 <= self.own_steps < self.horizon:
            raise ValueError(f"TrainPolicyConfig: 0 <= own_steps < horizon, got {self.own_steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # NaN fails every comparison
            raise ValueError(f"lr (--lr) must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip (--grad-clip) must be a finite number > 0, got {self.grad_clip}")
        if self.horizon < 1 or self.replicas < 2 or self.batch_size < 1 or self.steps < 0:
            raise ValueError("TrainPolicyConfig: horizon >= 1, replicas >= 2, batch_size >= 1, steps >= 0")
        if min(self.log_every, self.ckpt_every, self.max_bad_steps, self.stats_windows) < 1 or self.val_every < 0:
            raise ValueError("TrainPolicyConfig: log_every, ckpt_every, max_bad_steps, stats_windows >= 1")

    def objective_config(self, **overrides) -> ObjectiveConfig:
        """The ``objective`` preset with ``progress_weight`` (when set) and ``overrides``."""
        progress = {} if self.progress_weight is None else {"speed": self.progress_weight}
        return ObjectiveConfig.preset(self.objective, **(progress | overrides))

    def to_dict(self) -> dict:
        return dict(self.__dict__) | {"costs": self.costs.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainPolicyConfig:
        return cls(**(dict(d) | {"costs": CostConfig(**d["costs"])}))

    def loop_config(self, data: str) -> LoopConfig:
        """The training loop's part of this config (``data``: the episodes file, for messages)."""
        return LoopConfig(out=self.out, steps=self.steps, batch_size=self.batch_size, seed=self.seed,
                          log_every=self.log_every, val_every=self.val_every, ckpt_every=self.ckpt_every,
                          max_bad_steps=self.max_bad_steps, workers=self.workers, resume=self.resume,
                          progress=self.progress, data=data)  # fmt: skip


__all__ = ["ACTION_RANGES", "DECOUPLED", "METHODS", "OBSERVATIONS", "TrainPolicyConfig"]
