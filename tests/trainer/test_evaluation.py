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


# --- Chunked scoring (issue 16): equal to the whole-corpus computation. ---


class _HistoryModel:
    """Stand-in whose K user embeddings are the items of the first K history
    entries (masked where the history is empty): integer items give integer
    scores, so ties are everywhere and exact."""

    def __init__(self, items: np.ndarray, k: int):
        import tensorflow as tf

        self.tf, self.k = tf, k
        self.items = tf.constant(items, tf.float32)

    def item_embeddings(self, ids):
        return self.tf.gather(self.items, self.tf.strings.to_number(ids, self.tf.int32))

    def user_embeddings(self, inputs, training=None, conditions=None):
        tf = self.tf
        history = inputs["history_item_ids"][:, : self.k]
        mask = tf.not_equal(history, "")
        emb = self.item_embeddings(tf.where(mask, history, "0"))
        return {"embeddings": emb, "mask": mask, "importance": tf.cast(mask, tf.float32)}


def _chunk_case(rng, size: int, records: int, integer: bool, length: int = 6):
    ids = np.array([str(c).encode() for c in range(size)], object)
    topics = [frozenset(f"t{t}".encode() for t in rng.choice(4, rng.integers(0, 3), replace=False))
              for _ in range(size)]
    corpus = evaluation.Corpus(ids, {i: c for c, i in enumerate(ids)}, topics, np.ones(size))
    items = rng.integers(-2, 3, (size, 4)) if integer else rng.normal(size=(size, 4))
    history = rng.integers(0, size, (records, length)).astype(str).astype(object)
    history[rng.random((records, length)) < 0.3] = ""
    history = np.vectorize(lambda s: s.encode())(history)
    target = rng.integers(0, size, records).astype(str).astype(object)
    target[::7] = "missing"  # outside the corpus: a miss
    target[1::9] = history[1::9, 0]  # target also in the history: still competes
    batch = {"user_id": np.array([f"u{r}".encode() for r in range(records)], object),
             "target_item_id": np.vectorize(lambda s: s if isinstance(s, bytes) else s.encode())(target),
             "history_item_ids": history, "history_negative": np.zeros((records, length), np.int64),
             "condition_topic": np.array([f"t{t}".encode() for t in rng.integers(0, 4, records)], object)}
    return corpus, items, batch


def _unchunked(score, corpus, batch, k):
    """evaluate_scorer's computation before chunking: the whole `[b, C]`."""
    target = corpus.columns(batch["target_item_id"])
    history = corpus.columns(batch["history_item_ids"])
    raw = np.asarray(score(batch), np.float32)
    ranks, masked = evaluation.rank_targets(raw.copy(), target, history)
    franks, _ = evaluation.rank_targets(raw, target, history, corpus.topic_mask(batch["condition_topic"]))
    best = evaluation.top_k(masked, k)
    return ranks, franks, best, np.take_along_axis(masked, np.maximum(best, 0), axis=1)


