"""worldmodel: world models for model-based control, on highway traffic.

Subpackages: ``traffic`` (simulator, rasteriser), ``data`` (HDF5 formats, importers), ``nn`` (backbone,
forward model, policies), ``training``, ``evaluation``; modules ``costs``, ``planning``, ``envs``.
Importing this package runs nothing and registers nothing; ``worldmodel.envs`` registers the gymnasium
environments when it is imported (gymnasium's entry point does that on ``gymnasium.make``).
"""

__version__ = "0.1.0"
