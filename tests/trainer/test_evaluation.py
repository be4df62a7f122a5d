"""SPEC §6 scoring against brute-force NumPy references and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import evaluation


def _reference_rank(scores, target, history, allowed=None):
    """One record, by the letter of SPEC §6.5."""
    if target < 0 or (allowed is not None and not allowed[target]):
        return np.inf
    excluded = {h for h in history if h >= 0 and h != target}
    higher = 0
    for c, s in enumerate(scores):
        if c in excluded or (allowed is not None and not allowed[c]):
            continue
        higher += s > scores[target]
    return 1.0 + higher


@pytest.mark.parametrize("filtered", [False, True])
def test_rank_targets_matches_reference(filtered):
    rng = np.random.default_rng(0)
    b, c, length = 40, 60, 7
    scores = rng.integers(0, 20, (b, c)).astype(np.float32)  # ties on purpose
    targets = rng.integers(-1, c, b)
    history = rng.integers(-1, c, (b, length))
    allowed = rng.random((b, c)) < 0.6 if filtered else None
    got, _ = evaluation.rank_targets(scores.copy(), targets, history, allowed)
    want = [_reference_rank(scores[r], targets[r], history[r], None if allowed is None else allowed[r])
            for r in range(b)]
    np.testing.assert_array_equal(got, want)


def test_hand_made_hit_rate():
    # Corpus of 4 items; user 0: target 2 scores 0.9, only item 0 (0.95)
    # beats it -> rank 2. User 1: item 3 beats the target but sits in the
    # history, so it is excluded -> rank 1. User 2: target outside the corpus.
    scores = np.array([[0.95, 0.1, 0.9, 0.2], [0.1, 0.2, 0.5, 0.9], [0.3, 0.2, 0.1, 0.0]], np.float32)
    ranks, _ = evaluation.rank_targets(scores, np.array([2, 2, -1]), np.array([[1, -1], [3, 0], [-1, -1]]))
    np.testing.assert_array_equal(ranks, [2.0, 1.0, np.inf])
    assert np.mean(ranks <= 1) == pytest.approx(1 / 3)
    assert np.mean(ranks <= 2) == pytest.approx(2 / 3)


def test_top_k_orders_and_skips_excluded():
    scores = np.array([[0.1, 0.5, -np.inf, 0.3]], np.float32)
    np.testing.assert_array_equal(evaluation.top_k(scores.copy(), 4), [[1, 3, 0, -1]])


def test_bootstrap_ci_matches_binomial_width():
    rng = np.random.default_rng(1)
    hits = (rng.random(4000) < 0.3).astype(float)
    lo, hi = evaluation.bootstrap_ci(hits, resamples=2000, seed=0)
    p = hits.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / len(hits))
    assert lo < p < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_summarize_pools_seeds_and_segments():
    seg = np.array(["a", "a", "b", "b"], object)
    runs = [evaluation.RecordResults(ranks=np.array([1.0, 30, 60, np.inf]), segments=seg),
            evaluation.RecordResults(ranks=np.array([1.0, 10, 300, 2]), segments=seg)]
    out = evaluation.summarize(runs, ks=(20, 50))
    assert out["hr"]["20"]["per_seed"] == [0.25, 0.75]
    assert out["hr"]["20"]["mean"] == pytest.approx(0.5)
    assert out["segments"]["a"]["hr"]["50"]["mean"] == pytest.approx(1.0)
    assert out["segments"]["b"]["hr"]["50"]["per_seed"] == [0.0, 0.5]
    assert out["misses_outside_corpus"] == 1


def test_history_segments_and_overlap():
    hist = np.array([[b"x"] + [b""] * 49, [b"x"] * 5 + [b""] * 45, [b"x"] * 50], object)
    assert evaluation.history_segment(hist).tolist() == ["1-4", "5-19", "50+"]
    implicit = np.array([[0, 1, 2, -1], [5, 6, 7, 8]])
    assert evaluation.candidate_overlap(implicit, [{1, 9}, {5, 6, 7, 8}]) == pytest.approx((0.5 + 1.0) / 2)
    assert evaluation.candidate_overlap(implicit, [set(), {9}]) == 0.0


def test_corpus_topic_mask_and_columns():
    corpus = evaluation.Corpus(np.array([b"i1", b"i2", b"i3"], object), {b"i1": 0, b"i2": 1, b"i3": 2},
                               [frozenset({b"t1"}), frozenset({b"t1", b"t2"}), frozenset()],
                               np.array([3.0, 2.0, 1.0]))
    np.testing.assert_array_equal(corpus.topic_mask(np.array([b"t1", b"t2", b"zz"], object)),
                                  [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(corpus.columns(np.array([[b"i3", b""]], object)), [[2, -1]])


class _TwoEmbeddingModel:
    """Stand-in with fixed towers to check max-over-embeddings scoring."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.items = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])

    def item_embeddings(self, ids):
        return self.tf.gather(self.items, self.tf.strings.to_number(ids, self.tf.int32))

    def user_embeddings(self, inputs, training=None, conditions=None):
        b = self.tf.shape(inputs["history_item_ids"])[0]
        emb = self.tf.tile(self.tf.constant([[[1.0, 0.0], [0.0, 1.0]]]), [b, 1, 1])
        mask = self.tf.tile(self.tf.constant([[True, False]]), [b, 1])
        return {"embeddings": emb, "mask": mask, "importance": self.tf.cast(mask, self.tf.float32)}


def test_model_scorer_takes_max_over_unmasked_embeddings():
    corpus = evaluation.Corpus(np.array([b"0", b"1", b"2"], object), {b"0": 0, b"1": 1, b"2": 2},
                               [frozenset()] * 3, np.ones(3))
    scorer = evaluation.ModelScorer(_TwoEmbeddingModel(), corpus)
    batch = {"user_id": np.array([b"u"], object), "history_item_ids": np.array([[b""]], object),
             "history_negative": np.zeros((1, 1), np.int64)}
    # Only embedding (1, 0) is unmasked: scores are the items' first coordinate.
    np.testing.assert_allclose(scorer(batch), [[1.0, 0.0, 0.6]], atol=1e-6)


def test_history_segments_are_reported_in_length_order():
    seg = np.array(["50+", "5-19", "1-4", "20-49"], object)
    out = evaluation.summarize([evaluation.RecordResults(ranks=np.ones(4), segments=seg)], ks=(20,))
    assert list(out["segments"]) == ["1-4", "5-19", "20-49", "50+"]
