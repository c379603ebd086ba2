"""Episodes across worker processes (step 2 of ``worldmodel.driving.closed_loop``): the episodes are cut into
groups (``episode_groups``), each driven in lockstep by one ``EpisodeRunner``, in this process or in a pool of
workers; results do not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from tqdm import tqdm

from worldmodel.driving.closed_loop_config import EvalPolicyConfig
from worldmodel.driving.episode_runner import EpisodeRunner
from worldmodel.driving.episode_selection import Episode

#: A unit of work (``episode_groups``) holds this many batches of episodes.
GROUP_BATCHES = 2


_RUNNER: EpisodeRunner | None = None  # the worker process's runner (set by _init_worker)


def _init_worker(config: EvalPolicyConfig, files: list[Path], make_driver=None) -> None:
    global _RUNNER
    import torch

    torch.set_num_threads(1)
    _RUNNER = EpisodeRunner(config, files, None if make_driver is None else make_driver())


def _run_in_worker(group: list[Episode]) -> list[dict]:
    return _RUNNER.run_group(group)


def _pool_context(driver: str):
    """The worker start method: "forkserver" with this module (and so torch, OpenCV, h5py) and, for a
    model-based ``driver``, the model drivers imported once in the server (a worker then starts ~2 s sooner
    than with "spawn", which imports them again in every worker); "spawn" where there is no forkserver.
    Never "fork": the parent may hold OpenCV or torch thread pools."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        from worldmodel.driving.drivers import SIMPLE_DRIVERS

        models = [] if driver in SIMPLE_DRIVERS else ["worldmodel.driving.model_drivers"]
        ctx.set_forkserver_preload([__name__, "worldmodel.driving.drivers", *models])
        return ctx
    return mp.get_context("spawn")


def episode_groups(chosen: list[Episode], batch: int) -> list[list[Episode]]:
    """The units of work: consecutive runs of ``GROUP_BATCHES * batch`` episodes. A group is driven in
    lockstep by one process whichever worker gets it, so results do not depend on the number of workers."""
    size = max(1, GROUP_BATCHES * batch)
    return [chosen[i : i + size] for i in range(0, len(chosen), size)]


def run_episodes(config: EvalPolicyConfig, files: list[Path], chosen: list[Episode], driver,
                 make_driver=None) -> list[dict]:  # fmt: skip
    """Records of all episodes, in the order of ``chosen`` (``driver``: used when running in this process;
    each worker builds its own: ``make_driver()``, a picklable callable, or from ``config.driver``)."""
    bar = tqdm(total=len(chosen), desc=f"eval {config.driver}", unit="episode", disable=not config.progress)
    groups = episode_groups(chosen, config.batch)
    try:
        if config.workers <= 1 or len(groups) <= 1:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as in the workers: results must not depend on the worker count
            runner = EpisodeRunner(config, files, make_driver() if driver is None and make_driver else driver)
            try:
                records = []
                for group in groups:
                    records += runner.run_group(group)
                    bar.update(len(group))
                return records
            finally:
                runner.close()
                torch.set_num_threads(threads)
        workers = min(config.workers, len(groups))
        with _pool_context(config.driver).Pool(
            workers, initializer=_init_worker, initargs=(config, files, make_driver)
        ) as pool:
            by_vehicle = {}
            for group_records in pool.imap_unordered(_run_in_worker, groups):
                by_vehicle |= {record["vehicle"]: record for record in group_records}
                bar.update(len(group_records))
        return [by_vehicle[e.vehicle] for e in chosen]
    finally:
        bar.close()
