"""Fixtures of the evaluation tests: the micro episodes file and a trained micro run (shared by the session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fm_helpers import trained_micro_run, write_micro_episodes


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "micro_episodes.h5"
    return path if path.exists() else write_micro_episodes(path)


@pytest.fixture(scope="session")
def micro_run(micro_data, tmp_path_factory) -> Path:
    return trained_micro_run(micro_data, tmp_path_factory.getbasetemp() / "micro_run")