@pytest.mark.parametrize("integer", [True, False], ids=["ties", "floats"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_chunked_evaluation_equals_unchunked(integer, chunk_size):
    rng = np.random.default_rng(3)
    corpus, items, batch = _chunk_case(rng, size=150, records=48, integer=integer)
    scorer = evaluation.ModelScorer(_HistoryModel(items, 3), corpus)
    ranks, franks, best, best_scores = _unchunked(scorer, corpus, batch, 10)
    got = evaluation.evaluate_scorer(scorer, corpus, iter([batch]), filtered=True, coverage_k=10,
                                     keep_candidates=10, chunk_size=chunk_size)
    assert np.isinf(ranks).any() and (ranks[np.isfinite(ranks)] > 1).any()
    np.testing.assert_array_equal(got.ranks, ranks)
    np.testing.assert_array_equal(got.filtered_ranks, franks)
    # Ties at the k-th score may pick other items; the scores listed are equal.
    got_scores = np.take_along_axis(scorer(batch), np.maximum(got.candidates, 0), axis=1)
    np.testing.assert_array_equal(np.where(got.candidates >= 0, got_scores, -np.inf),
                                  np.where(best >= 0, best_scores, -np.inf))
    if not integer:
        np.testing.assert_array_equal(got.candidates, best)


def test_chunked_evaluation_of_a_dense_scorer_equals_unchunked():
    """A scorer without `column_scores` (the baselines) is sliced, same ranks."""
    rng = np.random.default_rng(4)
    corpus, _, batch = _chunk_case(rng, size=90, records=30, integer=True)
    dense = rng.integers(0, 6, (30, 90)).astype(np.float32)
    ranks, franks, best, _ = _unchunked(lambda b: dense.copy(), corpus, batch, 5)
    got = evaluation.evaluate_scorer(lambda b: dense.copy(), corpus, iter([batch]), filtered=True,
                                     coverage_k=5, chunk_size=8)
    np.testing.assert_array_equal(got.ranks, ranks)
    np.testing.assert_array_equal(got.filtered_ranks, franks)


def test_running_top_k_breaks_ties_by_column():
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 3.0, 2.0]], np.float32)
    for chunk in (1, 2, 4, 6):
        _, _, best = evaluation.scan_corpus(lambda cols: scores[:, cols].copy(), 6, np.array([-1]),
                                            np.array([[-1]]), k=5, chunk_size=chunk)
        np.testing.assert_array_equal(best, [[1, 2, 4, 5, 0]])
    _, _, best = evaluation.scan_corpus(lambda cols: scores[:, cols].copy(), 6, np.array([-1]),
                                        np.array([[4]]), k=6, chunk_size=4)
    np.testing.assert_array_equal(best, [[1, 2, 5, 0, -1, -1]])  # 4 is history, 3 scores -inf


def test_served_hits_and_explicit_candidates_do_not_depend_on_chunk_size():
    rng = np.random.default_rng(5)
    corpus, items, batch = _chunk_case(rng, size=120, records=20, integer=False)
    scorer = evaluation.ModelScorer(_HistoryModel(items, 3), corpus,
                                    conditions=lambda b: np.stack([b["condition_topic"]] * 3, axis=1))
    whole = evaluation.served_hits(scorer, corpus, iter([batch]), ks=(5, 20), chunk_size=10**6)
    for chunk in (1, 13):
        hits = evaluation.served_hits(scorer, corpus, iter([batch]), ks=(5, 20), chunk_size=chunk)
        assert all(np.array_equal(hits[k], whole[k]) for k in whole)
    want = evaluation.explicit_candidates(scorer, corpus, batch, 9, chunk_size=10**6)
    assert evaluation.explicit_candidates(scorer, corpus, batch, 9, chunk_size=13) == want
    assert all(all(corpus.carries(np.array(sorted(s)), np.array([batch["condition_topic"][r]] * len(s))))
               for r, s in enumerate(want) if s)


def test_chunked_evaluation_memory_is_bounded_by_the_chunk():
    """200k items, 8 records, 4 embeddings: unchunked, the `[b, K, C]` scores
    alone are 8 * 4 * 200,000 * 4 B = 25.6 MB; chunked by 4,096 columns the
    whole evaluation must stay within a few `[b, K, chunk]` arrays (0.5 MB)."""
    import tracemalloc

    rng = np.random.default_rng(6)
    size, records, chunk = 200_000, 8, 4096
    corpus, _, batch = _chunk_case(rng, size=size, records=records, integer=False)
    scorer = evaluation.ModelScorer(_HistoryModel(rng.normal(size=(size, 16)).astype(np.float32), 4), corpus)
    scorer.embed(batch)  # traces the tf.function outside the measurement
    evaluation.evaluate_scorer(scorer, corpus, iter([batch]), filtered=True, coverage_k=50,
                               chunk_size=chunk)
    tracemalloc.start()
    try:
        got = evaluation.evaluate_scorer(scorer, corpus, iter([batch]), filtered=True, coverage_k=50,
                                         chunk_size=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    unchunked = records * 4 * size * 4
    assert peak < 8 * records * 4 * chunk * 4 < unchunked / 5, peak
    assert len(got.ranks) == records
