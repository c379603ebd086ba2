"""``train policy --method dagger``: the gradient planner distilled into a policy in closed loop (DAgger).

The planner over a world provider (``--world traffic``: the other cars moved by the learned traffic model;
``cv``; ``model``: the forward model; ``oracle``: the recording's true future, privileged) drives the train
split's cars in ``Replay-v0`` well; a policy regressing its actions only on the states the planner reaches
drifts off them and fails there (supervised imitation's compounding error). DAgger (Ross, Gordon, Bagnell
2011) labels the states the *policy* reaches instead:

- round 0: the planner drives ``first_round_episodes`` (default ``round_episodes``) train cars and labels every
  step (``driving.labelling``);
- round r > 0: the policy of round r - 1 drives another draw of train cars, executing the planner's action
  with probability ``beta ** r`` per step; the planner labels every step;
- after each round: ``steps / rounds`` updates of regression (MSE of the normalised action, targets clamped
  to the policy's range) on batches of ``sequence_steps``-step runs drawn from all rounds' data; with
  ``holdout`` > 0, the last share of each round's drives is kept out and the policy's error on them logged
  (``heldout_error``: the offline gate, cheaper than a drive); a closed-loop drive of ``val_episodes`` val
  cars; ``best.pt`` keeps the best (success, then distance), ``last.pt`` the latest, ``metrics.jsonl`` one line
  per round.

The policy sees what it sees when it drives (``ObservationWindow``): the last Tc views with the ego mask and
the Tc states, positions relative to the newest; a scene policy (``observation="scene"``, ``nn.scene_policy``)
sees the object-level features the demos keep at each step (``driving.scene``), standardised with the
statistics of round 0's drives. The planner's labels use what the car's sensors give (its
exact state, the other cars' current states); the policy learns to act without planning. Each round's demos
are written to ``<out>/demos/round-<r>.h5``; a run resumes at round granularity (``train_dagger``).
Shapes: B windows, Tc context frames, H x W view.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from worldmodel.data.demos import read_demos, write_demos
from worldmodel.data.hdf5 import DataError, write_json
from worldmodel.driving.closed_loop import EvalPolicyConfig
from worldmodel.driving.episode_selection import select_episodes
from worldmodel.driving.episode_workers import run_episodes
from worldmodel.files import make_dir
from worldmodel.nn.checkpointing import load_checkpoint, load_weights
from worldmodel.nn.policy import Policy
from worldmodel.nn.saving import save_checkpoint, seed_everything
from worldmodel.nn.scene_policy import ScenePolicy
from worldmodel.training.loop import evenly_spaced
from worldmodel.training.policy import closed_loop_val
from worldmodel.training.policy_config import TrainPolicyConfig

log = logging.getLogger(__name__)


def build_labeller(world: str, model: str | None, student: str | None, beta: float, context_frames: int,
                   seed: int):  # fmt: skip
    """The ``LabellingDriver`` of a round: ``plan:grad`` over ``world`` (``model``: its traffic or forward
    model) labelling, the policy checkpoint ``student`` (None: the planner) driving. Top-level and built from
    plain values, so that worker processes can build their own."""
    from worldmodel.driving.labelling import LabellingDriver
    from worldmodel.driving.model_drivers import make_model_driver
    from worldmodel.driving.planner_driver import make_planner_driver

    teacher = make_planner_driver("grad", world=world, fm=model, seed=seed)
    policy = None if student is None else make_model_driver(student, seed=seed)
    return LabellingDriver(teacher, policy, beta, context_frames)


class DemoWindows(Dataset):
    """Every run of ``steps`` consecutive labelled steps of ``demos`` (``labelling.Demo.arrays``) as policy
    inputs: ``images`` ``[Tc - 1 + steps, 3, H, W]`` in [0, 1] (the views the steps' windows read), ``states``
    ``[Tc - 1 + steps, 4]`` normalised (positions relative to the last frame; ``Policy.forward_sequence``
    re-anchors each window), ``ego_mask`` ``[H, W]``, ``target`` ``[steps, 2]``: the labels normalised and
    clamped to the policy's range. ``steps`` = 1: one window per labelled step."""

    def __init__(self, demos: list[dict], policy: Policy, steps: int = 1) -> None:
        self.demos, self.tc, self.steps = demos, policy.config.context_frames, steps
        self.state_mean, self.state_std = policy.state_mean.cpu(), policy.state_std.cpu()
        low, high = policy.action_bounds()
        self.targets = [policy.normalise_actions(torch.from_numpy(d["labels"])).clamp(low, high).detach().cpu()
                        for d in demos]  # fmt: skip
        self.index = [(i, t) for i, d in enumerate(demos) for t in range(len(d["labels"]) - steps + 1)]
        for d in demos:
            if int(d["context"]) < self.tc - 1:
                raise ValueError(f"DemoWindows: demos keep {int(d['context']) + 1} context frames, the policy "
                                 f"needs {self.tc}")  # fmt: skip

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, t = self.index[k]
        d = self.demos[i]
        first = int(d["context"]) + t - self.tc + 1  # the oldest frame the first step's window reads
        last = int(d["context"]) + t + self.steps - 1  # the frame the last step answered
        images = torch.from_numpy(d["images"][first : last + 1]).float().div_(255.0)
        states = torch.from_numpy(d["states"][first : last + 1].astype(np.float32))
        states[:, :2] -= states[-1, :2].clone()
        return {"images": images, "states": (states - self.state_mean) / self.state_std,
                "ego_mask": torch.from_numpy(d["ego_mask"]).float().div_(255.0),
                "target": self.targets[i][t : t + self.steps]}  # fmt: skip


class SceneSteps(Dataset):
    """Every labelled step of ``demos`` as a scene policy's input (``nn.scene_policy``): ``features`` ``[1, F]``
    (SI; the policy standardises them) and ``target`` ``[1, 2]`` (the label normalised and clamped to the
    policy's range). The demos need their scene features (``labelling.Demo.features``)."""

    def __init__(self, demos: list[dict], policy: ScenePolicy) -> None:
        if not all("features" in d for d in demos):
            raise ValueError("SceneSteps: the demos have no scene features (drive them again with this version)")
        low, high = policy.action_bounds()
        self.features = torch.from_numpy(np.concatenate([d["features"] for d in demos])).float()
        labels = torch.from_numpy(np.concatenate([d["labels"] for d in demos]))
        self.targets = policy.normalise_actions(labels.to(low.device)).clamp(low, high).detach().cpu()

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[k : k + 1], "target": self.targets[k : k + 1]}


