"""Policy-training and closed-loop evaluation throughput: ``bench_policy(quick) -> dict`` (``worldmodel bench
policy``).

``mpur_updates_per_s_ppuu``: one full MPUR update (policy unroll of T = 30 steps through the frozen model,
costs, the uncertainty cost over 10 dropout replicas sharing z, backward into the policy only, gradient clip,
Adam step) at the ``ppuu`` preset, batch 6, 20 context frames. Side by side in the same process, round-robin,
``ppuu_reference``: PPUU's compute pattern for the same update (``_ReferenceMPUR``): the model and the policy
re-encode the 20 stacked frames (60 / 80 channels) at every step, the replicas re-encode them too, and the
backward also fills the gradients of the model's parameters. Also ``mpur_updates_per_s_tiny`` (tiny preset,
same protocol) and ``eval_episodes_per_s`` (closed-loop episodes of a ``ppuu``-preset policy in Replay-v0 on a
recording made in the run, 2 workers, episodes in lockstep batches), against ``..._one_at_a_time`` (the same
episodes one at a time per worker) in the same run: ``eval_lockstep_speedup``. ``plan_*``: the gradient
planner's milliseconds per car-step in the oracle, cv and traffic worlds against reading every pixel at every
step, as ``worldmodel bench planner`` measures them (``bench.planner``).

``decoupled_mpur_updates_per_s_ppuu`` (issue 14): one update of MPUR over decoupled imagination
(``training.policy_decoupled``) at the same sizes (ppuu model and policy, batch 6, T = 30, K = 10 dropout
replicas): the policy drives 30 steps on views resampled at its pose from a cached world, the drive objective
and the pose-cost uncertainty over the 10 futures, backward, clip, Adam. Timed round-robin with the two
coupled updates above; ``decoupled_speedup_vs_ppuu_reference`` is the ratio in the same run. Building the
cached world is amortised (once per window): ``decoupled_world_build_s_per_window``, the forward model rolled
out for 10 replicas x 30 steps along the recorded actions, one window at a time as in training.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from worldmodel.bench.fm import _PPUUReference, _time_alternating
from worldmodel.bench.planner import bench_planner
from worldmodel.costs import CostConfig, UncertaintyStats, pixel_costs, prediction_variances, total_cost
from worldmodel.data.hdf5 import DT_S
from worldmodel.driving import kinematics
from worldmodel.driving.imagination import Context, Imagination
from worldmodel.driving.imagined_worlds import EgoWindow, ModelWorldBuilder
from worldmodel.driving.model_world import ModelWorld, ModelWorldConfig
from worldmodel.driving.uncertainty import PoseUncertaintyStats
from worldmodel.nn.backbone import BackboneConfig, mlp
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.policy import Policy, PolicyConfig
from worldmodel.nn.saving import save_checkpoint
from worldmodel.training.policy import policy_loss
from worldmodel.training.policy_decoupled import DecoupledImagination, drive, mpur_terms

BATCH, CONTEXT, HORIZON, REPLICAS = 6, 20, 30, 10
#: PPUU's own code at this size on this machine class (SPEC §3): seconds per MPUR update.
PPUU_ANCHOR_S = 19.8


def synthetic_context(batch: int, config: BackboneConfig, seed: int = 0) -> dict[str, Tensor]:
    """Random windows in model units (values do not matter for timing)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "context_images": torch.rand(batch, config.context_frames, 3, config.height, config.width, generator=g),
        "context_states": torch.randn(batch, config.context_frames, 4, generator=g),
        "car_size": torch.tensor([[4.5, 1.8]]).expand(batch, 2).clone(),
        "ego_mask": torch.rand(batch, config.height, config.width, generator=g),
        "actions": torch.randn(batch, HORIZON, 2, generator=g),
    }


def _stats(horizon: int) -> UncertaintyStats:
    return UncertaintyStats(torch.zeros(3, horizon, dtype=torch.float64), torch.ones(3, horizon, dtype=torch.float64))


