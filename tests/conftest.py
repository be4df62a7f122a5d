"""Shared fixtures: a fixed NumPy seed for every test."""

import numpy as np
import pytest

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(1234)
    yield
