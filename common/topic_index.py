"""Per-topic ScaNN indexes: a top-k search restricted to one topic's items.

The explicit retriever's candidates must carry their condition topic (the
relevance post-filter, paper §3.3). Filtering one corpus-wide ANN list keeps
little of it when the embedding points away from the topic's items, and
scoring a large topic exactly costs time proportional to its size on every
request (a 460k-item topic at d=32: ~60 MB read per query). So every topic
carried by at least `IndexConfig.topic_index_min_items` items gets its own
index over those items, built by the corpus index's rules resolved for the
topic's size (`common.item_index.resolve_config`; the corpus's explicit
tree sizes are not reused); smaller topics are scored exactly over their
items by the service.

Layout, inside the corpus index's directory (written before its build.json,
so it is part of the same atomic save):

  topics/topics.json      {"topics": [{"topic", "dir", "items", "config"}]}
  topics/<n>/rows.npy     the topic's rows of the corpus index, ascending
  topics/<n>/scann/       its searcher
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import numpy as np

from common import contract
from common.item_index import (PAD_ROW, IndexConfig, build_searcher, exact_search, overlap_at_k, read_searcher,
                               resolve_config, search_searcher, write_searcher)
from common.progress import Progress

log = logging.getLogger(__name__)
MANIFEST = "topics.json"
# Sized for the corpus, not for a topic: a topic index chooses its own
# (a corpus `leaves_to_search=200` would exceed a 20k-item topic's 141 leaves).
TOPIC_AUTO = dict(topic_index_min_items=None, num_leaves=None, leaves_to_search=None, training_sample_size=None)
ROWS = "rows.npy"


@dataclasses.dataclass
class TopicIndex:
    """The index of one topic's items.

    Attributes:
      topic: the topic.
      rows: `[M]` int64 rows of the corpus index carrying it, ascending
        (searcher row i = corpus row `rows[i]`).
      searcher: the ScaNN searcher over those rows' embeddings.
      config: its resolved `IndexConfig`.
      dim: embedding width.
    """

    topic: str
    rows: np.ndarray
    searcher: object
    config: IndexConfig
    dim: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the topic's items: `(corpus rows [Q, k], scores [Q, k])`,
        padded with -1 / -inf when the topic has fewer than k items."""
        local, scores = search_searcher(self.searcher, self.config, len(self.rows), self.dim, queries, k)
        return np.where(local >= 0, self.rows[np.maximum(local, 0)], PAD_ROW), scores