def mpur_update_fn(model_config: ForwardModelConfig, batch: dict[str, Tensor]):
    """One full MPUR update of our implementation (``policy_loss("mpur-ppuu")``: the coupled rollout), as a callable."""
    imagination = Imagination(ForwardModel(model_config), CostConfig(), _stats(HORIZON))
    policy = Policy(PolicyConfig.for_model(model_config.backbone))
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        policy_loss("mpur-ppuu", policy, imagination, batch, HORIZON, REPLICAS)["loss"].backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 50.0)
        optimizer.step()

    return run


def synthetic_ego(batch: int, seed: int = 0) -> EgoWindow:
    """Recorded cars at 8-12 m/s with small random actions (SI) over ``HORIZON`` steps."""
    g = torch.Generator().manual_seed(seed)
    start = torch.zeros(batch, 4)
    start[:, 3] = 8.0 + 4.0 * torch.rand(batch, generator=g)
    actions = torch.randn(batch, HORIZON, 2, generator=g) * torch.tensor([0.5, 0.002])
    poses = kinematics.rollout(start, actions, DT_S)[..., :3]
    return EgoWindow(
        start,
        actions,
        poses,
        start[:, 3].clone(),
        torch.zeros(batch, 2),
        torch.tensor([[4.5, 1.8]]).expand(batch, 2).clone(),
    )


def decoupled_update_fn(model_config: ForwardModelConfig, batch: dict[str, Tensor], folder: Path):
    """(one update of decoupled MPUR on cached worlds, a call building the worlds of ``batch``'s windows one
    at a time as training does) as callables; the model's checkpoint is written to ``folder``."""
    model = ForwardModel(model_config)
    path = save_checkpoint(model.checkpoint_dict(0), folder / "fm.pt")
    world = ModelWorld(str(path), ModelWorldConfig(samples=1, replicas=REPLICAS))
    objective = replace(world.objective, uncertainty=0.1)  # the world's geometry, the pose-uncertainty cost on
    imagination = DecoupledImagination(ModelWorldBuilder(world), objective, model_config.view_spec,
                                       cache_windows=10_000, stats=PoseUncertaintyStats(0.0, 1.0, 1))  # fmt: skip
    policy = Policy(PolicyConfig.for_model(model_config.backbone))
    policy.set_normalisation(model.normalisation())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)
    ego = synthetic_ego(batch["actions"].shape[0])
    context = Context.from_batch(batch)
    b = ego.start.shape[0]
    keys = iter(range(10**9))
    imagination.worlds(list(range(b)), batch, ego, salt=1)  # the worlds the timed updates read, built once
    observe = torch.arange(b) % REPLICAS

    def update() -> None:
        optimizer.zero_grad(set_to_none=True)
        world, _ = imagination.worlds(list(range(b)), batch, ego, salt=1)  # cache hits: a lookup
        driven = drive(policy, context, world, ego, observe, imagination.spec)
        mpur_terms(imagination.objective, world, ego, driven, imagination.spec, imagination.stats)["loss"].backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 50.0)
        optimizer.step()

    def build() -> None:
        imagination.worlds([next(keys) for _ in range(b)], batch, ego)  # new windows: b builds

    return update, build


