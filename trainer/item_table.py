"""Loads the prepare stage's item table and vocabularies into arrays.

The trainer reads the *artifacts* of `beam/` (files), never its code.
"""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np

from trainer import features


@dataclasses.dataclass
class ItemTable:
    """Row 0 is the unknown/padding item; row i+1 is `ids[i]`.

    Attributes:
      ids: item ids in vocabulary order (most engaged first).
      content: `[N+1, d]` float32 content vectors (d may be 0).
      topic_ids: `[N+1, T]` int32 topic ids (0 = none; topic i+1 = topics[i]).
      categorical_ids: `[N+1, C]` int32 global categorical ids (0 = missing).
      valid: `[N+1]` int32 feature validity.
      train_count: `[N+1]` int64 training engagements.
      topics: topic vocabulary.
      categorical_columns: column names; `categorical_sizes` their vocab sizes.
      vocab_files: `{"items": path, "topics": path}` the vocabularies were
        read from (empty for tables built in memory).
      topics_truncated: items that had more distinct topics than the `T`
        columns hold (`keep_rarest_topics`).
    """

    ids: list[str]
    content: np.ndarray
    topic_ids: np.ndarray
    categorical_ids: np.ndarray
    valid: np.ndarray
    train_count: np.ndarray
    topics: list[str]
    categorical_columns: list[str]
    categorical_sizes: list[int]
    vocab_files: dict = dataclasses.field(default_factory=dict)
    topics_truncated: int = 0

    @property
    def num_categorical_values(self) -> int:
        return 1 + sum(self.categorical_sizes)

    def item_topics(self, index: int) -> list[str]:
        return [self.topics[t - 1] for t in self.topic_ids[index] if t > 0]


def _lines(path: str) -> list[str]:
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def keep_rarest_topics(item_topics: list[list[int]], max_topics: int) -> tuple[list[list[int]], int]:
    """At most `max_topics` distinct topics per item, the most informative kept.

    The rule: an item's topics are deduplicated (first occurrence kept);
    when more than `max_topics` remain, the rarest are kept, rarity being
    the number of items (of all `item_topics`) that carry the topic, ties
    by the item's own order; the kept topics stay in that order. Why
    rarest: a topic half the catalogue carries says little about an item,
    one that a handful of items carry says much (the IDF argument); file
    order would keep whatever the source happened to list first.

    Args:
      item_topics: per item, its topic ids in source order.
      max_topics: topics kept per item (`model.max_item_topics`).

    Returns:
      `(kept topics per item, number of items that lost topics)`.
    """
    distinct = [list(dict.fromkeys(ts)) for ts in item_topics]
    carried_by = collections.Counter(t for ts in distinct for t in ts)
    kept, truncated = [], 0
    for ts in distinct:
        if len(ts) > max_topics:
            truncated += 1
            rarest = set(sorted(range(len(ts)), key=lambda i, ts=ts: (carried_by[ts[i]], i))[:max_topics])
            ts = [t for i, t in enumerate(ts) if i in rarest]
        kept.append(ts)
    return kept, truncated


def load_item_table(prepared_dir: str, max_topics: int = 3) -> ItemTable:
    """Reads `items/items-*.tfrecord` and the vocabularies under `prepared_dir`.

    Args:
      max_topics: topic columns (`model.max_item_topics` for a model's
        table); items with more keep their rarest (`keep_rarest_topics`).
    """
    import tensorflow as tf

    from trainer.data import ragged_rows

    join = lambda p: f"{prepared_dir.rstrip('/')}/{p}"  # noqa: E731
    manifest = json.loads(tf.io.gfile.GFile(join(features.MANIFEST)).read())
    columns = list(manifest["tables"]["categorical_columns"])
    content_dim = int(manifest["tables"]["content_dim"])
    ids = _lines(join(features.VOCAB_ITEMS))
    topics = _lines(join(features.VOCAB_TOPICS))
    topic_index = {t: i + 1 for i, t in enumerate(topics)}
    cat_index, sizes, offset = [], [], 1
    for name in columns:
        vocab = _lines(join(features.VOCAB_CATEGORICAL.format(name=name)))
        cat_index.append({v: offset + i for i, v in enumerate(vocab)})
        sizes.append(len(vocab))
        offset += len(vocab)
    row = {item: i + 1 for i, item in enumerate(ids)}
    n = len(ids) + 1
    content = np.zeros((n, content_dim), np.float32)
    topic_ids = np.zeros((n, max_topics), np.int32)
    cat_ids = np.zeros((n, len(columns)), np.int32)
    valid = np.zeros(n, np.int32)
    counts = np.zeros(n, np.int64)
    topic_rows, source_topics = [], []
    spec = features.item_feature_spec(content_dim, columns)
    files = tf.io.gfile.glob(join(f"{features.ITEM_TABLE}-*{features.TFRECORD_SUFFIX}"))
    for batch in tf.data.TFRecordDataset(sorted(files)).batch(4096).map(
            lambda x: tf.io.parse_example(x, spec)):
        # One NumPy conversion per batch; indexing tensors per item is eager-op
        # bound (~5 ms an item: minutes for a 10^5-item table).
        rows = np.asarray([row[item.decode()] for item in batch[features.ITEM_ID].numpy()], np.int64)
        vectors = ragged_rows(batch[features.ITEM_CONTENT])
        item_topics = ragged_rows(batch[features.ITEM_TOPICS])
        for j, r in enumerate(rows):
            if content_dim and len(vectors[j]):
                content[r] = vectors[j]
            topic_rows.append(r)
            source_topics.append([topic_index[t.decode()] for t in item_topics[j]])
        for c, name in enumerate(columns):
            values = batch[features.categorical_key(name)].numpy()
            cat_ids[rows, c] = [cat_index[c].get(v.decode(), 0) for v in values]
        valid[rows] = batch[features.ITEM_FEATURES_VALID].numpy()
        counts[rows] = batch[features.ITEM_TRAIN_COUNT].numpy()
    kept, truncated = keep_rarest_topics(source_topics, max_topics)
    for r, ts in zip(topic_rows, kept):
        topic_ids[r, : len(ts)] = ts
    vocab_files = {"items": join(features.VOCAB_ITEMS), "topics": join(features.VOCAB_TOPICS)}
    return ItemTable(ids, content, topic_ids, cat_ids, valid, counts, topics, columns, sizes, vocab_files,
                     truncated)
