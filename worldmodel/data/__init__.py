"""Recorded traffic and datasets in HDF5.

Modules: ``hdf5`` (DataError, atomic output), ``trajectories`` (TrajectoryWriter, TrajectoryReader),
``episodes`` (EpisodeWriter, EpisodeReader, split_for_vehicle), ``record`` (simulated recordings),
``ngsim`` (import_ngsim), ``ppuu`` (import_ppuu), ``extract`` (trajectories -> episodes), ``recipes``
(datasets/*.toml), ``inspect`` (inspect_file), ``windows`` (WindowDataset for training), ``replay`` (ReplaySimulation: a
recording replayed as traffic around one controlled car; replay_drift). Nothing runs here.
"""

__all__ = [
    "episodes",
    "extract",
    "hdf5",
    "inspect",
    "ngsim",
    "ppuu",
    "recipes",
    "record",
    "replay",
    "trajectories",
    "windows",
]
