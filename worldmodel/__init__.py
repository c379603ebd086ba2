"""worldmodel: world models for model-based control, on highway traffic.

Rooms, from low to high; a room imports only rooms above it in this list (``tests/test_import_graph.py``):

- ``files``: safe writing (atomic files, JSON, directories).
- ``traffic``: the simulator core (road, scenario, bots, kinematics, rasteriser); numpy + OpenCV, no HDF5.
- ``costs``: the per-frame costs (proximity, lane, off-road) of an ego view.
- ``data``: HDF5 formats, importers, recording, extraction, training windows, replay of a recording.
- ``nn``: backbone, forward model, policies; checkpoint files, DDP helpers, backbone export.
- ``driving``: environments, imagination, objective, world providers, planners, drivers, closed-loop harness.
- ``training``: the shared loop, forward-model and policy training.
- ``ssl``: self-supervised pretraining of the backbone (on the training loop).
- ``viz``: videos and figures (predictions, closed-loop rollouts, scenario runs).
- ``evaluation``: forward-model metrics, the closed-loop results table.
- ``bench``: throughput benchmarks.
- ``cli``: the ``worldmodel`` command.

Importing this package runs nothing and registers nothing; ``worldmodel.driving.envs`` registers the
gymnasium environments when it is imported.
"""

__version__ = "0.1.0"
