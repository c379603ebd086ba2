"""Dataset recipes (``datasets/<name>.toml``): a scenario, recordings (seeds x durations) and extraction
settings; ``build`` records each one to ``datasets/<name>/trajectories-<seed>.h5`` and extracts them all
into ``datasets/<name>/episodes.h5``.

    name = "tiny"
    scenario = "tiny"          # envs/tiny.toml
    warmup_s = 60.0
    [[recordings]]
    seed = 0
    minutes = 3.0
    [extract]
    workers = 2
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import tomllib

from worldmodel.data.extract import ExtractConfig, extract
from worldmodel.data.hdf5 import DataError
from worldmodel.data.record import RecordConfig, record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recording:
    """One simulated recording."""

    seed: int = 0
    """Seed of the simulation."""
    minutes: float = 15.0
    """Recorded duration [min]."""


@dataclass(frozen=True)
class Recipe:
    """How a dataset is built."""

    name: str
    """Dataset name: output goes to ``<datasets dir>/<name>/``."""
    scenario: str
    """Scenario name in envs/ or a TOML path."""
    warmup_s: float = 120.0
    """Simulated time before each recording starts [s]."""
    recordings: tuple[Recording, ...] = (Recording(),)
    """The recordings (NGSIM I-80 has three of 15 minutes)."""
    workers: int = 2
    """Worker processes for extraction."""
    split_seed: int = 0
    """Seed of the 80/10/10 split by vehicle."""


_TOP_KEYS = {"name", "scenario", "warmup_s", "recordings", "extract", "description"}


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe; errors name the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "no such recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise DataError(path, f"not valid TOML ({e})") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise DataError(path, f"unknown key(s) {sorted(unknown)} (allowed: {sorted(_TOP_KEYS)})")
    for key in ("name", "scenario"):
        if not isinstance(data.get(key), str):
            raise DataError(path, f"'{key}' must be a string")
    recordings = []
    for i, rec in enumerate(data.get("recordings", [{}])):
        bad = set(rec) - {"seed", "minutes"}
        if bad:
            raise DataError(path, f"recordings[{i}]: unknown key(s) {sorted(bad)}")
        r = Recording(seed=int(rec.get("seed", i)), minutes=float(rec.get("minutes", 15.0)))
        if r.minutes <= 0:
            raise DataError(path, f"recordings[{i}].minutes must be > 0")
        recordings.append(r)
    ex = data.get("extract", {})
    bad = set(ex) - {"workers", "split_seed"}
    if bad:
        raise DataError(path, f"extract: unknown key(s) {sorted(bad)}")
    seeds = [r.seed for r in recordings]
    if not recordings:
        raise DataError(path, "'recordings' must list at least one recording")
    if len(set(seeds)) != len(seeds):
        raise DataError(path, "recordings must have distinct seeds")
    if not float(data.get("warmup_s", 120.0)) >= 0:
        raise DataError(path, "'warmup_s' must be >= 0")
    if int(ex.get("workers", 2)) < 1:
        raise DataError(path, "extract.workers must be >= 1")
    return Recipe(name=data["name"], scenario=data["scenario"], warmup_s=float(data.get("warmup_s", 120.0)),
                  recordings=tuple(recordings), workers=int(ex.get("workers", 2)),
                  split_seed=int(ex.get("split_seed", 0)))  # fmt: skip


def build(recipe_path: str | Path, out_dir: str | Path | None = None, rebuild: bool = False,
          progress: bool = True) -> dict:  # fmt: skip
    """Record every recording of the recipe (skipping those already there unless ``rebuild``) and extract
    them into one ``episodes.h5``. Returns a summary."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    out = Path(out_dir) if out_dir else recipe_path.parent / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"recipe": str(recipe_path), "out_dir": str(out), "recordings": []}
    paths = []
    for rec in recipe.recordings:
        path = out / f"trajectories-{rec.seed}.h5"
        paths.append(path)
        if path.exists() and not rebuild:
            log.info("keeping %s", path)
            summary["recordings"].append({"out": str(path), "kept": True})
            continue
        config = RecordConfig(scenario=recipe.scenario, minutes=rec.minutes, warmup_s=recipe.warmup_s,
                              seed=rec.seed, progress=progress)  # fmt: skip
        summary["recordings"].append(record(config, path))
    config = ExtractConfig(workers=recipe.workers, split_seed=recipe.split_seed, progress=progress)
    summary["extract"] = extract(paths, out / "episodes.h5", config)
    return summary
