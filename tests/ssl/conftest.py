"""Fixtures of the SSL tests: the micro episodes file (shared with the training tests' helper)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fm_helpers import write_micro_episodes


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "ssl_micro_episodes.h5"
    return path if path.exists() else write_micro_episodes(path, splits=(0, 0, 0, 0, 0, 0, 1, 1, 2, 2), frames=40)
