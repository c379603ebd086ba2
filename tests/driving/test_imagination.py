"""Imagination: the rollout protocol shared by the trainers and the planners; and the planners."""

import pytest
import torch
from torch.utils.data import DataLoader

from worldmodel.costs import UncertaintyStats
from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.driving.imagination import Context, Imagination, estimate_uncertainty_stats
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.model_windows import to_model_units
from worldmodel.nn.policy import Policy, PolicyConfig

T = 5


@pytest.fixture(scope="module")
def trained(micro_run, micro_data):
    model = ForwardModel.from_checkpoint(micro_run / "checkpoints" / "last.pt")
    data = WindowDataset(micro_data, WindowConfig(4, T, True, "train"))
    batch = next(iter(DataLoader(data, batch_size=6, shuffle=False)))
    return model, to_model_units(batch, data, model)


def vae_model(seed: int = 0) -> ForwardModel:
    torch.manual_seed(seed)
    return ForwardModel(ForwardModelConfig.tiny("vae"))


def test_unroll_with_actions_equals_the_model_rollout(trained):
    model, batch = trained
    im = Imagination(model)
    ctx = Context.from_batch(batch)
    out = im.unroll(ctx, T, actions=batch["actions"])
    ref = model.rollout(batch["context_images"], batch["context_states"], batch["actions"])
    assert torch.allclose(out["images"], ref["images"]) and torch.allclose(out["states"], ref["states"])


def test_policy_gradients_reach_the_policy_and_never_the_model(trained):
    model, batch = trained
    tiny_std = torch.full((3, T), 1e-9, dtype=torch.float64)
    im = Imagination(model, stats=UncertaintyStats(torch.zeros(3, T, dtype=torch.float64), tiny_std))
    torch.manual_seed(0)
    policy = Policy(PolicyConfig.for_model(model.config.backbone))
    ctx = Context.from_batch(batch)
    rollout = im.unroll(ctx, T, policy=policy)
    assert rollout["actions"].shape == (6, T, 2) and rollout["images"].shape == (6, T, 3, 117, 24)
    terms = im.objective(ctx, rollout, replicas=3)
    assert set(terms) >= {"proximity", "lane", "offroad", "cost", "uncertainty", "loss"}
    assert terms["uncertainty"] > 0  # with a tiny std, any replica variance counts
    terms["loss"].backward()
    assert all(p.grad is None for p in model.parameters())
    assert sum(float(p.grad.abs().sum()) for p in policy.parameters() if p.grad is not None) > 0


def test_variances_vanish_without_dropout_and_share_z():
    model = vae_model()
    model.decoder.image[-1].weight.data.normal_(0, 0.1)  # non-zero updates, so dropout shows in the outputs
    g = torch.Generator().manual_seed(0)
    ctx = Context(torch.rand(2, 4, 3, 117, 24, generator=g), torch.randn(2, 4, 4, generator=g), torch.rand(2, 2) + 1,
                  torch.rand(2, 117, 24, generator=g))  # fmt: skip
    actions = torch.randn(2, T, 2, generator=g)
    im = Imagination(model)
    z = im.sample_z(2, T, g)
    assert im.variances(ctx, actions, z, 4)[0].max() > 0
    no_dropout = vae_model()
    no_dropout.load_state_dict(model.state_dict())
    for m in no_dropout.modules():
        if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d):
            m.p = 0.0
    assert Imagination(no_dropout).variances(ctx, actions, z, 4).abs().max() < 1e-10


def test_uncertainty_statistics_are_reproducible_and_leave_the_rng_alone(trained):
    model, batch = trained
    model = ForwardModel.from_checkpoint({"format": 1, "kind": "forward_model", "config": model.config.to_dict(),
                                          "state_dict": model.state_dict()})  # fmt: skip
    im = Imagination(model)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = estimate_uncertainty_stats(im, [batch], T, replicas=4, seed=1)
    after = torch.rand(1)
    b = estimate_uncertainty_stats(im, [batch], T, replicas=4, seed=1)
    assert torch.equal(before, after)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    assert a.mean.shape == (3, T) and (a.std > 0).all()


def no_action(model: ForwardModel, b: int, t: int) -> torch.Tensor:
    return model.normalise_actions(torch.zeros(2)).expand(b, t, 2)