class _ReferenceMPUR(nn.Module):
    """PPUU's MPUR compute pattern, for side-by-side timing only: ``_PPUUReference``'s model (stacked frames
    re-encoded every step), a policy re-encoding 4 x Tc stacked channels per step, the replicas batched."""

    def __init__(self, c: BackboneConfig):
        super().__init__()
        self.model = _PPUUReference(c)
        c0, c1, d = c.widths
        act = lambda: [nn.Dropout2d(c.dropout), nn.LeakyReLU(c.negative_slope)]  # noqa: E731
        self.policy_encoder = nn.Sequential(
            nn.Conv2d(4 * c.context_frames, c0, 4, 2, 1), *act(), nn.Conv2d(c0, c1, 4, 2, 1), *act(),
            nn.Conv2d(c1, d, 4, 2, 1),
        )  # fmt: skip
        self.policy_state = mlp([4 * c.context_frames, c.hidden, c.hidden, c.map_numel], c.dropout, c.negative_slope)
        self.policy_head = mlp([c.map_numel, 256, 256, 256, 2], 0.0, c.negative_slope)

    def step(self, images: Tensor, states: Tensor, action: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        m, b = self.model, images.shape[0]
        h = m.x_encoder(images.flatten(1, 2)) + m.s_encoder(states.flatten(1)).view(b, *m.map)
        h = h + m.z_expander(z).view(b, *m.map) + m.a_encoder(action).view(b, *m.map)
        h = h + m.u_up(m.u_fc(m.u_down(h).flatten(1)).view(b, *m.u_small))
        image = torch.sigmoid(m.image_decoder(h)[:, :, : m.c.height, : m.c.width] + images[:, -1])
        return image, states[:, -1] + m.state_decoder(m.state_reduce(h).flatten(1))

    def act(self, images: Tensor, states: Tensor, mask: Tensor) -> Tensor:
        b, t = images.shape[:2]
        x = torch.cat([images, mask[:, None, None].expand(b, t, 1, *mask.shape[1:])], 2).flatten(1, 2)
        h = self.policy_encoder(x) + self.policy_state(states.flatten(1)).view(b, -1, *self.model.map[1:])
        return self.policy_head(h.flatten(1)).clamp(-3, 3)

    def rollout(self, images, states, actions, z, policy_mask=None):
        out_images, out_states, chosen = [], [], []
        for t in range(HORIZON):
            a = self.act(images, states, policy_mask) if policy_mask is not None else actions[:, t]
            image, state = self.step(images, states, a, z[:, t])
            images = torch.cat([images[:, 1:], image[:, None]], 1)
            states = torch.cat([states[:, 1:], state[:, None]], 1)
            out_images.append(image)
            out_states.append(state)
            chosen.append(a)
        return torch.stack(out_images, 1), torch.stack(out_states, 1), torch.stack(chosen, 1)


def reference_update_fn(c: BackboneConfig, batch: dict[str, Tensor]):
    ref = _ReferenceMPUR(c)
    policy_params = [p for n, p in ref.named_parameters() if n.startswith("policy")]
    optimizer = torch.optim.Adam(policy_params, lr=1e-4)
    images, states, mask, size = (batch[k] for k in ("context_images", "context_states", "ego_mask", "car_size"))
    z = torch.randn(images.shape[0], HORIZON, ref.model.n_z)

    def costs(pred_images: Tensor, pred_states: Tensor) -> Tensor:
        speed = torch.hypot(pred_states[..., 2], pred_states[..., 3])
        car = size.repeat_interleave(pred_images.shape[0] // size.shape[0], 0)
        return total_cost(pixel_costs(pred_images, speed.detach(), car[:, :1], car[:, 1:]))

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        ref.model.eval()
        pred_images, pred_states, actions = ref.rollout(images, states, None, z, policy_mask=mask)
        loss = costs(pred_images, pred_states).mean()
        ref.model.train()  # dropout on for the replicas, as PPUU
        rep = lambda x: x.repeat_interleave(REPLICAS, 0)  # noqa: E731
        r_images, r_states, _ = ref.rollout(rep(images), rep(states), rep(actions), rep(z))
        k_images = r_images.unflatten(0, (-1, REPLICAS))
        k_states = r_states.unflatten(0, (-1, REPLICAS))
        k_costs = costs(r_images, r_states).unflatten(0, (-1, REPLICAS))
        loss = loss + 0.05 * prediction_variances(k_images, k_states, k_costs).mean()
        loss.backward()  # fills the model's gradients too, as PPUU's code does
        nn.utils.clip_grad_norm_(policy_params, 50.0)
        optimizer.step()

    return run


def bench_policy(quick: bool = False) -> dict:
    """Measure MPUR updates/s (ours vs PPUU's pattern, same run) and closed-loop episodes/s."""
    from worldmodel.bench import pipeline as bench

    rounds, warmup = (1, 1) if quick else (3, 1)
    with torch.random.fork_rng(), tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ppuu = ForwardModelConfig.ppuu("vae", dropout=0.1)
        tiny = ForwardModelConfig.tiny("vae", backbone=BackboneConfig.tiny(context_frames=CONTEXT))
        decoupled, build = decoupled_update_fn(ppuu, synthetic_context(BATCH, ppuu.backbone), Path(tmp))
        steps = {
            "ppuu": mpur_update_fn(ppuu, synthetic_context(BATCH, ppuu.backbone)),
            "ppuu_reference": reference_update_fn(ppuu.backbone, synthetic_context(BATCH, ppuu.backbone)),
            "decoupled": decoupled,
            "tiny": mpur_update_fn(tiny, synthetic_context(BATCH, tiny.backbone)),
        }
        seconds = _time_alternating(steps, rounds, warmup)
        build_s = _time_alternating({"build": build}, rounds, 0)["build"] / BATCH
    result = {
        "decoupled_mpur_updates_per_s_ppuu": 1.0 / seconds["decoupled"],
        "decoupled_mpur_seconds_per_update_ppuu": seconds["decoupled"],
        "decoupled_speedup_vs_ppuu_reference": seconds["ppuu_reference"] / seconds["decoupled"],
        "decoupled_speedup_vs_coupled_ours": seconds["ppuu"] / seconds["decoupled"],
        "decoupled_world_build_s_per_window": build_s,
        "mpur_updates_per_s_ppuu": 1.0 / seconds["ppuu"],
        "mpur_seconds_per_update_ppuu": seconds["ppuu"],
        "mpur_updates_per_s_tiny": 1.0 / seconds["tiny"],
        "ppuu_reference_seconds_per_update": seconds["ppuu_reference"],
        "speedup_vs_ppuu_reference": seconds["ppuu_reference"] / seconds["ppuu"],
        "speedup_vs_ppuu_anchor": PPUU_ANCHOR_S / seconds["ppuu"],
    }
    result |= _bench_eval(quick)
    result |= bench_planner(quick)
    result["settings"] = {"batch": BATCH, "context_frames": CONTEXT, "horizon": HORIZON, "replicas": REPLICAS,
                          "rounds": rounds, "threads": torch.get_num_threads(), "ppuu_anchor_s": PPUU_ANCHOR_S}  # fmt: skip
    result["machine"] = bench.machine()
    return result


def _bench_eval(quick: bool) -> dict:
    """Closed-loop episodes/s with a ppuu-preset policy (random weights: the compute of a trained one)."""
    from worldmodel.data.extract import ExtractConfig, extract
    from worldmodel.data.record import RecordConfig, record
    from worldmodel.driving.closed_loop import bench_eval_episodes

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        record(RecordConfig(scenario="i80", minutes=1.0 if quick else 2.0, warmup_s=60.0, seed=0, progress=False),
               folder / "trajectories-0.h5")  # fmt: skip
        extract([folder / "trajectories-0.h5"], folder / "episodes.h5", ExtractConfig(workers=1, progress=False))
        policy = Policy(PolicyConfig.ppuu())
        torch.save(policy.checkpoint_dict(0), folder / "policy.pt")
        t0 = time.perf_counter()
        episodes, batch = (32, 8) if quick else (64, 16)  # two groups of lockstep episodes: both workers busy
        kw = {"driver": str(folder / "policy.pt"), "episodes": episodes, "workers": 2, "split": "train"}
        result = bench_eval_episodes(folder, batch=batch, **kw)
        alone = bench_eval_episodes(folder, batch=1, **kw)  # the baseline: one episode at a time per worker
        result["eval_batch"] = batch
        result["eval_episodes_per_s_one_at_a_time"] = alone["eval_episodes_per_s"]
        result["eval_lockstep_speedup"] = round(result["eval_steps_per_s"] / alone["eval_steps_per_s"], 2)
        result["eval_bench_wall_s"] = time.perf_counter() - t0
    return result


__all__ = ["PPUU_ANCHOR_S", "bench_policy", "mpur_update_fn", "reference_update_fn", "synthetic_context"]
