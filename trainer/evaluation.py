"""Offline evaluation with the SPEC §6 protocol, exactly.

Score of an item = max over the user's (unmasked) embeddings of the dot
product; rank = 1 + number of corpus items scoring strictly higher, items of
the record's history excluded; a target outside the corpus is a miss
(rank = inf). Scoring is exact: batched matmul over the whole corpus.

Any scorer works (the two-tower model, or a baseline from
`trainer/baselines.py`): a scorer maps a batch of records to `[b, C]` scores
over the corpus. Per-record results (`RecordResults`) are kept so several
seeds can be pooled and bootstrapped together (`summarize`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
from typing import Callable, Iterator

import numpy as np

from trainer import features

NEG_INF = np.float32(-np.inf)
MOVIELENS_KS = (20, 50, 100, 200)
LARGE_CORPUS_KS = (100, 1000)
HISTORY_BUCKETS = ((1, 4), (5, 19), (20, 49), (50, 10**9))


@dataclasses.dataclass
class Corpus:
    """The eval corpus: items of training events (SPEC §6.4).

    Attributes:
      ids: `[C]` item ids as bytes, in `corpus/corpus.txt` order.
      index: id -> column.
      topics: per column, the item's topic set (bytes).
      popularity: `[C]` training engagement counts.
    """

    ids: np.ndarray
    index: dict
    topics: list
    popularity: np.ndarray

    def columns(self, ids: np.ndarray) -> np.ndarray:
        """Corpus columns of `ids` (any shape, bytes); -1 = not in the corpus."""
        flat = [self.index.get(i, -1) for i in np.asarray(ids).reshape(-1).tolist()]
        return np.asarray(flat, np.int64).reshape(np.shape(ids))

    def topic_mask(self, topics: np.ndarray) -> np.ndarray:
        """`[b]` topics -> `[b, C]` bool, True where the item carries the topic."""
        out = np.zeros((len(topics), len(self.ids)), bool)
        for r, topic in enumerate(topics.tolist()):
            cols = self._by_topic.get(topic)
            if cols is not None:
                out[r, cols] = True
        return out

    def __post_init__(self):
        by_topic: dict = {}
        for c, item_topics in enumerate(self.topics):
            for t in item_topics:
                by_topic.setdefault(t, []).append(c)
        self._by_topic = {t: np.asarray(v) for t, v in by_topic.items()}


def load_corpus(prepared_dir: str) -> Corpus:
    """Reads `corpus/corpus.txt` and the item table's topics and counts."""
    from trainer.item_table import load_item_table

    import tensorflow as tf

    with tf.io.gfile.GFile(f"{prepared_dir.rstrip('/')}/{features.CORPUS}") as handle:
        ids = [line.rstrip("\n").encode() for line in handle if line.strip()]
    table = load_item_table(prepared_dir, max_topics=64)
    row = {item.encode(): i + 1 for i, item in enumerate(table.ids)}
    topics, popularity = [], np.zeros(len(ids), np.float64)
    for c, item in enumerate(ids):
        r = row[item]
        topics.append(frozenset(t.encode() for t in table.item_topics(r)))
        popularity[c] = table.train_count[r]
    return Corpus(np.asarray(ids, object), {i: c for c, i in enumerate(ids)}, topics, popularity)


def iter_records(pattern: str, batch_size: int = 512, history_length: int = 50,
                 time_range: tuple[int, int] | None = None, limit: int = 0) -> Iterator[dict]:
    """Batches of records as NumPy (bytes strings), in file order.

    Args:
      pattern: TFRecord glob (`<prepared>/eval/implicit-*`).
      time_range: keep records with `lo <= target_timestamp < hi`.
      limit: stop after this many records (0 = all).
    """
    from trainer.data import build_dataset

    ds = build_dataset(pattern, batch_size, history_length, shuffle=False, drop_remainder=False,
                       time_range=time_range)
    seen = 0
    for batch in ds:
        out = {k: v.numpy() for k, v in batch.items()}
        if limit and seen + len(out[features.USER_ID]) > limit:
            out = {k: v[: limit - seen] for k, v in out.items()}
        seen += len(out[features.USER_ID])
        yield out
        if limit and seen >= limit:
            return