def demo_windows(demos: list[dict], policy: Policy | ScenePolicy, steps: int = 1) -> Dataset:
    """The regression's data for ``policy``: ``SceneSteps`` for a scene policy, else ``DemoWindows``."""
    return SceneSteps(demos, policy) if isinstance(policy, ScenePolicy) else DemoWindows(demos, policy, steps)


def predict(policy: Policy | ScenePolicy, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The policy's mean actions [B, T, 2] (normalised) for a batch of ``demo_windows``."""
    if "features" in batch:
        return policy(batch["features"])["mean"]
    return policy.forward_sequence(batch["images"], batch["states"], batch["ego_mask"])["mean"]


def scene_normalisation(demos: list[dict], min_std: float = 1e-3) -> dict[str, np.ndarray]:
    """A scene policy's statistics from ``demos``: the features' mean and std as ``state_mean`` / ``state_std``
    (a constant feature gets std 1), the labels' as ``action_mean`` / ``action_std``."""
    features = np.concatenate([d["features"] for d in demos]).astype(np.float64)
    labels = np.concatenate([d["labels"] for d in demos]).astype(np.float64)
    feature_std = features.std(0)
    return {"state_mean": features.mean(0), "state_std": np.where(feature_std > min_std, feature_std, 1.0),
            "action_mean": labels.mean(0), "action_std": np.maximum(labels.std(0), min_std)}  # fmt: skip


def regression_updates(policy: Policy | ScenePolicy, optimizer: torch.optim.Optimizer, windows: Dataset, updates: int,
                       batch_size: int, grad_clip: float, generator: torch.Generator,
                       device: torch.device) -> list[float]:  # fmt: skip
    """``updates`` Adam steps on batches of ``batch_size`` runs of steps drawn at random (with replacement) from
    ``windows``; the MSE of each (normalised action units)."""
    policy.train()
    sampler = RandomSampler(windows, replacement=True, num_samples=updates * batch_size, generator=generator)
    losses = []
    for batch in DataLoader(windows, batch_size=batch_size, sampler=sampler):
        batch = {name: value.to(device) for name, value in batch.items()}
        loss = (predict(policy, batch) - batch["target"]).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def heldout_error(policy: Policy | ScenePolicy, windows: Dataset, device: torch.device, most: int = 2000,
                  batch_size: int = 250) -> dict[str, list[float]]:  # fmt: skip
    """The policy's squared error on (at most ``most``, evenly spaced) one-step ``windows`` of drives it was not
    trained on: ``{"heldout_mse": [accel, curvature], "heldout_var": [accel, curvature]}`` in normalised
    action units (the variance is the error of always answering the mean label)."""
    policy.eval()
    errors, targets = [], []
    for batch in DataLoader(Subset(windows, evenly_spaced(most, len(windows)).tolist()), batch_size=batch_size):
        batch = {name: value.to(device) for name, value in batch.items()}
        errors.append((predict(policy, batch) - batch["target"]).pow(2).flatten(0, 1).cpu())
        targets.append(batch["target"].flatten(0, 1).cpu())
    return {"heldout_mse": torch.cat(errors).mean(0).tolist(), "heldout_var": torch.cat(targets).var(0).tolist()}


def drive_train_cars(config: TrainPolicyConfig, folder: Path, episodes: int, seed: int, driver: str,
                     make_driver) -> tuple[list, list[dict]]:  # fmt: skip
    """``episodes`` train cars of ``folder`` drawn with ``seed``, each driven once in Replay-v0 by the driver that
    ``make_driver()`` (picklable) builds in each of ``config.episode_workers`` workers (``driver``: its name, for
    the workers' imports); (the cars, their records, each with what the driver ``collected``)."""
    eval_config = EvalPolicyConfig(driver=driver, data=str(folder), split="train", episodes=episodes, seed=seed,
                                   workers=config.episode_workers, out=None, progress=config.progress)  # fmt: skip
    files, chosen, _ = select_episodes(folder, "train", eval_config.context_frames, episodes, seed)
    return chosen, run_episodes(eval_config, files, chosen, None, make_driver=make_driver)


def collect(config: TrainPolicyConfig, folder: Path, round_index: int, student: Path | None, tc: int) -> tuple:
    """Round ``round_index``'s demos: the labelling driver on a seeded draw of ``round_episodes`` train cars;
    (demos, the drive's summary)."""
    c = config
    beta = 1.0 if student is None else c.beta**round_index
    model = {"traffic": c.traffic, "model": c.fm}.get(c.world)  # the world's own model, if it has one
    make = functools.partial(build_labeller, c.world, model, None if student is None else str(student), beta, tc,
                             c.seed)  # fmt: skip
    episodes = c.first_round_episodes if round_index == 0 and c.first_round_episodes else c.round_episodes
    _, records = drive_train_cars(c, folder, episodes, c.seed * 1000 + round_index, "plan:grad", make)
    demos = [r.pop("collected") for r in records]
    steps = sum(len(d["labels"]) for d in demos)
    summary = {"episodes": len(records), "steps": steps, "beta": beta,
               "teacher_share": sum(int(d["executed_by_teacher"]) for d in demos) / max(steps, 1),
               "drive_success_rate": float(np.mean([r["success"] for r in records]))}  # fmt: skip
    return demos, summary


def start_run(config: TrainPolicyConfig, folder: Path | None, why: str) -> tuple[Path, Path]:
    """A run that drives the dataset's cars: ``(out, out/checkpoints)`` made, config.json written, the seeds set.
    ``folder`` None (no dataset directory, so no trajectories files) is a ``DataError`` saying ``why`` they are
    needed."""
    if folder is None:
        raise DataError(config.data, f"{why}: pass the dataset directory (with its trajectories-*.h5 files)")
    out = make_dir(config.out)
    checkpoints = make_dir(out / "checkpoints")
    write_json(config.to_dict(), out / "config.json")
    seed_everything(config.seed)
    return out, checkpoints


def train_dagger(config: TrainPolicyConfig, policy: Policy, folder: Path | None) -> dict:
    """DAgger rounds (see the module docstring) with ``policy`` (initialised, in the forward model's units) on the
    dataset directory ``folder`` (its trajectories files). Returns a summary.

    Each round's demos are kept in ``<out>/demos/round-<r>.h5`` (``data.demos``); with ``config.resume`` a run
    continues where it stopped, at round granularity: the rounds whose demos are on disk are read, not driven
    again, and those already trained into ``checkpoints/last.pt`` (weights and optimiser) are not trained
    again."""
    c = config
    out, checkpoints = start_run(c, folder, "DAgger drives the train cars in Replay-v0")
    device = next(policy.parameters()).device
    optimizer = torch.optim.Adam(policy.parameters(), lr=c.lr)
    generator = torch.Generator().manual_seed(c.seed)
    tc = getattr(policy.config, "context_frames", 1)  # a scene policy reads no views
    updates = -(-c.steps // c.rounds)
    demos: list[dict] = []
    heldout: list[dict] = []  # the drives kept out of the regression (``holdout``)
    best, student, trained, history = None, None, -1, []
    metrics = out / "metrics.jsonl"
    last = checkpoints / "last.pt"
    if c.resume and last.exists():
        ckpt = load_checkpoint(last, policy.checkpoint_kind)
        load_weights(policy, ckpt["state_dict"], last, "use another --out or --no-resume")
        optimizer.load_state_dict(ckpt["optimizer"])
        trained, student = int(ckpt["round"]), last
        history = [json.loads(x) for x in metrics.read_text().splitlines()][: trained + 1] if metrics.exists() else []
        scores = [(x["val_success_rate"], x["val_mean_distance_m"]) for x in history if "val_success_rate" in x]
        best = max(scores) if scores else None
        log.info("dagger: resuming after round %d", trained)
    metrics.write_text("".join(json.dumps(x) + "\n" for x in history))
    for r in range(c.rounds):
        saved = out / "demos" / f"round-{r}.h5"
        t0 = time.perf_counter()
        if c.resume and saved.exists():
            new, drive = read_demos(saved), None
        else:
            new, drive = collect(c, folder, r, student, tc)
            write_demos(saved, new)
        kept = int(len(new) * c.holdout)
        demos += new[: len(new) - kept]
        heldout += new[len(new) - kept :]
        if r <= trained:
            continue
        collect_s = time.perf_counter() - t0
        if isinstance(policy, ScenePolicy) and trained < 0 and r == 0:  # the statistics of the first drives
            policy.set_normalisation(scene_normalisation(demos))
        windows = demo_windows(demos, policy, c.sequence_steps)
        t1 = time.perf_counter()
        losses = regression_updates(policy, optimizer, windows, updates, c.batch_size, c.grad_clip, generator, device)
        train_s = time.perf_counter() - t1
        tail = losses[-max(len(losses) // 10, 1) :]
        ckpt = policy.checkpoint_dict((r + 1) * updates, fm=str(c.fm), method=c.method, uncertainty_stats=None,
                                      pose_uncertainty_stats=None, train_config=c.to_dict(), round=r,
                                      optimizer=optimizer.state_dict())  # fmt: skip
        student = save_checkpoint(ckpt, last)
        line = {"round": r, **(drive or {}), "windows": len(windows), "updates": (r + 1) * updates,
                "loss_first": losses[0], "loss": float(np.mean(tail)),
                "collect_s": round(collect_s, 1), "train_s": round(train_s, 1)}  # fmt: skip
        if heldout:
            line |= {"heldout_drives": len(heldout)} | heldout_error(policy, demo_windows(heldout, policy), device)
        if c.val_episodes > 0:
            val = closed_loop_val(student, folder, c.val_episodes, c.seed, out / "val" / f"round-{r}.json", device,
                                  c.episode_workers)  # fmt: skip
            line |= {f"val_{name}": value for name, value in val.items()}
            score = (val["success_rate"], val["mean_distance_m"])
            if best is None or score > best:
                best = score
                save_checkpoint(ckpt | {"val": line}, checkpoints / "best.pt")
        history.append(line)
        with open(metrics, "a") as f:
            f.write(json.dumps(line) + "\n")
        log.info("dagger round %d: %s", r, line)
    return {"method": c.method, "rounds": history, "out": str(out)}


__all__ = [
    "DemoWindows",
    "SceneSteps",
    "build_labeller",
    "collect",
    "demo_windows",
    "drive_train_cars",
    "heldout_error",
    "predict",
    "regression_updates",
    "scene_normalisation",
    "start_run",
    "train_dagger",
]
