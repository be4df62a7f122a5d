"""Every layer: call, use in a functional model, get_config and SavedModel round trips.

The SavedModel is loaded with `tf.saved_model.load` and called through its
`serving_default` signature, as TF Serving does.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.layers._keras import keras, tf
from trainer.layers.association import InterestAssociation
from trainer.layers.dhen import DHEN
from trainer.layers.differentiable_clustering import DifferentiableClustering
from trainer.layers.frequency_estimator import StreamingFrequencyEstimator
from trainer.layers.interest_tokens import InterestTokens
from trainer.layers.item_feature_store import ItemFeatureStore
from trainer.layers.item_summarizer import ItemSummarizer
from trainer.layers.mlp import MLP
from trainer.layers.parallel_masknet import ParallelMaskNet
from trainer.layers.self_attentive import SelfAttentiveInterests
from trainer.layers.sequence_encoder import SequenceEncoder
from trainer.layers.subsequence_concepts import SubsequenceConcepts
from trainer.layers.transformer_encoder import TransformerEncoder

rng = np.random.default_rng(0)
B, L, D, K = 3, 6, 8, 3
ITEMS = rng.normal(size=(B, L, D)).astype(np.float32)
MASK = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5], bool)
VALID = MASK & np.array([[1, 0, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1], [1] * 6], bool)
SEQ = {"items": ITEMS, "valid": VALID, "mask": MASK}


def _store():
    layer = ItemFeatureStore(["a", "b", "c"], content_dim=2, max_topics=2, num_categorical=1)
    layer.build(tf.TensorShape([None]))
    layer.set_tables(np.arange(8, dtype=np.float32).reshape(4, 2), np.array([[0, 0], [1, 2], [2, 0], [1, 0]], np.int32),
                     np.array([[0], [1], [2], [1]], np.int32), np.array([0, 1, 0, 1], np.int32))
    return layer


def _concepts():
    layer = SubsequenceConcepts(num_interests=2, num_concepts=4, table_size=10)
    layer.build(None)
    layer.item_concept.assign(np.array([0, 1, 1, 2, 3, 0, 1, 2, 3, 3], np.int32))
    return layer


def _estimator():
    layer = StreamingFrequencyEstimator(num_buckets=64, alpha=0.5)
    ids = tf.constant(["a", "a", "b"])
    layer(ids, training=True)
    layer(ids, training=True)
    return layer


CASES = {
    "dcm": (lambda: DifferentiableClustering(K, 5, 3, "va_fpi", True, True), SEQ),
    "dcm_no_validity": (lambda: DifferentiableClustering(K, 5, 2, "fpi", False, False), SEQ),
    "mind": (lambda: DifferentiableClustering(K, 5, 3, "gaussian", False, True, seed=3), SEQ),
    "mind_original": (lambda: DifferentiableClustering(K, 5, 3, "gaussian", False, True, seed=3, logits="accumulate",
                                                       dynamic_interests=True), SEQ),
    "self_attentive": (lambda: SelfAttentiveInterests(K, 4), {"items": ITEMS, "mask": MASK}),
    "interest_tokens": (lambda: InterestTokens(K, 5), {"items": ITEMS, "mask": MASK}),
    "subsequence": (_concepts, {"items": ITEMS, "mask": MASK,
                                "item_index": rng.integers(0, 10, size=(B, L)).astype(np.int32)}),
    "association": (lambda: InterestAssociation("gumbel", 0.5),
                    {"embeddings": rng.normal(size=(B, K, D)).astype(np.float32), "mask": MASK[:, :K],
                     "target": rng.normal(size=(B, D)).astype(np.float32)}),
    "frequency": (_estimator, np.array(["a", "b", "zz"])),
    "mlp": (lambda: MLP([7], 4), rng.normal(size=(B, D)).astype(np.float32)),
    "masknet": (lambda: ParallelMaskNet(2, 6, 0.5, 4), rng.normal(size=(B, D)).astype(np.float32)),
    "sequence_encoder": (lambda: SequenceEncoder(4, 1, 2, 16), {"items": ITEMS, "valid": VALID}),
    "transformer": (lambda: TransformerEncoder(2, 2, 16), rng.normal(size=(B, 3, D)).astype(np.float32)),
    "dhen": (lambda: DHEN(8, 1, 2, 16, 16, 2, 8, 0.5, 16, 5),
             [rng.normal(size=(B, 3)).astype(np.float32), rng.normal(size=(B, 7)).astype(np.float32)]),
    "item_store": (_store, np.array([["a", "zz"], ["c", ""], ["b", "a"]])),
    "item_summarizer": (lambda: ItemSummarizer(4, 3, 3, 4, 3, 2, 8, 5),
                        {"index": np.array([[1, 2], [0, 3]], np.int32),
                         "content": rng.normal(size=(2, 2, 2)).astype(np.float32),
                         "topic_ids": np.array([[[1, 2], [2, 0]], [[0, 0], [1, 0]]], np.int32),
                         "categorical_ids": np.array([[[1], [2]], [[0], [1]]], np.int32)}),
}


def _keras_input(value, name):
    value = np.asarray(value)
    dtype = tf.string if value.dtype.kind in "US" else tf.as_dtype(value.dtype)
    return keras.Input(shape=value.shape[1:], dtype=dtype, name=name)


def _structure(inputs, fn):
    if isinstance(inputs, dict):
        return {k: fn(v, k) for k, v in inputs.items()}
    if isinstance(inputs, list):
        return [fn(v, f"field_{i}") for i, v in enumerate(inputs)]
    return fn(inputs, "x")


def _flat(outputs) -> dict:
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    return {"output": np.asarray(outputs)}


def _assert_same(a, b):
    a, b = _flat(a), _flat(b)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].dtype.kind in "fc":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(params=sorted(CASES))
def case(request):
    factory, inputs = CASES[request.param]
    layer = factory()
    tensors = _structure(inputs, lambda v, _: tf.constant(v))
    expected = layer(tensors, training=False)
    return request.param, factory, layer, inputs, expected


def test_call_is_deterministic_at_inference(case):
    _, _, layer, inputs, expected = case
    again = layer(_structure(inputs, lambda v, _: tf.constant(v)), training=False)
    _assert_same(expected, again)


def _named_outputs(outputs):
    """Dict outputs keep their keys as signature output names."""
    if isinstance(outputs, dict):
        return {k: keras.layers.Lambda(lambda t: t, name=f"out_{k}")(v) for k, v in outputs.items()}
    return outputs


def _signature_feed(inputs) -> dict:
    if isinstance(inputs, dict):
        return {k: tf.constant(v) for k, v in inputs.items()}
    if isinstance(inputs, list):
        return {f"field_{i}": tf.constant(v) for i, v in enumerate(inputs)}
    return {"x": tf.constant(inputs)}


def test_functional_model_predict_and_savedmodel(case, tmp_path):
    name, _, layer, inputs, expected = case
    symbolic = _structure(inputs, _keras_input)
    model = keras.Model(symbolic, _named_outputs(layer(symbolic, training=False)))
    _assert_same(expected, model(_structure(inputs, lambda v, _: tf.constant(v)), training=False))
    path = str(tmp_path / name)
    model.save(path, save_format="tf")
    serving = tf.saved_model.load(path).signatures["serving_default"]
    got = serving(**_signature_feed(inputs))
    want = _flat(expected)
    if len(want) == 1:
        (value,) = got.values()
        _assert_same(want["output"], value)
    else:
        _assert_same(want, {k: got[f"out_{k}"] for k in want})


def test_config_round_trip(case):
    name, factory, layer, inputs, expected = case
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    feed = _structure(inputs, lambda v, _: tf.constant(v))
    clone(feed, training=False)  # build
    clone.set_weights(layer.get_weights())
    _assert_same(expected, clone(feed, training=False))