def rank_targets(scores: np.ndarray, target_cols: np.ndarray, history_cols: np.ndarray,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §6.5 ranks.

    Args:
      scores: `[b, C]` float scores over the corpus (modified in place).
      target_cols: `[b]` corpus column of the target, -1 if not in the corpus.
      history_cols: `[b, L]` corpus columns of the history (-1 = none).
      allowed: `[b, C]` bool, for filtered HR: only these items compete, and
        a target outside them is a miss.

    Returns:
      ranks `[b]` (inf = miss) and the masked scores (for top-k lists).
    """
    rows = np.repeat(np.arange(len(scores)), history_cols.shape[1])
    cols = history_cols.reshape(-1)
    keep = (cols >= 0) & (cols != np.repeat(target_cols, history_cols.shape[1]))
    scores[rows[keep], cols[keep]] = NEG_INF
    if allowed is not None:
        scores[~allowed] = NEG_INF
    known = target_cols >= 0
    target = np.where(known, scores[np.arange(len(scores)), np.maximum(target_cols, 0)], NEG_INF)
    ranks = 1.0 + (scores > target[:, None]).sum(axis=1)
    miss = ~known | ~np.isfinite(target)
    return np.where(miss, np.inf, ranks), scores


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """`[b, k]` columns of the k best finite scores per row (-1 pads)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    finite = np.isfinite(np.take_along_axis(scores, best, axis=1))
    return np.where(finite, best, -1)


@dataclasses.dataclass
class RecordResults:
    """Per-record outcomes of one scorer (one seed) over one record set."""

    ranks: np.ndarray
    segments: np.ndarray
    filtered_ranks: np.ndarray | None = None
    coverage: dict | None = None
    diversity: np.ndarray | None = None
    candidates: np.ndarray | None = None


def history_segment(history_ids: np.ndarray) -> np.ndarray:
    """MovieLens segments: history length buckets `1-4`, `5-19`, `20-49`, `50+`."""
    length = (history_ids != b"").sum(axis=1)
    out = np.empty(len(length), object)
    for lo, hi in HISTORY_BUCKETS:
        out[(length >= lo) & (length <= hi)] = f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"
    return out


def load_truth(pattern: str) -> dict:
    """Synthetic ground truth: user id (bytes) -> truth dict."""
    truth = {}
    for path in sorted(glob.glob(pattern)):
        with open(path) as handle:
            for line in handle:
                row = json.loads(line)
                truth[row["user_id"].encode()] = row
    return truth


def evaluate_scorer(score: Callable[[dict], np.ndarray], corpus: Corpus, records: Iterator[dict],
                    filtered: bool = False, truth: dict | None = None,
                    coverage_k: int = 50, keep_candidates: int = 0) -> RecordResults:
    """Runs `score` over `records`.

    Args:
      score: batch -> `[b, C]` float32 scores over `corpus`.
      filtered: also compute filtered HR (condition topic must be carried).
      truth: synthetic ground truth; segments then come from it and interest
        coverage per tier is computed, else segments are history buckets.
      coverage_k: top-k list used for coverage and topic diversity.
      keep_candidates: keep each record's top-k columns (for overlap).
    """
    ranks, franks, segs, div, cands = [], [], [], [], []
    cover: dict[str, list] = {}
    for batch in records:
        target = corpus.columns(batch[features.TARGET_ITEM_ID])
        history = corpus.columns(batch[features.HISTORY_ITEM_IDS])
        raw = np.asarray(score(batch), np.float32)
        r, masked = rank_targets(raw.copy() if filtered else raw, target, history)
        ranks.append(r)
        if filtered:
            allowed = corpus.topic_mask(batch[features.CONDITION_TOPIC])
            franks.append(rank_targets(raw, target, history, allowed)[0])
        best = top_k(masked, max(coverage_k, keep_candidates))
        if keep_candidates:
            cands.append(best[:, :keep_candidates])
        listed = [set().union(*(corpus.topics[c] for c in row if c >= 0)) for row in best[:, :coverage_k]]
        div.append(np.asarray([len(t) for t in listed], np.float64))
        users = batch[features.USER_ID].tolist()
        if truth is not None:
            segs.append(np.asarray([truth.get(u, {}).get("segment", "unknown") for u in users], object))
            for u, got in zip(users, listed):
                interests = truth.get(u, {}).get("interests", [])
                for tier in ("head", "torso", "tail", "all"):
                    want = {i["topic"].encode() for i in interests if tier in ("all", i["tier"])}
                    value = len(want & got) / len(want) if want else np.nan
                    cover.setdefault(tier, []).append(value)
        else:
            segs.append(history_segment(batch[features.HISTORY_ITEM_IDS]))
    return RecordResults(
        ranks=np.concatenate(ranks), segments=np.concatenate(segs),
        filtered_ranks=np.concatenate(franks) if filtered else None,
        coverage={t: np.asarray(v) for t, v in cover.items()} if truth is not None else None,
        diversity=np.concatenate(div),
        candidates=np.concatenate(cands) if keep_candidates else None)


def bootstrap_ci(values: np.ndarray, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over records (NaNs dropped)."""
    values = values[~np.isnan(values)]
    if not len(values):
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, 100):
        idx = rng.integers(0, len(values), (min(100, resamples - start), len(values)))
        means.append(values[idx].mean(axis=1))
    means = np.concatenate(means)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def _hr_block(rank_runs: list[np.ndarray], ks, seed: int) -> dict:
    return hit_block({k: [r <= k for r in rank_runs] for k in ks}, seed)


def hit_block(hit_runs: dict, seed: int = 0) -> dict:
    """K -> per-seed `[records]` bool hits (same records in every seed) ->
    mean over seeds, 95% bootstrap CI over records of the seed-averaged hits."""
    out = {}
    for k, runs in hit_runs.items():
        hits = np.stack(runs).astype(np.float64)
        per_seed = hits.mean(axis=1)
        lo, hi = bootstrap_ci(hits.mean(axis=0), seed=seed)
        out[str(k)] = {"mean": float(per_seed.mean()), "ci95": [lo, hi],
                       "seed_std": float(per_seed.std()), "per_seed": per_seed.round(5).tolist()}
    return out


def _segment_order(name: str) -> tuple:
    """History buckets by length (`5-19` before `20-49`), other names alphabetically."""
    head = name.split("-")[0].rstrip("+")
    return (0, int(head), name) if head.isdigit() else (1, 0, name)


def summarize(runs: list[RecordResults], ks=MOVIELENS_KS, seed: int = 0) -> dict:
    """Pools runs (seeds) over the same records: mean HR over seeds, a 95%
    bootstrap CI over records of the seed-averaged hits, per segment too."""
    first = runs[0]
    out = {"records": int(len(first.ranks)), "seeds": len(runs),
           "misses_outside_corpus": int(np.isinf(first.ranks).sum()),
           "hr": _hr_block([r.ranks for r in runs], ks, seed)}
    if first.filtered_ranks is not None:
        out["filtered_hr"] = _hr_block([r.filtered_ranks for r in runs], ks, seed)
    out["segments"] = {}
    for seg in sorted(set(first.segments.tolist()), key=_segment_order):
        sel = first.segments == seg
        out["segments"][seg] = {"records": int(sel.sum()),
                                "hr": _hr_block([r.ranks[sel] for r in runs], ks, seed)}
    if first.coverage is not None:
        out["coverage"] = {}
        for tier in first.coverage:
            # Per record, the mean over seeds (NaN where the user has no
            # interest of this tier: the same records in every seed).
            pooled = np.stack([r.coverage[tier] for r in runs]).mean(axis=0)
            known = pooled[~np.isnan(pooled)]
            out["coverage"][tier] = {"mean": float(known.mean()) if len(known) else float("nan"),
                                     "users": int(len(known)), "ci95": list(bootstrap_ci(pooled, seed=seed))}
    if first.diversity is not None:
        out["topic_diversity"] = float(np.mean([r.diversity.mean() for r in runs]))
    return out


def candidate_overlap(implicit: np.ndarray, explicit: list[set]) -> float:
    """Mean over records of |I ∩ E| / |E| (records with an empty E skipped)."""
    shares = [len(set(i[i >= 0].tolist()) & e) / len(e) for i, e in zip(implicit, explicit) if e]
    return float(np.mean(shares)) if shares else float("nan")


class ModelScorer:
    """Scores records with a trained `MultiEmbeddingModel` (exact, batched).

    Corpus embeddings are computed once; a record's score for an item is the
    max over its unmasked user embeddings (SPEC §6.5).

    Args:
      model: the trained model.
      corpus: the eval corpus.
      conditions: CR only: a function batch -> `[b, K_ex]` topics to condition
        on; None = the record's own `condition_topic`.
    """

    def __init__(self, model, corpus: Corpus, conditions: Callable[[dict], np.ndarray] | None = None):
        import tensorflow as tf

        self._tf = tf
        self.model = model
        self.conditions = conditions
        self._ids = tf.constant(corpus.ids.astype(bytes))
        self._embed = tf.function(self._user, reduce_retracing=True)
        self.refresh()

    def refresh(self) -> None:
        """Recomputes the corpus embeddings (after the weights changed)."""
        ids = self._ids
        self.items = np.concatenate([self.model.item_embeddings(ids[i:i + 4096]).numpy()
                                     for i in range(0, len(ids), 4096)])

    def _user(self, history, negative, condition, conditions):
        inputs = {features.HISTORY_ITEM_IDS: history, features.HISTORY_NEGATIVE: negative,
                  features.CONDITION_TOPIC: condition}
        out = self.model.user_embeddings(inputs, training=False,
                                         conditions=conditions if self.conditions else None)
        return out["embeddings"], out["mask"], out["importance"]

    def embed(self, batch: dict, with_importance: bool = False) -> tuple:
        """`[b, K, d]` user embeddings and `[b, K]` mask of a record batch
        (and `[b, K]` importance with `with_importance`)."""
        tf = self._tf
        n = len(batch[features.USER_ID])
        condition = batch.get(features.CONDITION_TOPIC, np.full(n, b"", object))
        conditions = self.conditions(batch) if self.conditions else np.full((n, 1), b"", object)
        emb, mask, importance = self._embed(tf.constant(batch[features.HISTORY_ITEM_IDS]),
                                            tf.constant(batch[features.HISTORY_NEGATIVE]),
                                            tf.constant(condition), tf.constant(conditions))
        if with_importance:
            return emb.numpy(), mask.numpy(), importance.numpy()
        return emb.numpy(), mask.numpy()

    def __call__(self, batch: dict) -> np.ndarray:
        emb, mask = self.embed(batch)
        scores = np.einsum("bkd,cd->bkc", emb, self.items)
        scores[~mask] = NEG_INF
        return scores.max(axis=1)


def explicit_candidates(scorer: "ModelScorer", corpus: Corpus, batch: dict, k: int) -> list[set]:
    """Conditional Retrieval's candidate set per record, as served: one query
    per followed topic (`scorer.conditions`), equal budgets `ceil(k / n)`,
    history excluded, post-filter (the item must carry the topic), union."""
    emb, mask = scorer.embed(batch)
    topics = scorer.conditions(batch)
    history = corpus.columns(batch[features.HISTORY_ITEM_IDS])
    out = [set() for _ in range(len(emb))]
    budget = np.ceil(k / np.maximum(mask.sum(axis=1), 1)).astype(int)
    no_target = np.full(len(emb), -1)
    for c in range(emb.shape[1]):
        scores = emb[:, c] @ scorer.items.T
        _, scores = rank_targets(scores, no_target, history, corpus.topic_mask(topics[:, c]))
        best = top_k(scores, int(budget.max()))
        for r in np.flatnonzero(mask[:, c]):
            out[r].update(int(x) for x in best[r, : budget[r]] if x >= 0)
    return out


def served_hits(scorer: "ModelScorer", corpus: Corpus, records: Iterator[dict],
                ks=MOVIELENS_KS) -> dict[int, np.ndarray]:
    """Hits under the serving merge instead of SPEC §6's max scoring: each
    user embedding retrieves from the corpus (history excluded, exact),
    budgets of K candidates follow the model's importance
    (`common.merging.budgets`) and the lists merge round-robin with
    de-duplication; a record is a hit at K when its target is among the K
    merged candidates. For a single-embedding model this equals HR@K.

    Returns: K -> `[records]` bool.
    """
    from common.merging import budgets, round_robin

    depth = 2 * max(ks)  # enough for any budget after skipping duplicates
    hits: dict[int, list] = {k: [] for k in ks}
    for batch in records:
        emb, mask, importance = scorer.embed(batch, with_importance=True)
        target = corpus.columns(batch[features.TARGET_ITEM_ID])
        history = corpus.columns(batch[features.HISTORY_ITEM_IDS])
        lists = np.full(mask.shape + (min(depth, len(corpus.ids)),), -1)
        for j in range(mask.shape[1]):
            _, masked = rank_targets(emb[:, j] @ scorer.items.T, target, history)
            lists[:, j] = top_k(masked, depth)
        for k in ks:
            share = budgets(importance, mask, k)
            hits[k].append(np.asarray([target[r] >= 0 and target[r] in round_robin(lists[r], share[r], k)
                                       for r in range(len(target))]))
    return {k: np.concatenate(v) for k, v in hits.items()}
