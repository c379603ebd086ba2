"""bench policy's timed steps run (tiny sizes) and do what they claim: our update trains the policy only,
the PPUU-pattern reference fills the model's gradients too."""

import pytest
import torch

import worldmodel.bench.policy as bench
from worldmodel.nn.backbone import BackboneConfig
from worldmodel.nn.forward_model import ForwardModelConfig

pytestmark = pytest.mark.slow  # minutes of CPU: deselect with -m "not slow"


def test_update_steps_run_at_tiny_size(monkeypatch):
    monkeypatch.setattr(bench, "HORIZON", 3)
    monkeypatch.setattr(bench, "REPLICAS", 2)
    config = BackboneConfig.tiny(context_frames=6)
    torch.manual_seed(0)
    ours = bench.mpur_update_fn(ForwardModelConfig.tiny("vae", backbone=config), bench.synthetic_context(2, config))
    reference = bench.reference_update_fn(config, bench.synthetic_context(2, config))
    ours()
    reference()
    model = reference.__closure__  # the reference's model is reachable through its closure
    ref = next(c.cell_contents for c in model if isinstance(c.cell_contents, bench._ReferenceMPUR))
    assert any(p.grad is not None for p in ref.model.parameters())  # PPUU's waste, reproduced


def test_decoupled_update_trains_the_policy_on_a_cached_world(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "HORIZON", 4)
    monkeypatch.setattr(bench, "REPLICAS", 2)
    config = BackboneConfig.tiny(context_frames=3)
    torch.manual_seed(0)
    update, build = bench.decoupled_update_fn(ForwardModelConfig.tiny("vae", backbone=config),
                                              bench.synthetic_context(2, config), tmp_path)  # fmt: skip
    imagination = next(c.cell_contents for c in update.__closure__ if hasattr(c.cell_contents, "cache"))
    policy = next(c.cell_contents for c in update.__closure__ if isinstance(c.cell_contents, bench.Policy))
    before = [p.detach().clone() for p in policy.parameters()]
    update()
    assert imagination.built == 2  # the timed update reads the cached worlds: nothing built
    assert any(not torch.equal(a, p) for a, p in zip(before, policy.parameters(), strict=True))
    build()
    assert imagination.built == 4 and imagination.cache.hits >= 2
