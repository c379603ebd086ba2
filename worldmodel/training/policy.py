"""Policy training in imagination: ``train_policy(TrainPolicyConfig) -> summary`` (``worldmodel train policy``).

Methods (SPEC.md §4, §9), all with the forward model frozen (eval mode, no weight gradients):
- ``mpur``: MPUR over decoupled imagination (``training.policy_decoupled``): each window's world is imagined
  once along the recorded car's future (``--world model``: K = samples x dropout replicas of the forward
  model; ``oracle``: the recorded future) and cached; the policy observes it resampled at its own pose, the
  exact kinematics move it, the driving objective (``--objective``, ``drive``) scores it, plus the pose-cost
  variance across replicas (``--uncertainty``). Trains on a fixed pool of ``world_pool`` train windows;
- ``distill``: the same worlds; the policy regresses the gradient planner's plan (teacher, once per window);
- ``mpur-ppuu``: PPUU's coupled MPUR: z ~ prior drawn once per rollout; the policy drives the model for T = 30
  steps on its own predictions; loss = discounted costs + uncertainty_weight * U (K dropout replicas sharing
  z); back-propagation into the policy only. ``uncertainty_weight = 0`` is PPUU's ablation (VG / SVG);
- ``mper``: z inferred by the posterior from the expert's true future (along the expert's actions); the policy
  drives with those z; loss = MSE of the predicted to the true future images and states;
- ``il``: 1-step imitation, regress the expert's action of the last context frame (MSE; Gaussian NLL for a
  Gaussian policy).

``PolicyTrainer`` is a ``Task`` of the one training loop (``worldmodel.training.loop``: data position, NaN
guard, metrics, cadence, resume, RNG, progress bar); one process. One step: a batch of train windows
(context Tc, future T) in the model's units -> the method's loss -> backward -> clip the gradient norm
(PPUU: 50) -> Adam (1e-4), skipped when not finite. A validation every ``val_every`` steps: the
model-predicted objective on fixed val windows and, when the dataset directory has its trajectories files,
a closed-loop drive of ``val_episodes`` val cars in Replay-v0; ``best.pt`` keeps the best (closed-loop
success, then distance; else the lowest predicted cost). ``last.pt`` (policy, optimiser, RNG, data position,
uncertainty statistics) every ``ckpt_every`` steps: a run resumes from it.

The dataset's settings: its views must be the forward model's (one-line ``DataError`` otherwise), and the
costs' geometry (``costs.COST_GEOMETRY``) is the dataset's; the run's ``costs`` set the weights only.

The uncertainty statistics are measured once at the start of a run (``estimate_uncertainty_stats``, expert
actions, ``stats_windows`` train windows, seeded) and saved in every checkpoint.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from worldmodel.costs import UncertaintyStats
from worldmodel.data.hdf5 import DataError
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving.envs import ACTION_HIGH, ACTION_LOW
from worldmodel.driving.imagination import Context, Imagination, estimate_uncertainty_stats
from worldmodel.driving.scene import FEATURE_NAMES
from worldmodel.driving.uncertainty import PoseUncertaintyStats
from worldmodel.driving.window_worlds import RenderedWindows
from worldmodel.driving.worlds import TrafficWorld
from worldmodel.nn.backbone_export import load_backbone
from worldmodel.nn.checkpointing import CheckpointError, checkpoint_errors, load_weights
from worldmodel.nn.distributed import DistContext, resolve_device
from worldmodel.nn.forward_model import ForwardModel
from worldmodel.nn.forward_model_config import view_text
from worldmodel.nn.model_windows import to_model_units
from worldmodel.nn.policy import CHECKPOINT_KIND, Policy, PolicyConfig
from worldmodel.nn.saving import save_checkpoint, seed_everything
from worldmodel.nn.scene_policy import ScenePolicy, ScenePolicyConfig
from worldmodel.training.loop import Task, TrainingLoop, evenly_spaced, reduce_terms
from worldmodel.training.policy_config import ACTION_RANGES, DECOUPLED, METHODS, TrainPolicyConfig
from worldmodel.training.policy_decoupled import IndexedWindows, decoupled_loss, make_imagination

log = logging.getLogger(__name__)


def resolve_dataset(data: str | Path) -> tuple[Path, Path | None]:
    """``datasets/<name>`` or ``.../episodes.h5`` -> (episodes.h5, the directory if it holds trajectories-*.h5)."""
    path = Path(data)
    episodes = path / "episodes.h5" if path.is_dir() else path
    if not episodes.exists():
        raise DataError(episodes, "no such episodes file")
    folder = episodes.parent
    return episodes, folder if any(folder.glob("trajectories-*.h5")) else None


def policy_loss(
    method: str,
    policy: Policy,
    imagination: Imagination,
    batch: Mapping[str, torch.Tensor],
    horizon: int,
    replicas: int,
    generator: torch.Generator | None = None,
    uncertainty_weight: float | None = None,
) -> dict[str, torch.Tensor]:
    """The named loss terms of one method on a batch in model units; ``loss`` is what is minimised."""
    context = Context.from_batch(batch)
    model = imagination.model
    if method == "il":
        out = policy(policy.init_cache(context.images, context.states, context.ego_mask))
        target = batch["actions"][:, 0]
        mse = (out["action"] - target).pow(2).mean()
        if policy.config.kind == "gaussian":
            var = (2 * out["log_std"]).exp()
            nll = (0.5 * (out["mean"] - target).pow(2) / var + out["log_std"]).mean()
            return {"action_mse": mse.detach(), "nll": nll, "loss": nll}
        return {"action_mse": mse, "loss": mse}
    if method == "mper":
        z = None
        if model.config.stochastic:
            with torch.no_grad():
                z = model.infer_z(context.images, context.states, batch["actions"][:, :horizon],
                                  batch["future_images"][:, :horizon])  # fmt: skip
        rollout = imagination.unroll(context, horizon, policy=policy, z=z)
        image_mse = (rollout["images"] - batch["future_images"][:, :horizon]).pow(2).mean()
        state_mse = (rollout["states"] - batch["future_states"][:, :horizon]).pow(2).mean()
        with torch.no_grad():
            action_mse = (rollout["actions"] - batch["actions"][:, :horizon]).pow(2).mean()
        return {"image_mse": image_mse, "state_mse": state_mse, "action_mse": action_mse, "loss": image_mse + state_mse}
    if method != "mpur-ppuu":
        raise ValueError(f"policy_loss: {method!r} is not a coupled method (mpur-ppuu, mper, il)")
    z = imagination.sample_z(context.batch_size, horizon, generator)
    rollout = imagination.unroll(context, horizon, policy=policy, z=z)
    terms = imagination.objective(context, rollout, z, replicas, uncertainty_weight)
    terms["action_norm"] = rollout["actions"].detach().norm(dim=-1).mean()
    return terms


def closed_loop_val(checkpoint: str | Path, folder: str | Path, episodes: int, seed: int, out: str | Path,
                    device: torch.device | str, workers: int = 1) -> dict:  # fmt: skip
    """A policy ``checkpoint`` driving ``episodes`` val cars of the dataset directory ``folder`` in Replay-v0
    (report written to ``out``): its ``success_rate``, ``mean_distance_m`` and ``collision_rate``."""
    from worldmodel.driving.closed_loop import EvalPolicyConfig, evaluate_driving

    report = evaluate_driving(EvalPolicyConfig(driver=str(checkpoint), data=str(folder), split="val", episodes=episodes,
                                               workers=workers, seed=seed, out=str(out), device=str(device),
                                               progress=False))  # fmt: skip
    return {name: report[name] for name in ("success_rate", "mean_distance_m", "collision_rate")}


def action_limits(config: TrainPolicyConfig) -> tuple | None:
    """The SI action bounds of the run's policies: the environment's (``action_range="kinematic"``), or None
    (``"sigma"``: PPUU's +-3 sigma clamp)."""
    return (tuple(ACTION_LOW.tolist()), tuple(ACTION_HIGH.tolist())) if config.action_range == "kinematic" else None


def new_policy(config: TrainPolicyConfig, fm: ForwardModel, init: bool = True) -> Policy:
    """A policy of the run: the forward model's trunk widths, context and units, the run's kind and action
    range; with ``init``, its trunk initialised as ``config.init_backbone`` says."""
    c = config
    limits = action_limits(c)
    policy = Policy(PolicyConfig.for_model(fm.config.backbone, kind=c.policy_kind, action_limits=limits))
    policy.set_normalisation(fm.normalisation())
    if init and c.init_backbone:
        if c.init_backbone == "fm":
            state = fm.backbone.state_dict()
        else:
            state = load_backbone(c.init_backbone, replace(policy.config.backbone, in_channels=3)).state_dict()
        policy.load_backbone_weights(state)
        log.info("policy trunk initialised from %s", c.init_backbone)
    return policy


def new_scene_policy(config: TrainPolicyConfig) -> ScenePolicy:
    """A scene policy of the run (MLP on ``driving.scene``'s features; normalisation set from its first drives)."""
    return ScenePolicy(ScenePolicyConfig(feature_names=FEATURE_NAMES, action_limits=action_limits(config),
                                         closing=config.scene_closing,
                                         lane_choice=config.scene_lane_choice))  # fmt: skip


class PolicyTrainer(Task):
    """A policy as a task of the training loop (``self.loop``, one process); ``run()`` trains up to ``steps``."""

    kind = CHECKPOINT_KIND

    def __init__(self, config: TrainPolicyConfig) -> None:
        self.config = c = config
        self.device = resolve_device(c.device)
        self.name = f"policy ({c.method})"
        self.episodes_path, self.trajectories_dir = resolve_dataset(c.data)
        seed_everything(c.seed)
        fm = ForwardModel.from_checkpoint(c.fm).to(self.device)
        tc = fm.config.backbone.context_frames
        horizon = c.horizon if c.method != "il" else 1
        windows = WindowConfig(tc, horizon, ego_relative=True, split="train")
        self.train_set = WindowDataset(self.episodes_path, windows)
        self.val_set = WindowDataset(self.episodes_path, replace(windows, split="val"))
        if self.train_set.view != fm.config.view_spec:
            raise DataError(self.episodes_path, f"its views are {view_text(self.train_set.view)}, but the forward "
                            f"model {c.fm} was trained on {view_text(fm.config.view_spec)}; train the policy on "
                            "data of the model's view")  # fmt: skip
        # the weights are the run's, the geometry the dataset's (saved resolved in config.json and checkpoints)
        self.config = c = replace(c, costs=c.costs.with_geometry(self.train_set.cost_config))
        self.imagination = Imagination(fm, c.costs)
        if len(self.train_set) < c.batch_size:
            raise DataError(self.episodes_path, f"{len(self.train_set)} train windows of {tc} + {horizon} frames, "
                            f"fewer than one batch of {c.batch_size}")  # fmt: skip
        loop_config = c.loop_config(str(self.episodes_path))
        self.policy = new_policy(c, fm, init=not loop_config.resuming()).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=c.lr)
        self.best: tuple | None = None
        self.imagination.stats = None
        self.decoupled = self.observe = None
        self.windows, self.val_items = self.train_set, self.val_set  # items: + rendered frames where a world reads them
        if c.method in DECOUPLED:  # a fixed pool of windows, each one's world built once (``policy_decoupled``)
            items, self.val_items = self._with_frames((self.windows, self.val_set), fm)
            pool = torch.randperm(len(self.windows), generator=torch.Generator().manual_seed(c.seed))[: c.world_pool]
            self.train_set = IndexedWindows(items, sorted(pool.tolist()))
            self.observe = torch.Generator().manual_seed(c.seed + 1)
            self.decoupled = make_imagination(
                c.method, c.world, c.fm, str(self.episodes_path), c.objective_config(uncertainty=c.uncertainty),
                c.samples, c.replicas, len(self.train_set) + c.val_windows, c.stats_windows, c.teacher_iterations,
                c.horizon, c.seed, self.device, self.windows, calibrate_stats=not loop_config.resuming())  # fmt: skip
        self.loop = TrainingLoop(self, loop_config, DistContext(device=self.device))
        if self.loop.resumed_from is None and c.method == "mpur-ppuu":
            self.imagination.stats = self._measure_stats()

    def generators(self) -> dict[str, torch.Generator]:
        return {} if self.observe is None else {"observe": self.observe}

    # ------------------------------------------------------------------ setup
    def _with_frames(self, datasets: tuple[WindowDataset, ...], fm: ForwardModel) -> tuple:
        """``datasets`` with the rendered frames their world reads: the cv or traffic world's (``world_images``),
        the cv frames a ``base="cv"`` forward model corrects (``base_images``), or nothing."""
        c = self.config
        if c.world in ("cv", "traffic"):
            world = TrafficWorld(c.traffic, datasets[0].view) if c.world == "traffic" else None  # None: cv
            return tuple(RenderedWindows(d, self.episodes_path, world, key="world_images") for d in datasets)
        if c.world == "model" and fm.config.base == "cv":
            return tuple(RenderedWindows(d, self.episodes_path) for d in datasets)
        return datasets

    def _batches(self, dataset: WindowDataset, n: int, seed: int):
        chosen = evenly_spaced(n, len(dataset))
        loader = DataLoader(Subset(dataset, chosen.tolist()), batch_size=self.config.batch_size,
                            num_workers=min(self.config.workers, 2))  # fmt: skip
        for batch in loader:
            yield to_model_units(batch, dataset, self.imagination.model)

    def _measure_stats(self) -> UncertaintyStats:
        c = self.config
        stats = estimate_uncertainty_stats(self.imagination, self._batches(self.train_set, c.stats_windows, c.seed),
                                           c.horizon, c.replicas, c.seed)  # fmt: skip
        log.info("uncertainty statistics measured on %d train windows", min(c.stats_windows, len(self.train_set)))
        return stats

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, step: int, **extra) -> dict:
        stats = self.imagination.stats
        pose = None if self.decoupled is None or self.decoupled.stats is None else asdict(self.decoupled.stats)
        return self.policy.checkpoint_dict(
            step,
            fm=str(self.config.fm),
            method=self.config.method,
            uncertainty_stats=None if stats is None else stats.to_dict(),
            pose_uncertainty_stats=pose,
            train_config=self.config.to_dict(),
            **extra,
        )

    def load_weights(self, ckpt: Mapping, path: Path, advice: str) -> None:
        """The policy's weights and the uncertainty statistics (of a ``last.pt`` or a ``best.pt``)."""
        with checkpoint_errors(path, "invalid config", advice):
            same_policy = PolicyConfig.from_dict(ckpt["config"]) == self.policy.config
        if not same_policy:
            raise CheckpointError(path, "the checkpoint's policy config differs from this run's",
                                  "use another --out or --no-resume")  # fmt: skip
        load_weights(self.policy, ckpt["state_dict"], path, advice)
        with checkpoint_errors(path, "damaged uncertainty statistics", advice):
            stats = ckpt.get("uncertainty_stats")
            self.imagination.stats = None if stats is None else UncertaintyStats.from_dict(stats)
            pose = ckpt.get("pose_uncertainty_stats")
            if self.decoupled is not None:
                self.decoupled.stats = None if pose is None else PoseUncertaintyStats(**pose)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "best": list(self.best) if self.best else None}

    def load_state_dict(self, ckpt: Mapping) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.best = tuple(ckpt["best"]) if ckpt.get("best") else None

    def reset_state(self, ckpt: Mapping, step: int) -> None:
        self.best = self._score(ckpt["val"]) if ckpt.get("val") else None

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Mapping[str, torch.Tensor], step: int | None = None) -> tuple[dict[str, float], bool]:
        """One update on a batch of windows (dataset units). Returns (named terms + ``grad_norm``, updated?)."""
        c = self.config
        self.policy.train()
        if self.decoupled is not None:
            terms = decoupled_loss(c.method, self.policy, self.decoupled, batch, self.windows, self.imagination.model,
                                   c.horizon, self.observe, own_steps=c.own_steps)  # fmt: skip
        else:
            batch = to_model_units(batch, self.train_set, self.imagination.model)
            terms = policy_loss(c.method, self.policy, self.imagination, batch, c.horizon, c.replicas)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
        out, updated = reduce_terms(terms, grad_norm, self.loop.ctx)
        if updated:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return out, updated

    def validate(self, step: int | None = None) -> dict:
        """The model-predicted objective (MPUR's, whatever the method) on fixed val windows, and a closed-loop
        drive of val cars when the trajectories are there."""
        c = self.config
        self.policy.eval()
        result: dict = {}
        if len(self.val_set) and self.decoupled is not None:
            result |= self._validate_decoupled()
        elif len(self.val_set) and c.method != "il":
            sums: dict[str, float] = {}
            n = 0
            generator = torch.Generator(self.device).manual_seed(c.seed)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                for batch in self._batches(self.val_set, c.val_windows, c.seed):
                    weight = None if self.imagination.stats is not None else 0.0
                    terms = policy_loss("mpur-ppuu", self.policy, self.imagination, batch, c.horizon, c.replicas,
                                        generator, uncertainty_weight=weight)  # fmt: skip
                    b = batch["actions"].shape[0]
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * b
                    n += b
            result |= {f"predicted_{k}": v / max(n, 1) for k, v in sums.items()}
        if c.val_episodes > 0 and self.trajectories_dir is not None:
            result |= self._closed_loop(self.loop.step if step is None else step)
        self.policy.train()
        return result

    @torch.no_grad()
    def _validate_decoupled(self) -> dict:
        """The imagined driving objective (``mpur``'s terms) on fixed val windows (their worlds cached)."""
        c = self.config
        chosen = evenly_spaced(c.val_windows, len(self.val_set)).tolist()
        loader = DataLoader(IndexedWindows(self.val_items, chosen), batch_size=c.batch_size, num_workers=0)
        generator = torch.Generator().manual_seed(c.seed)
        sums, n = {}, 0
        for batch in loader:
            terms = decoupled_loss("mpur", self.policy, self.decoupled, batch, self.val_set, self.imagination.model,
                                   c.horizon, generator, salt=1)  # fmt: skip
            b = len(batch["window"])
            sums = {k: sums.get(k, 0.0) + float(v) * b for k, v in terms.items()}
            n += b
        return {f"predicted_{k}": v / max(n, 1) for k, v in sums.items()}

    def _closed_loop(self, step: int) -> dict:
        c = self.config
        root = self.loop.run_dir.root
        path = save_checkpoint(self.checkpoint(step), root / "checkpoints" / "val.pt")
        return closed_loop_val(path, self.trajectories_dir, c.val_episodes, c.seed, root / "val" / f"step-{step}.json",
                               self.device)  # fmt: skip

    def _score(self, val: Mapping) -> tuple:
        if "success_rate" in val:
            return (val["success_rate"], val["mean_distance_m"])
        return (-val.get("predicted_cost", val.get("predicted_loss", math.inf)), 0.0)

    def improved(self, val: Mapping[str, float]) -> bool:
        score = self._score(val)
        if self.best is None or score > tuple(self.best):
            self.best = score
            return True
        return False

    def summary(self, summary: dict) -> dict:
        return summary | {"method": self.config.method}


def train_policy(config: TrainPolicyConfig) -> dict:
    """Train (or resume) a policy through a frozen forward model. Returns a summary."""
    if config.method == "dagger" or config.observation == "scene":
        from worldmodel.training.dagger import train_dagger
        from worldmodel.training.scene_mpur import train_scene_mpur

        _, folder = resolve_dataset(config.data)
        seed_everything(config.seed)
        device = resolve_device(config.device)
        if config.observation == "scene":
            policy = new_scene_policy(config)
        else:
            policy = new_policy(config, ForwardModel.from_checkpoint(config.fm))
        train = train_dagger if config.method == "dagger" else train_scene_mpur
        return train(config, policy.to(device), folder)
    return PolicyTrainer(config).run()


__all__ = [
    "ACTION_RANGES",
    "METHODS",
    "PolicyTrainer",
    "TrainPolicyConfig",
    "closed_loop_val",
    "policy_loss",
    "resolve_dataset",
    "new_policy",
    "new_scene_policy",
    "train_policy",
]
