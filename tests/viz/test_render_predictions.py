"""Prediction videos: layout and frame colours of ``prediction_frames``; ``render_predictions`` end to end."""

import imageio.v2 as imageio
import numpy as np

from worldmodel.viz.render import IMAGINED_RGB, OBSERVED_RGB, TRUTH_RGB, prediction_frames, render_predictions


def test_frames_show_observed_then_imagined_rows():
    rng = np.random.default_rng(0)
    n, tc, tp, k, h, w, scale = 2, 3, 2, 2, 20, 8, 2
    context, truth, mean = rng.random((n, tc, 3, h, w)), rng.random((n, tp, 3, h, w)), rng.random((n, tp, 3, h, w))
    samples, unc = rng.random((n, k, tp, 3, h, w)), rng.random((n, tp, 3, h, w))
    frames = prediction_frames(context, truth, mean, samples, unc, scale=scale)
    assert len(frames) == tc + tp
    rows = 2 + k + 2  # truth, mean, samples, |error|, dropout sd
    tile_h, tile_w = w * scale + 4, h * scale + 4  # turned: the heading points right
    assert frames[0].shape == (26 + rows * (tile_h + 4), 84 + n * (tile_w + 8), 3)
    y_mean, x0 = 26 + 1 * (tile_h + 4), 84  # top-left pixel of the first window's "mean" tile
    assert tuple(frames[0][y_mean, x0]) == OBSERVED_RGB and tuple(frames[-1][y_mean, x0]) == IMAGINED_RGB
    assert tuple(frames[-1][26, x0]) == TRUTH_RGB
    inner = frames[-1][y_mean + 2 : y_mean + tile_h - 2, x0 + 2 : x0 + tile_w - 2]
    expected = np.rot90((mean[0, -1].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), k=-1)
    np.testing.assert_array_equal(inner[::scale, ::scale], expected)  # nearest upscaling of the prediction


def test_render_predictions_writes_a_gif(micro_run, micro_data, tmp_path):
    out = tmp_path / "videos" / "pred.gif"
    summary = render_predictions(micro_run / "checkpoints" / "last.pt", micro_data, out, windows=2, k=2, scale=1,
                                 device="cpu")  # fmt: skip
    frames = imageio.mimread(out)
    assert len(frames) == summary["frames"] == 4 + 3 and len(summary["windows"]) == 2
    assert frames[0].shape[:2] == tuple(summary["size"])
