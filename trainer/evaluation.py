"""Offline evaluation with the SPEC §6 protocol, exactly.

Score of an item = max over the user's (unmasked) embeddings of the dot
product; rank = 1 + number of corpus items scoring strictly higher, items of
the record's history excluded; a target outside the corpus is a miss
(rank = inf). Scoring is exact, over the whole corpus, but one chunk of
corpus columns at a time (`scan_corpus`): a record's rank is a running count
of items scoring strictly higher than its target and its top-k list a running
merge, so memory is bounded by `[b, K, chunk]`, not `[b, K, C]` (a 1M-item
corpus needs ~8 GiB per 256-record batch unchunked). The scores of a chunk are
bit-identical to those columns of the whole-corpus matrix, so the ranks do not
depend on the chunk size.

Any scorer works (the two-tower model, or a baseline from
`trainer/baselines.py`): a scorer maps a batch of records to `[b, C]` scores
over the corpus; one that also has `column_scores(batch)` (as `ModelScorer`
does) is asked for one chunk of columns at a time. Per-record results
(`RecordResults`) are kept so several seeds can be pooled and bootstrapped
together (`summarize`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Iterator

import numpy as np

from trainer import features

NEG_INF = np.float32(-np.inf)
# Corpus columns scored at once: [256 records, 8 embeddings, 16384] float32
# is 128 MiB; larger chunks are no faster (the matmul dominates).
CHUNK_SIZE = 16_384
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

    def topic_mask(self, topics: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """`[b]` topics -> `[b, hi - lo]` bool, True where the item of column
        `lo + j` carries the row's topic (default: the whole corpus)."""
        hi = len(self.ids) if hi is None else hi
        out = np.zeros((len(topics), hi - lo), bool)
        for r, topic in enumerate(topics.tolist()):
            cols = self._by_topic.get(topic)
            if cols is not None:
                cols = cols[np.searchsorted(cols, lo):np.searchsorted(cols, hi)]
                out[r, cols - lo] = True
        return out

    def carries(self, cols: np.ndarray, topics: np.ndarray) -> np.ndarray:
        """`[b]` bool: item of column `cols[r]` (-1 = none) carries `topics[r]`."""
        return np.asarray([c >= 0 and t in self.topics[c] for c, t in zip(cols.tolist(), topics.tolist())],
                          bool)

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


def column_scores(score, batch: dict) -> Callable:
    """`cols -> [b, len(cols)]` float32 scores of `batch` for corpus columns
    `cols` (a slice or an int array).

    A scorer with `column_scores(batch)` computes only the columns asked
    for; any other is called once for the whole `[b, C]` matrix (baselines:
    their scores are dense over the corpus anyway).
    """
    if hasattr(score, "column_scores"):
        return score.column_scores(batch)
    full = np.asarray(score(batch), np.float32)
    return lambda cols: full[:, cols]


