"""The ScaNN item index: build, search, save atomically, load (SPEC §2.4).

Why ScaNN: serving answers one request with one top-k query per user
embedding (up to ~12), over corpora of 10^5-10^7 items, in milliseconds on a
couple of cores. Small corpora are searched exactly (ScaNN brute force);
large ones with a k-means tree (search `leaves_to_search` of `num_leaves`
partitions), anisotropic asymmetric hashing to score the partitions'
items, and exact re-scoring of the best `reorder` candidates.

Only `scann.scann_ops_pybind` is used (no ScaNN TensorFlow ops): the index
is a plain directory beside the SavedModels (`common/contract.py`):

  <index dir>/scann/        the serialised searcher (relative asset paths)
  <index dir>/items.txt     row -> item id
  <index dir>/topics.txt    row -> the item's topics, '|'-joined
  <index dir>/build.json    resolved config, items, dim, build seconds
  <index dir>/recall.json   recall@k against exact search (when measured)
  <index dir>/topics/       per-topic indexes of large topics (explicit
                            retriever; `common/topic_index.py`)

`save` writes into a hidden temporary sibling and renames it into place
(object stores, which cannot rename directories atomically: build.json is
written last as the commit marker), so a killed save never leaves a
directory that `load_index` accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
import uuid

import numpy as np

from common import contract
from common.extras import require

KINDS = ("auto", "brute_force", "tree_ah")
FORMAT_VERSION = 1
# `save` writes `<parent>/.<name><TMP_MARKER><hex>` first; `load_index` refuses such names.
TMP_MARKER = ".tmp-"
# Per-topic indexes (`common/topic_index.py`) live in `<index dir>/topics/`.
TOPIC_INDEXES = "topics"
# Rows padded when a query has fewer than k results: row -1, score -inf (sorts last).
PAD_ROW = -1
PAD_SCORE = -np.inf


@dataclasses.dataclass
class IndexConfig:
    """How to index a corpus; `None` fields are chosen by `resolve_config`.

    Attributes:
      kind: `auto` (exact below `brute_force_max_items`, else `tree_ah`),
        `brute_force` (exact dot products) or `tree_ah` (partitioning tree +
        asymmetric hashing + exact reordering).
      num_leaves: tree partitions (auto: round(sqrt(N))).
      leaves_to_search: partitions searched per query (auto: 5% of the
        leaves, at least 30: recall@100 ~0.98 at 100k and 1M items in
        `benchmarks/export.py`, where 4% / at least 20 gave ~0.96).
      training_sample_size: items sampled to train the tree and the
        quantiser (auto: min(N, 250,000)).
      dims_per_block: dimensions per asymmetric-hashing block (auto: 1; with
        2, recall@100 at 1M items stays below 0.90 even with 800 candidates
        reordered, as 16 codes per 2 dimensions cannot order the top scores).
      anisotropic_threshold: ScaNN's anisotropic quantisation threshold
        (0.2 is ScaNN's recommendation for dot-product search).
      reorder: candidates re-scored exactly per query (auto: 300; at
        search time at least k).
      brute_force_max_items: `auto` searches corpora smaller than this
        exactly.
      topic_index_min_items: every topic carried by at least this many items
        gets its own index over its items (`common/topic_index.py`), so a
        search restricted to a topic (the explicit retriever's relevance
        filter) stays a top-k search; None or 0 = none (`mer build-index`
        sets `brute_force_max_items` for the explicit retriever: smaller
        topics are scored exactly over their items).
    """

    kind: str = "auto"
    num_leaves: int | None = None
    leaves_to_search: int | None = None
    training_sample_size: int | None = None
    dims_per_block: int | None = None
    anisotropic_threshold: float = 0.2
    reorder: int | None = None
    brute_force_max_items: int = 20_000
    topic_index_min_items: int | None = None


def retriever_config(retriever: str, cfg: IndexConfig | None = None) -> IndexConfig:
    """`cfg` (default all automatic) with the retriever's defaults: explicit
    lists are restricted to their condition topic, so unless set, every
    topic too large to score exactly per request (>= `brute_force_max_items`
    items) gets its own index."""
    cfg = dataclasses.replace(cfg or IndexConfig())
    if cfg.topic_index_min_items is None and retriever == contract.EXPLICIT:
        cfg.topic_index_min_items = cfg.brute_force_max_items
    return cfg


def _positive(cfg: IndexConfig, name: str) -> None:
    value = getattr(cfg, name)
    if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"IndexConfig.{name}={value!r}: must be a positive integer or None (auto)")


def resolve_config(num_items: int, cfg: IndexConfig | None = None) -> IndexConfig:
    """Fills every `None` field of `cfg` for a corpus of `num_items`.

    Exact search below `brute_force_max_items` items (at 20k items and d=32 a
    12-query exact request is ~1 ms on one core); above it a tree with ~sqrt(N)
    leaves, of which 5% (>= 30) are searched, AH scoring with one dimension
    per block and exact reordering of 300 candidates (tuned with
    `benchmarks/export.py` at 100k and 1M items).
    Explicitly set fields are kept.

    Args:
      num_items: corpus size N (>= 1).
      cfg: the requested config; None = all automatic.

    Returns:
      A new `IndexConfig` with `kind` in {"brute_force", "tree_ah"}; the tree
      fields are None for brute force.

    Raises:
      ValueError: on an unknown kind, non-positive sizes, or a tree that
        does not fit the corpus.
    """
    cfg = dataclasses.replace(cfg or IndexConfig())
    if cfg.kind not in KINDS:
        raise ValueError(f"IndexConfig.kind={cfg.kind!r}: allowed {KINDS}")
    if num_items < 1:
        raise ValueError(f"num_items={num_items}: an index needs at least one item")
    for name in ("num_leaves", "leaves_to_search", "training_sample_size", "dims_per_block",
                 "reorder", "brute_force_max_items"):
        _positive(cfg, name)
    if cfg.topic_index_min_items is not None and (not isinstance(cfg.topic_index_min_items, (int, np.integer))
                                                  or cfg.topic_index_min_items < 0):
        raise ValueError(f"IndexConfig.topic_index_min_items={cfg.topic_index_min_items!r}: "
                         "must be an integer >= 0 (0 or None = no topic indexes)")
    if not cfg.anisotropic_threshold >= 0 and not math.isnan(cfg.anisotropic_threshold):
        raise ValueError(f"IndexConfig.anisotropic_threshold={cfg.anisotropic_threshold}: must be >= 0 "
                         "(or nan to turn anisotropic quantisation off)")
    if cfg.kind == "auto":
        cfg.kind = "brute_force" if num_items < cfg.brute_force_max_items else "tree_ah"
    if cfg.kind == "brute_force":
        cfg.num_leaves = cfg.leaves_to_search = cfg.training_sample_size = None
        cfg.dims_per_block = cfg.reorder = None
        return cfg
    if cfg.num_leaves is None:
        cfg.num_leaves = max(1, int(round(math.sqrt(num_items))))
    if cfg.num_leaves > num_items:
        raise ValueError(f"IndexConfig.num_leaves={cfg.num_leaves} exceeds the {num_items} items")
    if cfg.leaves_to_search is None:
        cfg.leaves_to_search = min(cfg.num_leaves, max(30, int(round(0.05 * cfg.num_leaves))))
    if cfg.leaves_to_search > cfg.num_leaves:
        raise ValueError(f"IndexConfig.leaves_to_search={cfg.leaves_to_search} exceeds "
                         f"num_leaves={cfg.num_leaves}")
    if cfg.training_sample_size is None:
        cfg.training_sample_size = min(num_items, 250_000)
    cfg.training_sample_size = min(cfg.training_sample_size, num_items)
    if cfg.dims_per_block is None:
        cfg.dims_per_block = 1
    if cfg.reorder is None:
        cfg.reorder = 300
    return cfg


@dataclasses.dataclass
class ItemIndex:
    """A searchable item index: a ScaNN searcher plus row -> item id/topics.

    Attributes:
      searcher: the `scann_ops_pybind.ScannSearcher`.
      item_ids: row -> item id.
      topics: row -> the item's topics.
      config: the resolved `IndexConfig`.
      dim: embedding width d.
      build_seconds: wall time of the ScaNN build (0 when unknown).
      topic_indexes: topic -> `common.topic_index.TopicIndex`, the per-topic
        indexes (`IndexConfig.topic_index_min_items`); empty = none.
    """

    searcher: object
    item_ids: list[str]
    topics: list[list[str]]
    config: IndexConfig
    dim: int
    build_seconds: float = 0.0
    topic_indexes: dict = dataclasses.field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def search(self, queries: np.ndarray, k: int, leaves_to_search: int | None = None,
               reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items by dot product for each query, in one batched call.

        Args:
          queries: `[Q, d]` query embeddings (a 1-D `[d]` is one query).
          k: results per query (>= 1).
          leaves_to_search: tree_ah only: overrides the config for this call.
          reorder: tree_ah only: candidates re-scored exactly (>= k is used).

        Returns:
          `(rows [Q, k] int64, scores [Q, k] float32)`, best first; rows that
          do not exist (k > N, or too few candidates) are -1 with score -inf.

        Raises:
          ValueError: on a bad k or query shape.
        """
        return search_searcher(self.searcher, self.config, self.num_items, self.dim, queries, k,
                               leaves_to_search, reorder)


def search_searcher(searcher, config: IndexConfig, num_items: int, dim: int, queries: np.ndarray, k: int,
                    leaves_to_search: int | None = None, reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`ItemIndex.search` on a bare ScaNN searcher of `num_items` rows (rows of that searcher)."""
    queries = np.asarray(queries, np.float32)
    if queries.ndim == 1:
        queries = queries[None]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries shape {queries.shape}: expected [Q, {dim}]")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: must be a positive integer")
    n = min(int(k), num_items)
    kwargs = {}
    if config.kind == "tree_ah":
        kwargs = dict(leaves_to_search=int(leaves_to_search or config.leaves_to_search),
                      pre_reorder_num_neighbors=max(int(reorder or config.reorder), n))
    if len(queries):
        idx, dist = searcher.search_batched(np.ascontiguousarray(queries), final_num_neighbors=n, **kwargs)
    else:
        idx, dist = np.zeros((0, n), np.uint32), np.zeros((0, n), np.float32)
    rows = np.full((len(queries), k), PAD_ROW, np.int64)
    scores = np.full((len(queries), k), PAD_SCORE, np.float32)
    idx = np.asarray(idx, np.int64)[:, :n]
    dist = np.asarray(dist, np.float32)[:, :n]
    found = ~np.isnan(dist)
    rows[:, :n] = np.where(found, idx, PAD_ROW)
    scores[:, :n] = np.where(found, dist, PAD_SCORE)
    return rows, scores


def _check_items(embeddings: np.ndarray, item_ids: list[str], item_topics: list[list[str]]) -> None:
    if embeddings.ndim != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
        raise ValueError(f"embeddings shape {embeddings.shape}: expected [N >= 1, d >= 1]")
    if not np.isfinite(embeddings).all():
        bad = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
        raise ValueError(f"embeddings row {bad} (item {item_ids[bad]!r}) is not finite")
    if len(item_ids) != len(embeddings) or len(item_topics) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(item_ids)} item_ids and "
                         f"{len(item_topics)} item_topics: one each per row")
    for row, item in enumerate(item_ids):
        if not item or "\n" in item or "\r" in item:
            raise ValueError(f"item_ids[{row}]={item!r}: must be non-empty, without line breaks")
    for row, topics in enumerate(item_topics):
        for t in topics:
            if not t or "|" in t or "\n" in t or "\r" in t:
                raise ValueError(f"item_topics[{row}] has topic {t!r}: must be non-empty, "
                                 "without '|' or line breaks")


def build_index(embeddings: np.ndarray, item_ids: list[str], item_topics: list[list[str]],
                cfg: IndexConfig | None = None) -> ItemIndex:
    """Builds the ScaNN searcher over the item embeddings.

    Args:
      embeddings: `[N, d]` float32 item embeddings (row i = `item_ids[i]`).
      item_ids: N item ids.
      item_topics: N topic lists (the explicit retriever's post-filter).
      cfg: the requested config (resolved with `resolve_config`).

    Returns:
      The `ItemIndex`.

    Raises:
      ValueError: on mismatched lengths, bad ids/topics or non-finite rows.
    """
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    _check_items(embeddings, item_ids, item_topics)
    resolved = resolve_config(len(embeddings), cfg)
    start = time.perf_counter()
    searcher = build_searcher(embeddings, resolved)
    topic_indexes = {}
    if resolved.topic_index_min_items:
        from common.topic_index import build_topic_indexes

        topic_indexes = build_topic_indexes(embeddings, item_topics, cfg or IndexConfig(),
                                            resolved.topic_index_min_items)
    seconds = time.perf_counter() - start
    return ItemIndex(searcher, list(item_ids), [list(t) for t in item_topics], resolved,
                     embeddings.shape[1], seconds, topic_indexes)


def build_searcher(embeddings: np.ndarray, resolved: IndexConfig):
    """The ScaNN searcher of a resolved config over `[N, d]` float32 embeddings."""
    scann_ops_pybind = require("scann.scann_ops.py.scann_ops_pybind")

    builder = scann_ops_pybind.builder(embeddings, min(100, len(embeddings)), "dot_product")
    if resolved.kind == "brute_force":
        builder = builder.score_brute_force()
    else:
        builder = (builder.tree(num_leaves=resolved.num_leaves,
                                num_leaves_to_search=resolved.leaves_to_search,
                                training_sample_size=resolved.training_sample_size)
                   .score_ah(resolved.dims_per_block,
                             anisotropic_quantization_threshold=resolved.anisotropic_threshold,
                             training_sample_size=resolved.training_sample_size)
                   .reorder(resolved.reorder))
    return builder.build()


# -- exact reference -------------------------------------------------------------
def exact_search(db: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product (NumPy matmul + argpartition), ties by lower row.

    Args:
      db: `[N, d]` item embeddings.
      queries: `[Q, d]` queries.
      k: results per query.

    Returns:
      `(rows [Q, k] int64, scores [Q, k] float32)`, padded with -1 / -inf when
      k > N.
    """
    db = np.asarray(db, np.float32)
    queries = np.asarray(queries, np.float32)
    num, n = len(queries), min(k, len(db))
    rows = np.full((num, k), PAD_ROW, np.int64)
    scores = np.full((num, k), PAD_SCORE, np.float32)
    chunk = max(1, (1 << 26) // max(len(db), 1))  # <= 256 MB of scores at a time
    for lo in range(0, num, chunk):
        s = queries[lo:lo + chunk] @ db.T
        top = np.argpartition(-s, n - 1, axis=1)[:, :n] if n < len(db) else \
            np.broadcast_to(np.arange(len(db)), s.shape)
        top_s = np.take_along_axis(s, top, axis=1)
        # argpartition splits ties at the k-th score arbitrarily: redo those rows stably.
        tied = (s >= top_s.min(axis=1, keepdims=True)).sum(axis=1) > n
        order = np.lexsort((top, -top_s), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        for r in np.flatnonzero(tied):
            top[r] = np.argsort(-s[r], kind="stable")[:n]
        rows[lo:lo + chunk, :n] = top
        scores[lo:lo + chunk, :n] = np.take_along_axis(s, top, axis=1)
    return rows, scores


def recall_at_k(index: ItemIndex, db: np.ndarray, queries: np.ndarray, k: int = 100) -> dict:
    """recall@k of the index against exact search on the same embeddings.

    recall = |ANN top-k ∩ exact top-k| / min(k, N), averaged over queries.

    Args:
      index: the index built on `db`.
      db: `[N, d]` the indexed embeddings.
      queries: `[Q, d]` query embeddings.
      k: the cut-off.

    Returns:
      `{"recall", "recall_min", "k", "queries", "items"}`, and
      "topic_indexes" (`common.topic_index.topic_recall`) when the index
      has per-topic indexes.

    Raises:
      ValueError: `queries` is empty.
    """
    if len(queries) == 0:
        raise ValueError("recall_at_k: queries is empty; recall needs at least one query embedding")
    found, _ = index.search(queries, k)
    exact, _ = exact_search(db, queries, k)
    per_query = overlap_at_k(found, exact, min(k, len(db)))
    recall = {"recall": float(per_query.mean()), "recall_min": float(per_query.min()), "k": int(k),
              "queries": int(len(queries)), "items": int(len(db))}
    if index.topic_indexes:
        from common.topic_index import topic_recall

        recall["topic_indexes"] = topic_recall(index.topic_indexes, db, queries, k)
    return recall


def overlap_at_k(found: np.ndarray, exact: np.ndarray, n: int) -> np.ndarray:
    """Per query, |found ∩ exact top-n| / n (found's -1 padding ignored)."""
    return np.array([len(set(a[a >= 0].tolist()) & set(b[:n].tolist())) / n for a, b in zip(found, exact)])


# -- files -------------------------------------------------------------------------
def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _is_local(path: str) -> bool:
    return "://" not in path


def _write_text(path: str, text: str) -> None:
    with _gfile().GFile(path, "w") as handle:
        handle.write(text)


def _read_lines(path: str, count: int) -> list[str]:
    with _gfile().GFile(path) as handle:
        text = handle.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != count:
        raise ValueError(f"{path} has {len(lines)} lines; build.json says {count} items")
    return lines


def _copy_tree(src: str, dst: str) -> None:
    gfile = _gfile()
    gfile.makedirs(dst)
    for name in gfile.listdir(src):
        name = name.rstrip("/")
        if gfile.isdir(contract.join(src, name)):
            _copy_tree(contract.join(src, name), contract.join(dst, name))
        else:
            gfile.copy(contract.join(src, name), contract.join(dst, name), overwrite=True)


def write_searcher(searcher, scann_dir: str) -> None:
    """Serialises a ScaNN searcher into `scann_dir` (relative asset paths)."""
    if _is_local(scann_dir):
        os.makedirs(scann_dir)
        searcher.serialize(scann_dir, relative_path=True)
    else:  # ScaNN writes local files only: serialise locally, then copy.
        with tempfile.TemporaryDirectory() as local:
            searcher.serialize(local, relative_path=True)
            _copy_tree(local, scann_dir)


def read_searcher(scann_dir: str):
    """Loads a searcher written by `write_searcher` (local path or gfile URI)."""
    if _is_local(scann_dir):
        return _load_searcher(scann_dir)
    with tempfile.TemporaryDirectory() as local:  # ScaNN reads local files only.
        _copy_tree(scann_dir, os.path.join(local, "scann"))
        return _load_searcher(os.path.join(local, "scann"))


def _write_files(index: ItemIndex, directory: str, recall: dict | None) -> None:
    """Writes the layout into `directory`; build.json last (the commit marker)."""
    write_searcher(index.searcher, contract.join(directory, contract.INDEX_SEARCHER))
    if index.topic_indexes:
        from common.topic_index import save_topic_indexes

        save_topic_indexes(index.topic_indexes, contract.join(directory, TOPIC_INDEXES))
    _write_text(contract.join(directory, contract.INDEX_ITEMS), "".join(f"{i}\n" for i in index.item_ids))
    _write_text(contract.join(directory, contract.INDEX_TOPICS),
                "".join("|".join(t) + "\n" for t in index.topics))
    if recall is not None:
        _write_text(contract.join(directory, contract.INDEX_RECALL), json.dumps(recall, indent=2) + "\n")
    build = {"format": FORMAT_VERSION, "config": dataclasses.asdict(index.config),
             "num_items": index.num_items, "dim": index.dim,
             "build_seconds": round(index.build_seconds, 3), "scann_version": _scann_version()}
    _write_text(contract.join(directory, contract.INDEX_BUILD), json.dumps(build, indent=2) + "\n")


def save(index: ItemIndex, directory: str, recall: dict | None = None) -> str:
    """Writes the index to `directory` atomically (the `common/contract.py` layout).

    Local paths: everything is written into a hidden sibling
    `.<name>.tmp-<hex>` (refused by `load_index`, and not an integer version)
    that is renamed to `directory` at the end. Object stores (gfile URIs such
    as gs://) have no atomic directory rename, so there the files go straight
    into `directory` with build.json written last: a save killed earlier
    leaves a directory without build.json, which `load_index` refuses.
    On an error the partial directory is removed.

    Args:
      index: the index.
      directory: the version directory, e.g. `contract.index_dir(base, "implicit", 1)`;
        a local path or a `tf.io.gfile` URI.
      recall: `recall_at_k`'s result, written as recall.json when given.

    Returns:
      `directory`.

    Raises:
      FileExistsError: `directory` already exists (index versions are immutable).
    """
    gfile = _gfile()
    directory = directory.rstrip("/")
    if gfile.exists(directory):
        raise FileExistsError(f"index directory {directory} already exists; write a new version")
    staging = directory
    if _is_local(directory):
        parent, name = os.path.split(os.path.abspath(directory))
        staging = os.path.join(parent, f".{name}{TMP_MARKER}{uuid.uuid4().hex[:12]}")
    gfile.makedirs(staging)
    try:
        _write_files(index, staging, recall)
        if staging != directory:
            os.rename(staging, directory)
    except BaseException:
        if gfile.exists(staging):
            gfile.rmtree(staging)
        raise
    return directory


def _scann_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("scann")
    except metadata.PackageNotFoundError:
        return "unknown"


_ASSET_PATH = re.compile(r'(asset_path:\s*")([^"]*)(")')


def _load_searcher(scann_dir: str):
    """Loads a serialised searcher from a local directory, wherever it was saved.

    `save` serialises with relative asset paths; searchers serialised with
    ScaNN's default absolute paths (which break once the directory is moved
    or copied) are pointed at the files beside the pbtxt instead.
    """
    scann_ops_pybind = require("scann.scann_ops.py.scann_ops_pybind")

    assets = os.path.join(scann_dir, "scann_assets.pbtxt")
    with open(assets) as handle:
        text = handle.read()
    if not any(os.path.isabs(m.group(2)) for m in _ASSET_PATH.finditer(text)):
        return scann_ops_pybind.load_searcher(scann_dir, assets_backcompat_shim=False)
    fixed = _ASSET_PATH.sub(lambda m: m.group(1) + os.path.basename(m.group(2)) + m.group(3), text)
    return scann_ops_pybind.ScannSearcher(scann_ops_pybind.scann_pybind.ScannNumpy(scann_dir, fixed))


def load_index(directory: str) -> ItemIndex:
    """Loads an index written by `save` (from any directory it was moved to).

    Args:
      directory: the index version directory (local path or gfile URI).

    Returns:
      The `ItemIndex`.

    Raises:
      FileNotFoundError: the directory, or one of its files, is missing
        (the message names it), or it is an unfinished save's temporary
        directory.
      ValueError: the files disagree (line counts vs build.json).
    """
    gfile = _gfile()
    directory = directory.rstrip("/")
    if not gfile.isdir(directory):
        raise FileNotFoundError(f"no index directory {directory}")
    if TMP_MARKER in directory.rsplit("/", 1)[-1]:
        raise FileNotFoundError(f"{directory} is the temporary directory of an unfinished index save, "
                                "not an index")
    scann_dir = contract.join(directory, contract.INDEX_SEARCHER)
    required = [contract.join(directory, name)
                for name in (contract.INDEX_BUILD, contract.INDEX_ITEMS, contract.INDEX_TOPICS)]
    for path in required + [contract.join(scann_dir, "scann_assets.pbtxt")]:
        if not gfile.exists(path):
            raise FileNotFoundError(f"index {directory} is incomplete: {path} is missing")
    with gfile.GFile(contract.join(directory, contract.INDEX_BUILD)) as handle:
        build = json.load(handle)
    num = int(build["num_items"])
    item_ids = _read_lines(contract.join(directory, contract.INDEX_ITEMS), num)
    topics = [line.split("|") if line else []
              for line in _read_lines(contract.join(directory, contract.INDEX_TOPICS), num)]
    searcher = read_searcher(scann_dir)
    cfg = IndexConfig(**build["config"])
    from common.topic_index import load_topic_indexes

    topic_indexes = {}
    # (listdir, not isdir: isdir is true for any ram:// prefix); a topics/
    # directory without its manifest is an incomplete copy: an error.
    if TOPIC_INDEXES in {name.rstrip("/") for name in gfile.listdir(directory)}:
        topic_indexes = load_topic_indexes(contract.join(directory, TOPIC_INDEXES), int(build["dim"]))
    return ItemIndex(searcher, item_ids, topics, cfg, int(build["dim"]), float(build["build_seconds"]),
                     topic_indexes)


def load_recall(directory: str) -> dict | None:
    """The index's recall.json, or None when it was saved without one."""
    gfile = _gfile()
    path = contract.join(directory, contract.INDEX_RECALL)
    if not gfile.exists(path):
        return None
    with gfile.GFile(path) as handle:
        return json.load(handle)


__all__ = ["IndexConfig", "ItemIndex", "build_index", "exact_search", "load_index", "load_recall",
           "recall_at_k", "resolve_config", "retriever_config", "save"]
