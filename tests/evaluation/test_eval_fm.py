"""Forward-model evaluation: trained vs untrained, K-sample summaries, action sensitivity, outputs."""

import json
import math

import pytest
import torch

from worldmodel.data.windows import WindowConfig, WindowDataset
from worldmodel.evaluation.fm import EvalFMConfig, evaluate_fm
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig
from worldmodel.nn.saving import save_checkpoint


def untrained_checkpoint(path, data, mode: str, random_decoder: bool = False):
    torch.manual_seed(0)
    model = ForwardModel(ForwardModelConfig.tiny(mode))
    model.set_normalisation(WindowDataset(data, WindowConfig(4, 3)).stats)
    if random_decoder:  # so that z and dropout show in the predictions
        with torch.no_grad():
            for layer in (model.decoder.image[-1], model.decoder.state[-1][-1]):
                layer.weight.normal_(0, 0.05)
    return save_checkpoint(model.checkpoint_dict(0, train_config={"ego_relative": True, "predict_frames": 3}), path)


def run_eval(checkpoint, data, out=None, **kw):
    config = EvalFMConfig(str(checkpoint), str(data), **({"k": 3, "horizon": 3, "windows": 17, "batch_size": 8,
                                                          "device": "cpu", "progress": False} | kw))  # fmt: skip
    return evaluate_fm(config, out=out)


def test_trained_model_beats_copy_last_and_the_untrained_one_equals_it(micro_run, micro_data, tmp_path):
    untrained = run_eval(untrained_checkpoint(tmp_path / "u.pt", micro_data, "deterministic"), micro_data)
    copy = untrained["per_step"]["copy_last"]["image_mse"]
    for u, c in zip(untrained["per_step"]["mean"]["image_mse"], copy, strict=True):
        assert u == pytest.approx(c, rel=0.02)  # zero updates: the last frame (up to the logit clamp)
    assert untrained["action_sensitivity"]["states"] == pytest.approx(1.0, abs=1e-6)  # it ignores actions
    out = tmp_path / "eval" / "trained.json"
    trained = run_eval(micro_run / "checkpoints" / "last.pt", micro_data, out=out)
    mean = trained["per_step"]["mean"]["image_mse"]
    assert all(m < c for m, c in zip(mean, copy, strict=True)), (mean, copy)  # same windows, same copy-last
    assert trained["per_step"]["copy_last"]["image_mse"] == copy
    saved = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000
    protocol = saved["protocol"]
    assert (protocol["k"], protocol["horizon"], protocol["split"], protocol["seed"]) == (3, 3, "test", 0)
    assert protocol["windows_evaluated"] == 17 and protocol["context_frames"] == 4 and protocol["checkpoint_step"] == 60
    assert len(saved["per_step"]["best_of_k"]["ssim"]) == 3


def test_k_sample_summaries_are_ordered_and_diverse(micro_data, tmp_path):
    result = run_eval(untrained_checkpoint(tmp_path / "v.pt", micro_data, "vae", random_decoder=True), micro_data, k=4)
    s = result["summary"]
    assert s["best_of_k"]["image_mse"] < s["mean_of_k"]["image_mse"] < s["worst_of_k"]["image_mse"]
    assert s["best_of_k"]["position_rmse_m"] <= s["mean_of_k"]["position_rmse_m"]
    assert min(result["per_step"]["diversity"]["image_mse"]) > 0
    assert s["best_of_k"]["ssim"] >= s["worst_of_k"]["ssim"] and s["copy_last"]["psnr_db"] < 100
    u = result["uncertainty"]
    assert u["images"]["spread_skill"] > 0 and -1 <= u["images"]["spearman_rho"] <= 1
    det = run_eval(
        untrained_checkpoint(tmp_path / "d.pt", micro_data, "deterministic", random_decoder=True), micro_data
    )
    assert det["per_step"]["diversity"]["image_mse"] == [0.0, 0.0, 0.0]
    for name in ("best_of_k", "worst_of_k", "mean_of_k"):  # no latent: every sample is the mean prediction
        for metric, values in det["per_step"][name].items():
            assert values == pytest.approx(det["per_step"]["mean"][metric], rel=1e-5), (name, metric)
    assert abs(det["action_sensitivity"]["states"] - 1) > 1e-6  # a random state head reads the actions
    assert math.isfinite(det["uncertainty"]["position"]["spread_skill"])


def test_evaluation_is_reproducible_with_its_seed(micro_data, tmp_path):
    ckpt = untrained_checkpoint(tmp_path / "v.pt", micro_data, "vae-lp", random_decoder=True)
    a, b = run_eval(ckpt, micro_data, windows=8), run_eval(ckpt, micro_data, windows=8)
    c = run_eval(ckpt, micro_data, windows=8, seed=1)
    assert a["per_step"] == b["per_step"] and a["uncertainty"] == b["uncertainty"]
    assert c["per_step"]["copy_last"] != a["per_step"]["copy_last"]  # other windows
