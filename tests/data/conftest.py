"""Fixtures of the data tests (helpers live in ``data_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import write_episodes, write_trajectories


@pytest.fixture
def trajectories_file(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "trajectories.h5"
    return path, write_trajectories(path)


@pytest.fixture
def episodes_file(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "episodes.h5"
    return path, write_episodes(path)
