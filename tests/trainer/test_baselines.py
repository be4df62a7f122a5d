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


def _ease_reference(sequences: list[list[bytes]], n: int, l2: float) -> np.ndarray:
    """Steck 2019, eq. 8 verbatim: B = I - P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹."""
    x = np.zeros((len(sequences), n))
    for u, seq in enumerate(sequences):
        x[u, [int(i[1:]) for i in seq]] = 1.0
    p = np.linalg.inv(x.T @ x + l2 * np.eye(n))
    return np.eye(n) - p @ np.diag(1.0 / np.diag(p))


def _random_sequences(n: int, users: int, seed: int) -> list[list[bytes]]:
    rng = np.random.default_rng(seed)
    return [[f"i{k}".encode() for k in rng.permutation(n)[: rng.integers(2, n)]] for _ in range(users)]


@pytest.mark.parametrize("l2", [0.5, 20.0])
def test_ease_matches_the_closed_form(l2):
    n = 9
    sequences = _random_sequences(n, 14, seed=3)
    model = baselines.EASE(_corpus(n), sequences, l2=l2)
    want = _ease_reference(sequences, n, l2)
    assert np.all(np.diag(model.weights) == 0)  # exactly: an item never explains itself
    np.testing.assert_allclose(model.weights, want, atol=1e-5)
    histories = [["i0", "i3"], ["i5"], ["i7", "i2", "i8"], []]
    expected = np.stack([want[[int(h[1:]) for h in hist]].sum(axis=0) for hist in histories])
    np.testing.assert_allclose(model(_batch(histories)), expected, atol=1e-5)
    assert model.params == {"l2": l2}


def test_ease_ranks_the_co_occurring_item_first():
    # i0 and i1 are always engaged together, the other items at random.
    rng = np.random.default_rng(0)
    n = 10
    sequences = [[b"i0", b"i1"] + [f"i{k}".encode() for k in rng.permutation(range(2, n))[:3]] for _ in range(12)]
    sequences += [[f"i{k}".encode() for k in rng.permutation(range(2, n))[:4]] for _ in range(20)]
    scores = baselines.EASE(_corpus(n), sequences, l2=5.0)(_batch([["i0"], ["i1", "i4"]]))
    assert np.argmax(np.where(np.arange(n) == 0, -np.inf, scores[0])) == 1
    assert np.argmax(np.where(np.isin(np.arange(n), [1, 4]), -np.inf, scores[1])) == 0


def test_ease_refuses_a_corpus_above_max_items():
    with pytest.raises(ValueError, match=r"corpus has 6 items, above max_items=5"):
        baselines.EASE(_corpus(6), [[b"i0", b"i1"]], max_items=5)
    with pytest.raises(ValueError, match="l2=0"):
        baselines.EASE(_corpus(3), [[b"i0", b"i1"]], l2=0)


def _write_records(path, rows) -> str:
    """rows: (user, history, target, timestamp) -> one TFRecord file."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for user, history, target, ts in rows:
            writer.write(features.encode_example(user, target, ts, False, history, [0] * len(history),
                                                 [1] * len(history)))
    return str(path)


def test_ease_l2_is_picked_on_the_validation_carve_never_on_eval(tmp_path):
    """Validation and eval records are built so that their best λ differ:
    the validation target of a probe history is EASE's strict top-1 under
    the small λ, the eval target its top-1 under the large one."""
    n, grid = 8, (0.5, 500.0)
    corpus = _corpus(n)
    sequences = _random_sequences(n, 40, seed=7)
    top = {}
    for l2 in grid:
        scores = baselines.EASE(corpus, sequences, l2=l2)(_batch([[f"i{h}"] for h in range(n)]))
        scores[np.arange(n), np.arange(n)] = -np.inf  # the history item is excluded from ranking
        order = np.sort(scores, axis=1)
        top[l2] = np.where(order[:, -1] > order[:, -2] + 1e-6, np.argmax(scores, axis=1), -1)  # strict only
    probes = [h for h in range(n) if -1 != top[0.5][h] != top[500.0][h] != -1]
    assert len(probes) >= 2, "the toy data no longer separates the two λ; pick another seed"

    # Training examples (timestamps < 100) chain into each user's sequence; the
    # validation records (the carve, >= 100) and the eval records probe one item each.
    train_rows = [(f"u{u}", [x.decode() for x in seq[:t]], seq[t].decode(), t)
                  for u, seq in enumerate(sequences) for t in range(1, len(seq))]
    train_rows += [(f"v{h}", [f"i{h}"], f"i{top[0.5][h]}", 150) for h in probes]
    train = _write_records(tmp_path / "train.tfrecord", train_rows)
    eval_ = _write_records(tmp_path / "eval.tfrecord",
                           [(f"v{h}", [f"i{h}"], f"i{top[500.0][h]}", 250) for h in probes])
    split = {"train_range": (0, 100), "validation_range": (100, 200), "validation_records": len(probes)}

    best, trials = baselines.tune_ease(corpus, train, split, k=1, grid=grid)
    assert best == 0.5
    assert [t["val_hr_at_1"] for t in trials] == [1.0, 0.0]
    # The same selection run on the eval records picks the other λ: a tuner
    # that read eval would fail the assertion above.
    fit = baselines.training_sequences(train, time_range=split["train_range"])
    assert sorted(map(tuple, fit.values())) == sorted(map(tuple, sequences))  # the carve is not fitted
    from trainer.evaluation import iter_records

    assert baselines.select_ease_l2(corpus, fit, lambda: iter_records(eval_), k=1, grid=grid)[0] == 500.0
