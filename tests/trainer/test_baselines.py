"""Reference baselines against dense NumPy references and the raw order."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import baselines, features
from trainer.evaluation import Corpus


def _corpus(n: int) -> Corpus:
    ids = [f"i{k}".encode() for k in range(n)]
    return Corpus(np.asarray(ids, object), {i: c for c, i in enumerate(ids)}, [frozenset()] * n,
                  np.arange(n, 0, -1).astype(float))


def _batch(histories: list[list[str]], length: int = 6) -> dict:
    hist = np.full((len(histories), length), b"", object)
    for r, h in enumerate(histories):
        hist[r, : len(h)] = [x.encode() for x in h]
    return {features.USER_ID: np.asarray([b"u"] * len(histories), object), features.HISTORY_ITEM_IDS: hist}


def test_co_occurrence_matches_dense_reference():
    rng = np.random.default_rng(0)
    n, window = 12, 3
    sequences = [[f"i{k}".encode() for k in rng.permutation(n)[: rng.integers(2, n)]] for _ in range(9)]
    model = baselines.CoOccurrence(_corpus(n), sequences, window=window)
    counts = np.zeros((n, n))
    for seq in sequences:
        cols = [int(x[1:]) for x in seq]
        for a in range(len(cols)):
            for b in range(len(cols)):
                if a != b and abs(a - b) <= window:
                    counts[cols[a], cols[b]] += 1
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    histories = [["i0", "i3"], ["i5"], ["i7", "i2", "i11"]]
    want = np.stack([p[[int(h[1:]) for h in hist]].sum(axis=0) for hist in histories])
    got = model(_batch(histories))
    np.testing.assert_allclose(got, want, atol=1e-8)
    # The popularity tie-breaker orders otherwise-equal items, nothing else.
    assert np.all(got - want >= 0) and np.all(got - want < 1e-8)


def test_popularity_scores_every_record_alike():
    scores = baselines.Popularity(_corpus(4))(_batch([["i1"], []]))
    np.testing.assert_array_equal(scores, [[4, 3, 2, 1], [4, 3, 2, 1]])


def test_als_ranks_the_history_cluster_first():
    pytest.importorskip("implicit", reason="ALS needs the `implicit` package (pip install -e .[bench])")
    n = 20
    a = [f"i{k}".encode() for k in range(10)]
    b = [f"i{k}".encode() for k in range(10, 20)]
    rng = np.random.default_rng(0)
    sequences = [list(rng.permutation(a)[:6]) for _ in range(30)] + [list(rng.permutation(b)[:6]) for _ in range(30)]
    model = baselines.ALS(_corpus(n), sequences, factors=8, regularization=0.01, alpha=1.0, iterations=10)
    scores = model(_batch([["i0", "i1", "i2"], ["i10", "i11"]]))
    # Best 5 items outside the history come from the history's cluster.
    assert set(np.argsort(-scores[0, 3:])[:5] + 3) <= set(range(3, 10))
    assert set(np.argsort(-scores[1, 12:])[:5] + 12) <= set(range(12, 20))
    assert scores[0, 3:10].mean() > scores[0, 10:].mean() and scores[1, 12:].mean() > scores[1, :10].mean()


@pytest.mark.slow
def test_training_sequences_follow_the_exact_event_order(world):
    from mer_testing import read_examples

    sequences = baselines.training_sequences(f"{world}/train/implicit-*")
    rows = read_examples(f"{world}/train/implicit-*")
    by_user: dict = {}
    for r in rows:
        by_user.setdefault(r[features.USER_ID], []).append(r)
    assert len(sequences) == len(by_user)
    assert sum(map(len, sequences.values())) == len(rows) + len(by_user)
    checked = 0
    for user, seq in sequences.items():
        # The user's last example: history (<= 50) + target = the sequence's tail.
        user_rows = by_user[user]
        last = max(user_rows, key=lambda r: (r[features.TARGET_TIMESTAMP], len(r[features.HISTORY_ITEM_IDS])))
        tail = list(last[features.HISTORY_ITEM_IDS]) + [last[features.TARGET_ITEM_ID]]
        assert seq[-len(tail):] == tail
        checked += len(seq) <= 51
    assert checked > 0
