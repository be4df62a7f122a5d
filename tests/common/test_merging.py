"""The serving merge: importance budgets and round-robin de-duplication."""

from __future__ import annotations

import numpy as np

from trainer import evaluation, features
from common.merging import budgets, round_robin


def test_budgets_apportion_by_importance_with_largest_remainder():
    got = budgets(np.array([[3.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [5.0, 2.0, 9.0],
                            [1.0, 1.0, 1.0]]),
                  np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], bool), 10)
    np.testing.assert_array_equal(got, [[8, 2, 0],     # 7.5 / 2.5: the tie goes to the lower index
                                        [4, 3, 3],     # 3.33 each: one extra, lowest index
                                        [5, 5, 0],     # all-zero importance: equal shares
                                        [10, 0, 0],    # masked embeddings get nothing
                                        [0, 0, 0]])    # no embedding: no budget


def test_budgets_always_sum_to_the_total():
    rng = np.random.default_rng(0)
    importance = rng.exponential(size=(500, 7)) * (rng.random((500, 7)) < 0.8)
    mask = rng.random((500, 7)) < 0.9
    for total in (1, 7, 50, 101):
        got = budgets(importance, mask, total)
        live = mask.any(axis=1)
        assert (got.sum(axis=1)[live] == total).all() and (got[~live] == 0).all()
        assert (got[~mask] == 0).all() and (got >= 0).all()
        # Never further than one candidate from the exact proportional share.
        weights = np.where(mask, importance, 0.0)
        flat = mask & (weights.sum(axis=1, keepdims=True) == 0)
        weights = np.where(flat, 1.0, weights)
        exact = weights * total / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
        assert (np.abs(got - exact)[live] < 1.0 + 1e-9).all()


def test_round_robin_takes_turns_skips_duplicates_and_respects_budgets():
    lists = np.array([[1, 2, 3, 4], [2, 5, 6, 7], [9, 8, 7, 6]])
    # Order within a round: larger budget first (ties: lower index).
    assert round_robin(lists, np.array([2, 2, 0]), 4) == [1, 2, 3, 5]
    assert round_robin(lists, np.array([1, 3, 0]), 4) == [2, 1, 5, 6]
    assert round_robin(lists, np.array([1, 1, 2]), 3) == [9, 1, 2]
    # A list that runs out leaves its budget unused; -1 pads are skipped.
    assert round_robin(np.array([[1, -1], [1, 2]]), np.array([2, 1]), 3) == [1, 2]


def test_round_robin_matches_a_brute_force_reference():
    rng = np.random.default_rng(1)
    for _ in range(200):
        k, depth, total = rng.integers(1, 5), 12, int(rng.integers(1, 9))
        lists = np.stack([rng.permutation(15)[:depth] for _ in range(k)])
        share = budgets(rng.random((1, k)), np.ones((1, k), bool), total)[0]
        merged = round_robin(lists, share, total)
        assert len(merged) == len(set(merged)) == total
        # Reference: simulate rounds explicitly.
        order = sorted(range(k), key=lambda j: (-share[j], j))
        taken, ref, pos, used = set(), [], [0] * k, [0] * k
        while len(ref) < total:
            for j in order:
                if used[j] < share[j] and len(ref) < total:
                    while lists[j][pos[j]] in taken:
                        pos[j] += 1
                    ref.append(int(lists[j][pos[j]]))
                    taken.add(ref[-1])
                    used[j] += 1
        assert merged == ref


class _Scorer:
    """Fixed user embeddings/importance over a random corpus (the model's
    part is tested elsewhere; this checks the served-hit bookkeeping)."""

    def __init__(self, emb, mask, importance, items):
        self.emb, self.mask, self.importance, self.items = emb, mask, importance, items

    def embed(self, batch, with_importance=False):
        rows = [int(u) for u in batch[features.USER_ID]]
        return self.emb[rows], self.mask[rows], self.importance[rows]


def _records(n, corpus_size, rng):
    history = rng.integers(0, corpus_size, (n, 4)).astype(str).astype(object)
    history[:, 3] = ""
    return {features.USER_ID: np.arange(n).astype(str).astype(object),
            features.TARGET_ITEM_ID: rng.integers(0, corpus_size, n).astype(str).astype(object),
            features.HISTORY_ITEM_IDS: history}


def _corpus(size):
    ids = np.arange(size).astype(str).astype(object)
    return evaluation.Corpus(ids, {i: c for c, i in enumerate(ids)}, [frozenset()] * size, np.ones(size))


def test_served_hits_equal_hit_rate_for_one_embedding():
    rng = np.random.default_rng(2)
    n, size = 64, 80
    corpus, records = _corpus(size), _records(n, size, rng)
    scorer = _Scorer(rng.normal(size=(n, 1, 8)), np.ones((n, 1), bool), np.ones((n, 1)),
                     rng.normal(size=(size, 8)))
    served = evaluation.served_hits(scorer, corpus, iter([records]), ks=(5, 20))
    target = corpus.columns(records[features.TARGET_ITEM_ID])
    ranks, _ = evaluation.rank_targets(scorer.emb[:, 0] @ scorer.items.T, target,
                                       corpus.columns(records[features.HISTORY_ITEM_IDS]))
    for k in (5, 20):
        np.testing.assert_array_equal(served[k], ranks <= k)


def test_served_hits_follow_the_budgets():
    """Two embeddings, importance 3:1, K=4: the minor embedding contributes
    one candidate, so its second-best item is not served."""
    corpus = _corpus(6)
    items = np.array([[4, 0], [3, 0], [2, 0], [1, 0], [0, 2], [0, 1]], float)
    emb = np.array([[[1.0, 0.0], [0.0, 1.0]]] * 2)
    records = {features.USER_ID: np.array(["0", "1"], object),
               features.TARGET_ITEM_ID: np.array(["4", "5"], object),
               features.HISTORY_ITEM_IDS: np.array([[""], [""]], object)}
    scorer = _Scorer(emb, np.ones((2, 2), bool), np.array([[3.0, 1.0]] * 2), items)
    served = evaluation.served_hits(scorer, corpus, iter([records]), ks=(4,))
    np.testing.assert_array_equal(served[4], [True, False])
