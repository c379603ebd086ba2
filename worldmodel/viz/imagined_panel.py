"""The imagined-future panel of rollout videos: what a driver imagined k steps ago for now, beside what happened.

A driver that plans or imagines exposes, after each action, an ``Intent`` (``driving.driver_protocol``): the
world it imagined, frames at some steps of its horizon, each centred on a pose. The panel of the video frame
of episode step t shows the frame the driver imagined at step t - k for horizon step k, i.e. for step t:

- ``imagined``: the mean over its K futures (the z samples and dropout replicas of a model world);
- ``spread``: (only when K > 1) their standard deviation per channel, a heat map scaled by the largest 99th
  percentile shown so far;
- ``happened``: the recorded traffic at step t rendered from the same pose (the ``oracle`` world at step 0), so
  that the difference from ``imagined`` is the world's error alone (for the oracle world: none);
- ``car's view``: the car's own observation at step t, centred where it actually is (off the imagined pose by
  how far the car left the plan it had k steps ago; the top-down view shows the plan as a path).

Nothing is delayed: each frame pairs a k-step-old prediction with the present, so the first k frames have no
imagined tile. Tiles are drawn as in the prediction videos (``viz.render``): channels lanes, vehicles,
off-road as red, green, blue, the heading to the right, nearest upscaling, a red frame around what was
imagined, grey around the truth, green around what the car observed.
"""

from __future__ import annotations

import numpy as np

from worldmodel.driving.driver_protocol import Intent
from worldmodel.driving.worlds import RenderedWorld
from worldmodel.traffic.view import ViewSpec
from worldmodel.viz.render import IMAGINED_RGB, LABEL_WIDTH_PX, OBSERVED_RGB, TRUTH_RGB, draw_text, framed_tile

#: Without ``--imagined-step``, the panel shows the imagined step nearest this many steps ahead (1 s).
DEFAULT_IMAGINED_STEP = 10
PANEL_HEADER_PX = 20
#: Frame colour of a tile with nothing to show yet.
EMPTY_RGB = (60, 60, 60)
TILE_RGB = {"imagined": IMAGINED_RGB, "spread": IMAGINED_RGB, "happened": TRUTH_RGB, "car's view": OBSERVED_RGB}


def choose_step(frame_steps: tuple[int, ...], wanted: int | None) -> int:
    """The horizon step the panel shows: ``wanted`` (ValueError, one line, when the driver imagines no frame
    there) or, for None, the imagined step nearest ``DEFAULT_IMAGINED_STEP`` (the earlier on a tie)."""
    if not frame_steps:
        raise ValueError("the driver imagines no frame to show")
    if wanted is None:
        return min(frame_steps, key=lambda s: (abs(s - DEFAULT_IMAGINED_STEP), s))
    if wanted not in frame_steps:
        raise ValueError(f"--imagined-step {wanted}: the driver imagines steps {list(frame_steps)}")
    return wanted


class ImaginedPanel:
    """The panel of one episode. ``remember(t, intent)`` after the driver's act at step t; ``rasters(t, ...)``
    and ``render(rasters)`` for the video frame of step t.

    ``step``: k [steps]; ``view``: the geometry of the imagined frames; ``observed_view``: the car's own
    (the environment's); ``spread``: show the spread tile (K > 1); ``world``, ``dt`` [s]: for the header."""

    def __init__(self, step: int, view: ViewSpec, observed_view: ViewSpec, spread: bool, world: str = "",
                 dt: float = 0.1, scale: int = 3) -> None:  # fmt: skip
        self.step, self.view, self.observed_view, self.spread = step, view, observed_view, spread
        self.world, self.dt, self.scale = world, dt, scale
        self._imagined: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # step shown -> (frames [K, 3, H, W], centre [3])
        self._truth = RenderedWorld("oracle", view, reuse=None)
        self._spread_scale = 1e-6

    @classmethod
    def for_intent(cls, intent: Intent | None, wanted: int | None, observed_view: ViewSpec, dt: float,
                   scale: int = 3) -> ImaginedPanel | None:  # fmt: skip
        """The panel of a driver whose first intent is ``intent``; None when it imagines no frames or
        ``wanted`` is 0."""
        if wanted == 0 or intent is None or intent.frames is None:
            return None
        step = choose_step(tuple(intent.frame_steps), wanted)
        view = intent.view or observed_view
        return cls(step, view, observed_view, intent.frames.shape[0] > 1, intent.world, dt, scale)

    def remember(self, t: int, intent: Intent | None) -> None:
        """Keep the frame of ``intent`` (the driver's after its act at step ``t``) at horizon step k: it is
        shown at step t + k. Frames of steps before ``t`` are dropped."""
        self._imagined = {s: entry for s, entry in self._imagined.items() if s >= t}
        if intent is None or intent.frames is None or self.step not in intent.frame_steps:
            return
        f = list(intent.frame_steps).index(self.step)
        self._imagined[t + self.step] = (np.asarray(intent.frames[:, f]), np.asarray(intent.frame_poses[f]))

    def rasters(self, t: int, sim, observed: np.ndarray) -> dict[str, np.ndarray | None]:
        """The panel's views at step ``t``, each ``[3, H, W]`` float32 in [0, 1] (None: not known yet):
        ``imagined``, ``spread`` (when shown), ``happened`` and ``car's view`` (``observed``: the car's
        observation ``[3, H, W]`` uint8 at ``t``). ``sim``: the episode's ``ReplaySimulation``, at step t."""
        out: dict[str, np.ndarray | None] = {"imagined": None}
        if self.spread:
            out["spread"] = None
        out |= {"happened": None, "car's view": np.asarray(observed, np.float32) / 255.0}
        entry = self._imagined.get(t)
        if entry is None:
            return out
        frames, centre = entry  # [K, 3, H, W], [3]
        out["imagined"] = frames.mean(0)
        if self.spread:
            sd = frames.std(0)
            self._spread_scale = max(self._spread_scale, float(np.percentile(sd, 99)))
            out["spread"] = np.clip(sd / self._spread_scale, 0.0, 1.0)
        truth = self._truth.futures([sim], np.asarray(centre, np.float64)[None, None], [0])  # step 0: now
        out["happened"] = truth.images[0, 0, 0].numpy()
        return out

    def render(self, rasters: dict[str, np.ndarray | None]) -> np.ndarray:
        """RGB uint8 ``[h, w, 3]``: a header line and one labelled tile per raster (``rasters``' order)."""
        tiles = []
        for name, image in rasters.items():
            view = self.observed_view if name == "car's view" else self.view
            rgb = TILE_RGB[name] if image is not None else EMPTY_RGB
            tiles.append((name, framed_tile(image, rgb, self.scale, (view.height_px, view.width_px))))
        height = PANEL_HEADER_PX + sum(tile.shape[0] + 4 for _, tile in tiles)
        canvas = np.full((height, LABEL_WIDTH_PX + max(tile.shape[1] for _, tile in tiles), 3), 24, np.uint8)
        draw_text(canvas, f"{self.world} world, imagined {self.step * self.dt:.1f} s ({self.step} steps) ago for now",
              6, 14, scale=0.42)  # fmt: skip
        y = PANEL_HEADER_PX
        for name, tile in tiles:
            draw_text(canvas, name, 4, y + tile.shape[0] // 2 + 5, scale=0.42)
            canvas[y : y + tile.shape[0], LABEL_WIDTH_PX : LABEL_WIDTH_PX + tile.shape[1]] = tile
            y += tile.shape[0] + 4
        return canvas


__all__ = ["DEFAULT_IMAGINED_STEP", "ImaginedPanel", "choose_step"]
