"""Shared fixtures: a fixed NumPy seed for every test; the prepared
`synthetic-small` world, prepared once per session."""

import numpy as np
import pytest

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(1234)
    yield


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The `synthetic-small` world prepared by the Beam pipeline (DirectRunner),
    shared by every test that trains or reads it: tests must treat it as
    read-only (write models, copies and logs under their own `tmp_path`)."""
    from mer_testing import prepare_small_world

    return prepare_small_world(str(tmp_path_factory.mktemp("small_world")))
