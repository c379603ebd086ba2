"""The benchmark's machinery on tiny settings (the full benchmark runs from ``worldmodel bench fm``)."""

import torch

from worldmodel.bench.fm import (
    _PPUUReference,
    _time_alternating,
    _train_step_fn,
    count_flops,
    matmul_gflops,
    synthetic_batch,
)
from worldmodel.nn.backbone import BackboneConfig
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig


def test_reference_and_model_steps_run_and_are_counted():
    torch.manual_seed(0)
    backbone = BackboneConfig.tiny(context_frames=3)
    batch = synthetic_batch(2, 3, 2, seed=1)
    reference = _PPUUReference(backbone, n_z=4)
    assert torch.isfinite(reference.loss(batch)["loss"])
    steps = {
        "ours": _train_step_fn(ForwardModel(ForwardModelConfig.tiny("vae", backbone=backbone)), batch),
        "reference": _train_step_fn(reference, batch),
    }
    flops = {name: count_flops(step) for name, step in steps.items()}
    assert all(f > 0 for f in flops.values())
    seconds = _time_alternating(steps, rounds=1, warmup=0)
    assert set(seconds) == {"ours", "reference"} and all(s > 0 for s in seconds.values())
    assert matmul_gflops(n=64, repeats=1) > 0
