"""The feature contract shared by `beam/`, `trainer/`, `export/` and `serving/`.

Why one module: the data pipeline writes exactly these keys, the trainer
parses exactly these keys and the exported serving signatures accept exactly
these keys, so training and serving cannot drift apart.

Examples (one `tf.train.Example` per record; sequences are chronological,
oldest first, at most `history_length` long):

  user_id            bytes        the user
  target_item_id     bytes        the engaged item (the positive)
  target_timestamp   int64        unix seconds of the target event
  target_negative    int64        1 if the target action is negative
  history_item_ids   bytes[n]     earlier engagements, strictly before target
  history_negative   int64[n]     1 where that engagement was a negative action
  history_valid      int64[n]     1 where the item has all features and the
                                  action is not negative (paper eq. 6)
  condition_topic    bytes        explicit condition (explicit examples only)
  followed_topics    bytes[m]     the user's followed topics

Item table (one `tf.train.Example` per item):

  item_id, topics bytes[t], content float[d] (empty if missing),
  cat_<name> bytes (empty if missing), features_valid int64,
  train_count int64, in_corpus int64
"""

from __future__ import annotations

from typing import Iterable, Sequence

SCHEMA_VERSION = 1

USER_ID = "user_id"
TARGET_ITEM_ID = "target_item_id"
TARGET_TIMESTAMP = "target_timestamp"
TARGET_NEGATIVE = "target_negative"
HISTORY_ITEM_IDS = "history_item_ids"
HISTORY_NEGATIVE = "history_negative"
HISTORY_VALID = "history_valid"
CONDITION_TOPIC = "condition_topic"
FOLLOWED_TOPICS = "followed_topics"

ITEM_ID = "item_id"
ITEM_TOPICS = "topics"
ITEM_CONTENT = "content"
ITEM_FEATURES_VALID = "features_valid"
ITEM_TRAIN_COUNT = "train_count"
ITEM_IN_CORPUS = "in_corpus"
CATEGORICAL_PREFIX = "cat_"

# Output layout of the prepare stage, relative to its output directory.
TRAIN_IMPLICIT = "train/implicit"
TRAIN_EXPLICIT = "train/explicit"
EVAL_IMPLICIT = "eval/implicit"
EVAL_EXPLICIT = "eval/explicit"
EXAMPLE_OUTPUTS = (TRAIN_IMPLICIT, TRAIN_EXPLICIT, EVAL_IMPLICIT, EVAL_EXPLICIT)
ITEM_TABLE = "items/items"
TFRECORD_SUFFIX = ".tfrecord"
VOCAB_ITEMS = "vocab/items.txt"
VOCAB_TOPICS = "vocab/topics.txt"
VOCAB_CATEGORICAL = "vocab/cat_{name}.txt"
ITEM_COUNTS = "items/train_counts.tsv"
CORPUS = "corpus/corpus.txt"
DEAD_LETTER = "dead_letter/dead"
MANIFEST = "manifest.json"
RESOLVED_CONFIG = "config.yaml"


def categorical_key(name: str) -> str:
    return f"{CATEGORICAL_PREFIX}{name}"


def history_validity(negative: Sequence[int], features_valid: Sequence[int]) -> list[int]:
    """Per-item validity (paper eq. 6): features present and action not negative."""
    return [int(bool(f) and not n) for n, f in zip(negative, features_valid)]


def _example_pb2():
    from tensorflow.core.example import example_pb2  # heavy: only when encoding

    return example_pb2


def _set_bytes(feature, values: Iterable[str]) -> None:
    feature.bytes_list.value.extend(v.encode("utf-8") for v in values)


def encode_example(
    user_id: str,
    target_item_id: str,
    target_timestamp: int,
    target_negative: bool,
    history_item_ids: Sequence[str],
    history_negative: Sequence[int],
    history_valid: Sequence[int],
    condition_topic: str = "",
    followed_topics: Sequence[str] = (),
) -> bytes:
    """Serialises one training/eval record as a `tf.train.Example`."""
    ex = _example_pb2().Example()
    f = ex.features.feature
    _set_bytes(f[USER_ID], [user_id])
    _set_bytes(f[TARGET_ITEM_ID], [target_item_id])
    f[TARGET_TIMESTAMP].int64_list.value.append(int(target_timestamp))
    f[TARGET_NEGATIVE].int64_list.value.append(int(bool(target_negative)))
    _set_bytes(f[HISTORY_ITEM_IDS], history_item_ids)
    f[HISTORY_NEGATIVE].int64_list.value.extend(int(v) for v in history_negative)
    f[HISTORY_VALID].int64_list.value.extend(int(v) for v in history_valid)
    _set_bytes(f[CONDITION_TOPIC], [condition_topic])
    _set_bytes(f[FOLLOWED_TOPICS], followed_topics)
    return ex.SerializeToString(deterministic=True)


def encode_item(
    item_id: str,
    topics: Sequence[str],
    content: Sequence[float],
    categorical: dict[str, str],
    features_valid: bool,
    train_count: int,
) -> bytes:
    """Serialises one item-table row as a `tf.train.Example`."""
    ex = _example_pb2().Example()
    f = ex.features.feature
    _set_bytes(f[ITEM_ID], [item_id])
    _set_bytes(f[ITEM_TOPICS], topics)
    f[ITEM_CONTENT].float_list.value.extend(content)
    for name in sorted(categorical):
        _set_bytes(f[categorical_key(name)], [categorical[name]])
    f[ITEM_FEATURES_VALID].int64_list.value.append(int(bool(features_valid)))
    f[ITEM_TRAIN_COUNT].int64_list.value.append(int(train_count))
    f[ITEM_IN_CORPUS].int64_list.value.append(int(train_count > 0))
    return ex.SerializeToString(deterministic=True)


def example_feature_spec():
    """`tf.io.parse_example` spec for training/eval records (ragged histories)."""
    import tensorflow as tf

    return {
        USER_ID: tf.io.FixedLenFeature([], tf.string),
        TARGET_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        TARGET_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
        TARGET_NEGATIVE: tf.io.FixedLenFeature([], tf.int64),
        HISTORY_ITEM_IDS: tf.io.RaggedFeature(tf.string),
        HISTORY_NEGATIVE: tf.io.RaggedFeature(tf.int64),
        HISTORY_VALID: tf.io.RaggedFeature(tf.int64),
        CONDITION_TOPIC: tf.io.FixedLenFeature([], tf.string, default_value=""),
        FOLLOWED_TOPICS: tf.io.RaggedFeature(tf.string),
    }


def item_feature_spec(content_dim: int, categorical_names: Sequence[str]):
    """`tf.io.parse_example` spec for the item table."""
    import tensorflow as tf

    spec = {
        ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        ITEM_TOPICS: tf.io.RaggedFeature(tf.string),
        ITEM_CONTENT: tf.io.RaggedFeature(tf.float32),
        ITEM_FEATURES_VALID: tf.io.FixedLenFeature([], tf.int64),
        ITEM_TRAIN_COUNT: tf.io.FixedLenFeature([], tf.int64),
        ITEM_IN_CORPUS: tf.io.FixedLenFeature([], tf.int64),
    }
    for name in categorical_names:
        spec[categorical_key(name)] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec
