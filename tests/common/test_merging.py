"""The serving merge: importance budgets, round-robin de-duplication and the
score policy, against the one-candidate-at-a-time references below."""

from __future__ import annotations

import math

import numpy as np
import pytest

import numpy_reference as ref
from common import merging
from common.merging import POLICIES, budgets, merge, round_robin, round_robin_sources, score_merge
from trainer import evaluation, features


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


def _score_merge_reference(lists, scores, budget, total, floor):
    """`score_merge` by its docstring: the floor round-robin, then every
    remaining id under its best (score, -embedding, -position), best first."""
    merged, sources = ref.round_robin(lists, [min(max(int(b), 0), floor) for b in budget], total)
    best = {}
    for j, row in enumerate(lists):
        for q, item in enumerate(row):
            score = float(scores[j][q])
            key = (-(-math.inf if math.isnan(score) else score), j, q)
            if item >= 0 and (int(item) not in best or key < best[int(item)]):
                best[int(item)] = key
    fill = sorted((key, item) for item, key in best.items() if item not in set(merged))
    for (_, j, q), item in fill[: max(total - len(merged), 0)]:
        merged.append(item)
        sources.append((j, q))
    return merged, sources


def _as_reference(triple):
    items, source, position = triple
    assert items.dtype == np.int64 and source.dtype == np.int32 and position.dtype == np.int32
    return items.tolist(), list(zip(source.tolist(), position.tolist()))


def _random_case(rng, max_k, max_depth, max_pool, padding):
    """Lists with heavy overlap (ids from a small shared pool, repeats within
    a list too), -1 anywhere or as tails, zero budgets, budgets beyond the
    list length, totals below and above the budgets' sum."""
    k, depth = int(rng.integers(1, max_k + 1)), int(rng.integers(0, max_depth + 1))
    pool = int(rng.integers(1, max_pool + 1))
    if rng.random() < 0.5:
        lists = rng.integers(0, pool, (k, depth))
    else:  # ANN-like: distinct ids per list from a shared pool
        lists = np.stack([rng.permutation(max(pool, depth))[:depth] for _ in range(k)])
    lists[rng.random((k, depth)) < padding * rng.random()] = -1
    if rng.random() < 0.3:  # explicit lists shortened by the post-filter
        lists[np.arange(depth)[None, :] >= rng.integers(0, depth + 1, (k, 1))] = -1
    if rng.random() < 0.5:
        budget = rng.integers(0, 2 * depth + 3, k) * (rng.random(k) < 0.8)
        total = int(rng.integers(0, int(1.5 * budget.sum()) + 3))
    else:
        total = int(rng.integers(0, 2 * depth + 3))
        budget = budgets(rng.exponential(size=(1, k)), rng.random((1, k)) < 0.9, total)[0]
    return lists, budget, total


FAMILIES = {  # name: (cases, max K, max depth, max id pool, padding share)
    "tiny": (800, 4, 8, 10, 0.3),
    "overlapping": (800, 12, 40, 60, 0.2),
    "deep": (300, 12, 300, 400, 0.1),
    "long budgets": (200, 3, 400, 150, 0.5),
}


# `round_robin_sources`' two ways: the heap over repeated candidates only
# (WALK_SHARE 0), each list in turn (a huge share: any repeat), the default.
PATHS = {"heap": 0, "in turn": 10**9, "default": merging.WALK_SHARE}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_round_robin_equals_the_reference_on_random_lists(family, path, monkeypatch):
    monkeypatch.setattr(merging, "WALK_SHARE", PATHS[path])
    cases, max_k, max_depth, max_pool, padding = FAMILIES[family]
    rng = np.random.default_rng(sorted(FAMILIES).index(family))
    for case in range(cases):
        lists, budget, total = _random_case(rng, max_k, max_depth, max_pool, padding)
        want = ref.round_robin(lists, budget, total)
        got = _as_reference(round_robin_sources(lists, budget, total))
        assert got == want, (family, case, lists.tolist(), budget.tolist(), total)
        assert round_robin(lists, budget, total) == want[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_score_merge_equals_the_reference_on_random_lists(family):
    cases, max_k, max_depth, max_pool, padding = FAMILIES[family]
    rng = np.random.default_rng(100 + sorted(FAMILIES).index(family))
    for case in range(cases // 2):
        lists, budget, total = _random_case(rng, max_k, max_depth, max_pool, padding)
        scores = rng.integers(0, 4, lists.shape).astype(np.float32) * 0.5  # many ties
        if rng.random() < 0.5:
            scores = rng.normal(size=lists.shape).astype(np.float32)
        scores[rng.random(lists.shape) < 0.05] = rng.choice([np.nan, -np.inf, np.inf, -0.0])
        floor = int(rng.integers(0, 6))
        want = _score_merge_reference(lists, scores, budget, total, floor)
        got = _as_reference(score_merge(lists, scores, budget, total, floor))
        assert got == want, (family, case, lists.tolist(), scores.tolist(), budget.tolist(), total, floor)


def test_score_merge_looks_past_candidates_that_every_list_repeats():
    """Twelve identical lists: the best 2 * (count + taken) + 64 entries hold
    only a twelfth as many ids, so the fill must widen its search."""
    rng = np.random.default_rng(5)
    lists = np.tile(rng.permutation(2000)[:500], (12, 1))
    scores = np.tile(np.sort(rng.normal(size=500)).astype(np.float32)[::-1], (12, 1))
    budget = budgets(np.ones((1, 12)), np.ones((1, 12), bool), 300)[0]
    for floor in (0, 3):
        want = _score_merge_reference(lists, scores, budget, 300, floor)
        assert _as_reference(score_merge(lists, scores, budget, 300, floor)) == want


def test_round_robin_sources_name_the_embedding_and_position():
    lists = np.array([[1, 2, 3, 4], [2, 5, 6, 7], [9, 8, 7, 6]])
    # Turns: embedding 1 (budget 3) then 0; 0 leaves after one; 1 goes on.
    items, source, position = round_robin_sources(lists, np.array([1, 3, 0]), 4)
    assert items.tolist() == [2, 1, 5, 6] and source.tolist() == [1, 0, 1, 1] and position.tolist() == [0, 0, 1, 2]
    # Embedding 1 skips the 1 that embedding 0 took, then runs out at the taken 2.
    items, source, position = round_robin_sources(np.array([[1, -1, 2], [1, 3, 2]]), np.array([2, 2]), 4)
    assert items.tolist() == [1, 3, 2] and source.tolist() == [0, 1, 0] and position.tolist() == [0, 1, 2]


def test_round_robin_handles_huge_ids_int32_input_and_empty_merges():
    rng = np.random.default_rng(7)
    for _ in range(50):  # ids beyond what the packed sort can hold take the argsort path
        lists, budget, total = _random_case(rng, 6, 30, 40, 0.2)
        huge = np.where(lists >= 0, lists + (1 << 60), lists)
        want, sources = ref.round_robin(lists, budget, total)
        got = _as_reference(round_robin_sources(huge, budget, total))
        assert got == ([x + (1 << 60) for x in want], sources)
        assert round_robin(lists.astype(np.int32), budget.astype(np.int32), total) == want
    lists = np.array([[-7, 3, -1]])
    assert round_robin(lists, np.array([5]), 5) == [3]
    for budget, total in (([0], 5), ([5], 0), ([-2], 5)):
        items, source, position = round_robin_sources(lists, np.array(budget), total)
        assert len(items) == len(source) == len(position) == 0
    assert round_robin(np.zeros((2, 0), np.int64), np.array([3, 3]), 6) == []
    assert round_robin(np.zeros((0, 4), np.int64), np.zeros(0, np.int64), 6) == []
    assert len(score_merge(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0), 6, floor=2)[0]) == 0


def test_score_merge_keeps_a_floor_then_fills_by_score():
    lists = np.array([[1, 2, 3, 4], [9, 8, -1, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.1, 0.05, 0.0, 0.0]], np.float32)
    # Floor 1: each embedding one candidate (1, then 9); the last slot goes to the best left, 2 (0.8).
    items, source, position = score_merge(lists, scores, np.array([3, 1]), 3, floor=1)
    assert items.tolist() == [1, 9, 2] and source.tolist() == [0, 1, 0] and position.tolist() == [0, 0, 1]
    # Without a floor the low-scored embedding gets nothing.
    assert score_merge(lists, scores, np.array([3, 1]), 3, floor=0)[0].tolist() == [1, 2, 3]


def test_score_merge_attributes_a_shared_candidate_to_its_best_score():
    lists = np.array([[5, 6], [6, 7]])
    # 6 scores 0.2 in embedding 0 and 0.6 in embedding 1: it counts under 1.
    scores = np.array([[0.9, 0.2], [0.6, 0.1]], np.float32)
    items, source, position = score_merge(lists, scores, np.array([1, 1]), 3, floor=0)
    assert items.tolist() == [5, 6, 7] and source.tolist() == [0, 1, 1] and position.tolist() == [0, 0, 1]
    # Equal scores: the lower embedding index, then the lower position, first.
    scores = np.array([[0.9, 0.6], [0.6, 0.6]], np.float32)
    items, source, position = score_merge(lists, scores, np.array([1, 1]), 3, floor=0)
    assert items.tolist() == [5, 6, 7] and source.tolist() == [0, 0, 1] and position.tolist() == [0, 1, 1]


def test_merge_dispatches_on_the_policy():
    rng = np.random.default_rng(3)
    lists, budget, total = _random_case(rng, 6, 30, 40, 0.2)
    scores = rng.normal(size=lists.shape).astype(np.float32)
    assert POLICIES == ("round_robin", "score")
    for got, want in zip(merge("round_robin", lists, None, budget, total),
                         round_robin_sources(lists, budget, total)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(merge("score", lists, scores, budget, total, floor=2),
                         score_merge(lists, scores, budget, total, 2)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"policy='max'; allowed: round_robin, score"):
        merge("max", lists, scores, budget, total)


def test_bad_arguments_name_themselves():
    lists = np.array([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="floor=-1"):
        score_merge(lists, np.zeros((2, 2)), np.array([1, 1]), 2, floor=-1)
    with pytest.raises(ValueError, match="scores has shape"):
        score_merge(lists, np.zeros((2, 3)), np.array([1, 1]), 2, floor=1)
    with pytest.raises(ValueError, match="budget has shape"):
        round_robin(lists, np.array([1, 1, 1]), 2)
    with pytest.raises(ValueError, match="lists has shape"):
        round_robin(np.array([1, 2]), np.array([1]), 2)


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


class _ExplicitScorer(_Scorer):
    """Fixed CR embeddings, one per followed topic (`conditions`)."""

    def __init__(self, emb, mask, topics, items):
        super().__init__(emb, mask, None, items)
        self.topics = topics

    def embed(self, batch, with_importance=False):
        rows = [int(u) for u in batch[features.USER_ID]]
        return self.emb[rows], self.mask[rows]

    def conditions(self, batch):
        return self.topics[[int(u) for u in batch[features.USER_ID]]]


def _reference_lists(emb, items, history, depth, allowed=None):
    """Best-first corpus columns of one embedding: history (but the target)
    dropped, only
    `allowed` columns (the relevance filter), ties to the lower column."""
    scores = items @ emb
    cols = [c for c in np.lexsort((np.arange(len(items)), -scores)) if c not in history
            and (allowed is None or allowed[c])]
    return np.array((cols + [-1] * depth)[:depth]), np.array([scores[c] for c in cols[:depth]]
                                                             + [-np.inf] * max(0, depth - len(cols)))


@pytest.mark.parametrize("policy", ["round_robin", "score"])
def test_served_hits_merge_implicit_and_relevance_filtered_explicit_lists(policy):
    """The implicit and explicit retrievers as the service merges them:
    explicit lists hold only items carrying their topic, one apportionment
    over all embeddings (implicit importance scaled to average 1, explicit 1
    each), the policy's merge; checked against a per-record brute force."""
    from common.merging import budgets, merge

    rng = np.random.default_rng(5)
    n, size, k = 40, 60, 12
    topics = [frozenset({b"a"} if c % 3 == 0 else {b"b"} if c % 3 == 1 else set()) for c in range(size)]
    ids = np.arange(size).astype(str).astype(object)
    corpus = evaluation.Corpus(ids, {i.encode(): c for c, i in enumerate(ids)}, topics, np.ones(size))
    records = _records(n, size, rng)
    records[features.HISTORY_ITEM_IDS][:5, 0] = records[features.TARGET_ITEM_ID][:5]  # target in history
    records = {key: np.array([v.encode() if isinstance(v, str) else v for v in col.reshape(-1)],
                             object).reshape(col.shape) for key, col in records.items()}
    items = rng.normal(size=(size, 8))
    implicit = _Scorer(rng.normal(size=(n, 3, 8)), rng.random((n, 3)) < 0.8, rng.random((n, 3)), items)
    implicit.mask[:, 0] = True
    follows = np.array([[b"a", b"b"]] * n, object)
    explicit = _ExplicitScorer(rng.normal(size=(n, 2, 8)), rng.random((n, 2)) < 0.7, follows, items)
    got = evaluation.served_hits(implicit, corpus, iter([records]), ks=(k,), policy=policy, floor=2,
                                 explicit=explicit)[k]
    target = corpus.columns(records[features.TARGET_ITEM_ID])
    history = corpus.columns(records[features.HISTORY_ITEM_IDS])
    want, depth = [], 2 * k
    for r in range(n):
        seen = set(history[r]) - {target[r]}
        parts = [_reference_lists(implicit.emb[r, j], items, seen, depth) for j in range(3)]
        parts += [_reference_lists(explicit.emb[r, c], items, seen, depth,
                                   [follows[r, c] in t for t in topics]) for c in range(2)]
        lists = np.stack([p[0] for p in parts])
        scores = np.stack([p[1] for p in parts])
        mask = np.concatenate([implicit.mask[r], explicit.mask[r]])
        lists[~mask] = -1
        imp = np.where(implicit.mask[r], implicit.importance[r], 0)
        weight = np.concatenate([imp * implicit.mask[r].sum() / imp.sum(), explicit.mask[r].astype(float)])
        share = budgets(weight[None], mask[None], k)[0]
        merged = merge(policy, lists, np.where(lists >= 0, scores, -np.inf), share, k, floor=2)[0]
        want.append(target[r] in merged)
        for c in range(2):  # explicit candidates always carry their topic
            assert all(follows[r, c] in topics[x] for x in lists[3 + c] if x >= 0)
    np.testing.assert_array_equal(got, want)
    assert 0 < np.mean(want) < 1