class _RunningTopK:
    """Top-k columns of a row's scores, merged chunk by chunk.

    Exact: the k best of the corpus are among the k best of their chunk.
    Equal scores keep the lower column first (`top_k` breaks ties at the
    k-th score arbitrarily, so only the scores of the two lists are equal
    under ties).
    """

    def __init__(self, rows: int, k: int):
        self.scores = np.full((rows, k), -np.inf)  # float64 holds any float32 score exactly
        self.cols = np.full((rows, k), -1, np.int64)

    def add(self, scores: np.ndarray, lo: int) -> None:
        k = min(self.scores.shape[1], scores.shape[1])
        if not k:
            return
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        cand_scores = np.concatenate([self.scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        cand_cols = np.concatenate([self.cols, part + lo], axis=1)
        # A never-filled slot (column -1) sorts after any real column of equal score.
        order = np.lexsort((np.where(cand_cols < 0, np.iinfo(np.int64).max, cand_cols), -cand_scores), axis=1)
        order = order[:, : self.scores.shape[1]]
        self.scores = np.take_along_axis(cand_scores, order, axis=1)
        self.cols = np.take_along_axis(cand_cols, order, axis=1)

    def result(self) -> np.ndarray:
        """`[b, k]` columns, best first; -1 where fewer than k finite scores."""
        return np.where(np.isfinite(self.scores), self.cols, -1)


def _chunks(size: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for lo in range(0, size, chunk_size):
        yield lo, min(lo + chunk_size, size)


def scan_corpus(scores_of: Callable, size: int, target_cols: np.ndarray, history_cols: np.ndarray,
                k: int = 0, allowed_of: Callable | None = None, allowed_target: np.ndarray | None = None,
                chunk_size: int = CHUNK_SIZE) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """SPEC §6.5 ranks and the top-k list, one chunk of corpus columns at a time.

    Equal to `rank_targets` and `top_k` on the whole `[b, C]` matrix, in
    `[b, chunk]` memory: the target's score is taken first (its own column),
    then each chunk adds the items scoring strictly higher to the record's
    count and its best items to the running top-k.

    Args:
      scores_of: `cols -> [b, len(cols)]` float32 scores (`column_scores`);
        a returned array may be modified in place.
      size: corpus size C.
      target_cols: `[b]` corpus column of the target, -1 if not in the corpus.
      history_cols: `[b, L]` corpus columns of the history (-1 = none); they
        neither compete nor enter the top-k (the target excepted).
      k: length of the top-k list (over the unfiltered scores); 0 = none.
      allowed_of: for filtered ranks, `(lo, hi) -> [b, hi - lo]` bool, the
        items that compete.
      allowed_target: `[b]` bool, the target is allowed (else a miss);
        required with `allowed_of`.
      chunk_size: corpus columns scored at once.

    Returns:
      ranks `[b]` (inf = miss), filtered ranks `[b]` (None without
      `allowed_of`) and `[b, min(k, C)]` top-k columns (-1 pads).
    """
    b = len(target_cols)
    rows = np.arange(b)
    known = target_cols >= 0
    target = np.full(b, -np.inf)  # float64: exact for float32 and float64 scores
    if known.any():
        wanted, where = np.unique(target_cols[known], return_inverse=True)
        target[known] = np.asarray(scores_of(wanted))[rows[known], where]
    higher = np.zeros(b, np.int64)
    filtered_higher = np.zeros(b, np.int64) if allowed_of is not None else None
    best = _RunningTopK(b, min(k, size))
    h_rows = np.repeat(rows, history_cols.shape[1])
    h_cols = history_cols.reshape(-1)
    keep = (h_cols >= 0) & (h_cols != np.repeat(target_cols, history_cols.shape[1]))
    h_rows, h_cols = h_rows[keep], h_cols[keep]
    for lo, hi in _chunks(size, chunk_size):
        scores = np.asarray(scores_of(slice(lo, hi)))
        inside = (h_cols >= lo) & (h_cols < hi)
        scores[h_rows[inside], h_cols[inside] - lo] = NEG_INF
        beats = scores > target[:, None]
        # The target never outranks itself, whatever the last bit of its score.
        own = known & (target_cols >= lo) & (target_cols < hi)
        beats[rows[own], target_cols[own] - lo] = False
        higher += beats.sum(axis=1)
        if allowed_of is not None:
            filtered_higher += (beats & allowed_of(lo, hi)).sum(axis=1)
        if k:
            best.add(scores, lo)
    miss = ~known | ~np.isfinite(target)
    ranks = np.where(miss, np.inf, 1.0 + higher)
    filtered = None
    if allowed_of is not None:
        filtered = np.where(miss | ~allowed_target, np.inf, 1.0 + filtered_higher)
    return ranks, filtered, best.result()


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
    """Synthetic ground truth: user id (bytes) -> truth dict (`pattern` may
    name an object store, gs://...)."""
    import tensorflow as tf

    truth = {}
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as handle:
            for line in handle:
                row = json.loads(line)
                truth[row["user_id"].encode()] = row
    return truth


def evaluate_scorer(score: Callable[[dict], np.ndarray], corpus: Corpus, records: Iterator[dict],
                    filtered: bool = False, truth: dict | None = None,
                    coverage_k: int = 50, keep_candidates: int = 0,
                    chunk_size: int = CHUNK_SIZE) -> RecordResults:
    """Runs `score` over `records`.

    Args:
      score: batch -> `[b, C]` float32 scores over `corpus` (asked for
        `chunk_size` columns at a time when it has `column_scores`).
      filtered: also compute filtered HR (condition topic must be carried).
      truth: synthetic ground truth; segments then come from it and interest
        coverage per tier is computed, else segments are history buckets.
      coverage_k: top-k list used for coverage and topic diversity.
      keep_candidates: keep each record's top-k columns (for overlap).
      chunk_size: corpus columns scored at once (memory, not results).
    """
    ranks, franks, segs, div, cands = [], [], [], [], []
    cover: dict[str, list] = {}
    size = len(corpus.ids)
    for batch in records:
        target = corpus.columns(batch[features.TARGET_ITEM_ID])
        history = corpus.columns(batch[features.HISTORY_ITEM_IDS])
        allowed_of = allowed_target = None
        if filtered:
            topics = batch[features.CONDITION_TOPIC]
            allowed_of = lambda lo, hi, topics=topics: corpus.topic_mask(topics, lo, hi)  # noqa: E731
            allowed_target = corpus.carries(target, topics)
        r, fr, best = scan_corpus(column_scores(score, batch), size, target, history,
                                  max(coverage_k, keep_candidates), allowed_of, allowed_target, chunk_size)
        ranks.append(r)
        if filtered:
            franks.append(fr)
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
        self._embed = None  # traced once, on the first batch's dtypes, for any batch and history length
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
        args = (tf.constant(batch[features.HISTORY_ITEM_IDS]), tf.constant(batch[features.HISTORY_NEGATIVE]),
                tf.constant(condition), tf.constant(conditions))
        if self._embed is None:
            self._embed = tf.function(self._user, input_signature=[
                tf.TensorSpec([None] * arg.shape.rank, arg.dtype) for arg in args])
        emb, mask, importance = self._embed(*args)
        if with_importance:
            return emb.numpy(), mask.numpy(), importance.numpy()
        return emb.numpy(), mask.numpy()

    def column_scores(self, batch: dict) -> Callable:
        """`cols -> [b, len(cols)]` scores of `batch` for corpus columns `cols`.

        The user embeddings are computed once; each call scores only its
        columns, `[b, K, len(cols)]` at most. `einsum` sums each dot product
        in the same order whatever the columns, so a chunk's scores are
        bit-identical to those columns of the whole-corpus matrix.
        """
        emb, mask = self.embed(batch)

        def scores(cols):
            out = np.einsum("bkd,cd->bkc", emb, self.items[cols])
            out[~mask] = NEG_INF
            return out.max(axis=1)

        return scores

    def __call__(self, batch: dict) -> np.ndarray:
        return self.column_scores(batch)(slice(None))


def _embedding_scores(emb: np.ndarray, items: np.ndarray, allowed_of: Callable | None = None) -> Callable:
    """`cols -> [b, len(cols)]` dot products of one embedding per record with
    the corpus items (einsum: bit-identical whatever the chunk); items not
    `allowed_of(lo, hi)` score -inf."""
    def scores(cols):
        out = np.einsum("bd,cd->bc", emb, items[cols])
        if allowed_of is not None and isinstance(cols, slice):
            out[~allowed_of(cols.start, cols.stop)] = NEG_INF
        elif allowed_of is not None:  # the targets' own columns
            out[~allowed_of(0, len(items))[:, cols]] = NEG_INF
        return out

    return scores


def explicit_candidates(scorer: "ModelScorer", corpus: Corpus, batch: dict, k: int,
                        chunk_size: int = CHUNK_SIZE) -> list[set]:
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
        allowed_of = lambda lo, hi, t=topics[:, c]: corpus.topic_mask(t, lo, hi)  # noqa: E731
        _, _, best = scan_corpus(_embedding_scores(emb[:, c], scorer.items, allowed_of), len(corpus.ids),
                                 no_target, history, int(budget.max()), chunk_size=chunk_size)
        for r in np.flatnonzero(mask[:, c]):
            out[r].update(int(x) for x in best[r, : budget[r]] if x >= 0)
    return out


def served_hits(scorer: "ModelScorer | None", corpus: Corpus, records: Iterator[dict],
                ks=MOVIELENS_KS, chunk_size: int = CHUNK_SIZE, policy: str = "round_robin",
                floor: int | None = None, explicit: "ModelScorer | None" = None) -> dict[int, np.ndarray]:
    """Hits under the serving merge instead of SPEC §6's max scoring, as the
    retrieval service builds its answer (`serving/retrieval.py`): each user
    embedding retrieves from the corpus (history excluded, exact); explicit
    (CR) embeddings, one per followed topic (`explicit.conditions`, no
    target information), retrieve only items carrying their topic (the
    relevance post-filter); one apportionment of K over all of them, the
    implicit embeddings weighted by importance scaled to average 1, the
    explicit ones 1 each (`common.merging.budgets`); the lists merge under
    `policy` (`round_robin`: the paper; `score`: by score above a `floor`
    per embedding). A record is a hit at K when its target is among the K
    merged candidates. For a single-embedding model alone this equals HR@K.

    Args:
      scorer: the implicit (or single-embedding) model; None = explicit only.
      explicit: a CR model's scorer with `conditions`; None = implicit only.

    Returns: K -> `[records]` bool.
    """
    from common.merging import DEFAULT_FLOOR, budgets, merge

    if scorer is None and explicit is None:
        raise ValueError("served_hits: no model (scorer and explicit are both None)")
    floor = DEFAULT_FLOOR if floor is None else floor
    depth = min(2 * max(ks), len(corpus.ids))  # enough for any budget after skipping duplicates
    hits: dict[int, list] = {k: [] for k in ks}
    for batch in records:
        target = corpus.columns(batch[features.TARGET_ITEM_ID])
        history = corpus.columns(batch[features.HISTORY_ITEM_IDS])
        parts = []  # (lists [b, K, depth], scores, weight [b, K], mask [b, K])
        if scorer is not None:
            emb, mask, importance = scorer.embed(batch, with_importance=True)
            importance = np.where(mask, np.maximum(importance, 0.0), 0.0)
            total = importance.sum(axis=1, keepdims=True)
            weight = np.where(total > 0, importance * mask.sum(axis=1, keepdims=True) / np.maximum(total, 1e-12),
                              mask.astype(float))
            parts.append(_served_lists(emb, mask, scorer.items, target, history, depth, chunk_size)
                         + (weight, mask))
        if explicit is not None:
            emb, mask = explicit.embed(batch)
            topics = explicit.conditions(batch)
            allowed = [lambda lo, hi, t=topics[:, c]: corpus.topic_mask(t, lo, hi) for c in range(emb.shape[1])]
            parts.append(_served_lists(emb, mask, explicit.items, target, history, depth, chunk_size, allowed)
                         + (mask.astype(float), mask))
        lists, scores, weight, mask = (np.concatenate(x, axis=1) for x in zip(*parts))
        for k in ks:
            share = budgets(weight, mask, k)
            hits[k].append(np.asarray([
                target[r] >= 0 and target[r] in merge(policy, lists[r], scores[r], share[r], k, floor=floor)[0]
                for r in range(len(target))]))
    return {k: np.concatenate(v) for k, v in hits.items()}


def _served_lists(emb, mask, items, target, history, depth, chunk_size, allowed=None):
    """Per-embedding top-`depth` corpus columns `[b, K, depth]` and their
    scores (-inf pads). History excluded but for the target, as SPEC §6;
    `allowed[j]`: embedding j's relevance filter (items outside it score
    -inf, which the top-k drops: a short list pads with -1); masked
    embeddings list nothing."""
    lists = np.full(mask.shape + (depth,), -1)
    for j in range(mask.shape[1]):
        allowed_of = allowed[j] if allowed is not None else None
        _, _, lists[:, j] = scan_corpus(_embedding_scores(emb[:, j], items, allowed_of), len(items),
                                        target, history, depth, chunk_size=chunk_size)
    lists[~mask] = -1
    scores = np.einsum("bkd,bkld->bkl", emb, items[np.maximum(lists, 0)]).astype(np.float32)
    return lists, np.where(lists >= 0, scores, -np.inf)

