"""Fixtures of the evaluation tests: a micro driving dataset (recordings + episodes, like datasets/<name>/)."""

import pytest
from driving_helpers import make_driving_dataset


@pytest.fixture(scope="session")
def driving_data(tmp_path_factory):
    """Two 30 s recordings of the tiny scenario + their episodes.h5 (see ``driving_helpers``)."""
    return make_driving_dataset(tmp_path_factory.mktemp("driving") / "micro")
