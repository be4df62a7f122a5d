"""`serving.tensors`: the model server's fast TensorProto writer gives the
very message TensorFlow's `make_tensor_proto` gives, for every dtype and
shape the towers answer with and for those it hands back to TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from serving.tensors import to_numpy, to_proto
from trainer.layers._keras import tf

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("value", [
    RNG.normal(size=(2, 7, 64)).astype(np.float32),  # embeddings
    RNG.normal(size=(3, 5)).astype(np.float32)[:, ::2],  # not contiguous
    np.zeros((0, 4), np.float32),
    RNG.normal(size=(1, 3)),  # float64
    np.arange(6, dtype=np.int64).reshape(2, 3),
    np.arange(4, dtype=np.int32),
    np.array([[True, False]]),  # mask: bool_val, TensorFlow's path
    np.float32(3.0),  # a scalar
    np.array([[b"a", b"bc"]], object),
], ids=lambda v: f"{np.asarray(v).dtype}{list(np.shape(v))}")
def test_to_proto_is_make_tensor_proto(value):
    mine, theirs = to_proto(value), tf.make_tensor_proto(value)
    assert mine.SerializeToString() == theirs.SerializeToString()
    np.testing.assert_array_equal(tf.make_ndarray(mine), value)
    if np.asarray(value).dtype.kind in "fib":
        np.testing.assert_array_equal(to_numpy(mine), value)
