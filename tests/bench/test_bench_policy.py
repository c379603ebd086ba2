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
