"""Pictures and videos: what a model predicted, what a driver did, what a scenario looks like.

Modules: ``render`` (write_video, prediction strips, render_predictions, plot_fm_eval), ``rollout_video``
(render_rollout: a closed-loop episode as a video, with the driver's plan and, from ``imagined_panel``, what it
imagined beside what happened), ``sim_run`` (``worldmodel sim``: a scenario's top-down
video and realism summary). Import what you need from the module; nothing runs here.
"""

__all__ = ["imagined_panel", "render", "rollout_video", "sim_run"]