def topic_pairs(item_topics: list[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Every (row, topic) pair, in row order.

    Returns:
      `(topics, code, row, per_row)`: the distinct topics in first-seen
      order, each pair's topic (index into `topics`) and row (int64), and
      the number of pairs of each row.
    """
    codes: dict[str, int] = {}
    code = np.fromiter((codes.setdefault(t, len(codes)) for topics in item_topics for t in topics), np.int64)
    per_row = np.fromiter(map(len, item_topics), np.int64, len(item_topics))
    return list(codes), code, np.repeat(np.arange(len(item_topics), dtype=np.int64), per_row), per_row


def topic_members(item_topics: list[list[str]]) -> dict[str, np.ndarray]:
    """topic -> the rows carrying it (int64, ascending, each row once)."""
    topics, flat, rows, _ = topic_pairs(item_topics)
    if not len(flat):
        return {}
    order = np.lexsort((rows, flat))
    flat, rows = flat[order], rows[order]
    keep = np.ones(len(rows), bool)
    keep[1:] = (flat[1:] != flat[:-1]) | (rows[1:] != rows[:-1])  # an item listing a topic twice
    flat, rows = flat[keep], rows[keep]
    bounds = np.searchsorted(flat, np.arange(len(topics) + 1))
    return {t: rows[bounds[c]:bounds[c + 1]] for c, t in enumerate(topics)}


def build_topic_indexes(embeddings: np.ndarray, item_topics: list[list[str]], cfg: IndexConfig,
                        min_items: int) -> dict[str, TopicIndex]:
    """An index for every topic carried by at least `min_items` rows.

    Args:
      embeddings: `[N, d]` float32 corpus embeddings.
      item_topics: N topic lists.
      cfg: the requested (unresolved) config; resolved per topic size.
      min_items: the size threshold (>= 1).
    """
    out = {}
    members = topic_members(item_topics)
    large = sorted((t for t, rows in members.items() if len(rows) >= min_items), key=lambda t: -len(members[t]))
    if not large:
        return out
    with Progress("topic indexes", len(large), "indexes", log) as bar:
        for topic in large:
            rows = members[topic]
            resolved = resolve_config(len(rows), dataclasses.replace(cfg, **TOPIC_AUTO))
            out[topic] = TopicIndex(topic, rows, build_searcher(np.ascontiguousarray(embeddings[rows]), resolved),
                                    resolved, embeddings.shape[1])
            bar.update()
        bar.note = f"topics with >= {min_items:,} items; the largest {len(members[large[0]]):,} items"
    return out


def save_topic_indexes(indexes: dict[str, TopicIndex], directory: str) -> None:
    """Writes the indexes into `directory` (see the module docstring)."""
    import tensorflow as tf

    entries = []
    for n, (topic, index) in enumerate(sorted(indexes.items())):
        sub = contract.join(directory, f"{n:05d}")
        write_searcher(index.searcher, contract.join(sub, contract.INDEX_SEARCHER))
        buffer = io.BytesIO()
        np.save(buffer, index.rows)
        with tf.io.gfile.GFile(contract.join(sub, ROWS), "wb") as handle:
            handle.write(buffer.getvalue())
        entries.append({"topic": topic, "dir": f"{n:05d}", "items": int(len(index.rows)),
                        "config": dataclasses.asdict(index.config)})
    # Written last: `load_topic_indexes` refuses a directory without it.
    with tf.io.gfile.GFile(contract.join(directory, MANIFEST), "w") as handle:
        handle.write(json.dumps({"topics": entries}, indent=2) + "\n")


def load_topic_indexes(directory: str, dim: int) -> dict[str, TopicIndex]:
    """Reads what `save_topic_indexes` wrote (`dim`: the corpus index's width).

    Raises:
      FileNotFoundError: the manifest or a topic's files are missing (named).
    """
    import tensorflow as tf

    manifest = contract.join(directory, MANIFEST)
    if not tf.io.gfile.exists(manifest):
        raise FileNotFoundError(f"topic indexes {directory} are incomplete: {manifest} is missing")
    with tf.io.gfile.GFile(manifest) as handle:
        entries = json.load(handle)["topics"]
    out = {}
    for entry in entries:
        sub = contract.join(directory, entry["dir"])
        rows_path = contract.join(sub, ROWS)
        if not tf.io.gfile.exists(rows_path):
            raise FileNotFoundError(f"topic index of {entry['topic']!r} is incomplete: {rows_path} is missing")
        with tf.io.gfile.GFile(rows_path, "rb") as handle:
            rows = np.load(io.BytesIO(handle.read()))
        if len(rows) != entry["items"]:
            raise ValueError(f"{rows_path} has {len(rows)} rows; {manifest} says {entry['items']}")
        config = IndexConfig(**entry["config"])
        searcher = read_searcher(contract.join(sub, contract.INDEX_SEARCHER))
        out[entry["topic"]] = TopicIndex(entry["topic"], rows.astype(np.int64), searcher, config, dim)
    return out


def topic_recall(indexes: dict[str, TopicIndex], db: np.ndarray, queries: np.ndarray, k: int = 100,
                 max_queries: int = 200) -> dict:
    """recall@k of each topic index against exact search over the topic's
    items (up to `max_queries` of `queries` per topic).

    Returns:
      `{"recall" (mean over topics), "recall_min" (worst topic), "k",
      "queries_per_topic", "topics", "per_topic": {topic: recall}}`.
    """
    if len(queries) == 0:
        raise ValueError("topic_recall: queries is empty")
    queries = np.asarray(queries[:max_queries], np.float32)
    per_topic = {}
    for topic, index in sorted(indexes.items()):
        found, _ = index.search(queries, k)
        exact, _ = exact_search(db[index.rows], queries, k)
        exact = index.rows[exact]
        per_topic[topic] = float(overlap_at_k(found, exact, min(k, len(index.rows))).mean())
    values = list(per_topic.values())
    return {"recall": float(np.mean(values)), "recall_min": float(np.min(values)), "k": int(k),
            "queries_per_topic": int(len(queries)), "topics": len(values), "per_topic": per_topic}
