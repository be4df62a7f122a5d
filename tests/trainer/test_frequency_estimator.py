"""Streaming frequency estimation on a Zipf stream, and checkpointing."""

import numpy as np
import pytest

from trainer.layers._keras import tf
from trainer.layers.frequency_estimator import StreamingFrequencyEstimator

NUM_ITEMS, BATCH = 10_000, 256


def _zipf_stream(steps, seed=0):
    rng = np.random.default_rng(seed)
    q = 1.0 / np.arange(1, NUM_ITEMS + 1)
    q /= q.sum()
    ids = np.array([f"item{i}" for i in range(NUM_ITEMS)])
    return q, ids[rng.choice(NUM_ITEMS, size=(steps, BATCH), p=q)]


def test_top100_within_15_percent_of_truth_after_warmup():
    q, stream = _zipf_stream(8000)
    est = StreamingFrequencyEstimator(num_buckets=1 << 20, alpha=0.005)
    step = tf.function(lambda ids: est(ids, training=True))
    top = tf.constant([f"item{i}" for i in range(100)])
    estimates = []
    for t, batch in enumerate(stream):
        step(tf.constant(batch))
        if t >= 7000:  # after warm-up: time-average of the online estimate
            estimates.append(est(top, training=False).numpy())
    estimate = np.mean(estimates, axis=0)
    truth = BATCH * q[:100]  # expected occurrences per batch
    rel = np.abs(estimate - truth) / truth
    assert rel.max() < 0.15, (rel.max(), int(rel.argmax()))
    # Frequent items (tens per batch) get p > 1; a per-bucket single update
    # would cap them at 1 occurrence per step.
    assert estimate[0] > 20


def test_state_survives_checkpoint_round_trip(tmp_path):
    _, stream = _zipf_stream(50, seed=1)
    est = StreamingFrequencyEstimator(num_buckets=4096, alpha=0.05)
    for batch in stream:
        est(tf.constant(batch), training=True)
    probe = tf.constant(["item0", "item5", "item999"])
    before = est(probe, training=False).numpy()
    path = tf.train.Checkpoint(estimator=est).write(str(tmp_path / "ckpt"))
    fresh = StreamingFrequencyEstimator(num_buckets=4096, alpha=0.05)
    fresh(probe, training=False)  # build
    assert not np.allclose(fresh(probe, training=False).numpy(), before)
    tf.train.Checkpoint(estimator=fresh).read(path).assert_consumed()
    np.testing.assert_allclose(fresh(probe, training=False).numpy(), before)
    assert float(fresh.step.numpy()) == 50.0


def test_warm_start_sets_the_expected_rate_of_seen_items():
    est = StreamingFrequencyEstimator(num_buckets=1 << 16, initial_gap=100.0)
    est(tf.constant(["a"]), training=False)  # builds
    est.warm_start(np.array(["a", "b"], object), np.array([50, 2]), batches_per_pass=10.0)
    got = est(tf.constant(["a", "b", "never"]), training=False).numpy()
    # 50 in 10 batches: 5 a batch; 2 in 10: 0.2; unseen keeps the prior 1/100.
    np.testing.assert_allclose(got, [5.0, 0.2, 0.01], rtol=1e-6)
    est(tf.constant(["b"] * 4), training=True)  # the moving average goes on from there
    assert est(tf.constant(["b"]), training=False).numpy()[0] != pytest.approx(0.2)
