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

  item_id, topics bytes[t], content float[d] (zeros where missing),
  cat_<name> bytes (empty if missing), features_valid int64,
  train_count int64, in_corpus int64
"""

from __future__ import annotations

from typing import Iterable, Sequence

from common.protowire import varint as _varint

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
DEAD_LETTER_DIR = "dead_letter"
MANIFEST = "manifest.json"
RESOLVED_CONFIG = "config.yaml"


def categorical_key(name: str) -> str:
    return f"{CATEGORICAL_PREFIX}{name}"


def history_validity(negative: Sequence[int], features_valid: Sequence[int]) -> list[int]:
    """Per-item validity (paper eq. 6): features present and action not negative."""
    return [int(bool(f) and not n) for n, f in zip(negative, features_valid)]


# --- tf.train.Example wire encoding -------------------------------------------
# Why hand-written: the prepare pipeline serialises ~1 example per event with
# 50-item histories; building protobuf objects dominated its profile (about
# 100 us per example). These helpers emit exactly the bytes of
# `Example.SerializeToString(deterministic=True)` (map keys sorted), which a
# test checks against protobuf itself.


def _len_field(tag: int, payload: bytes) -> bytes:
    return b"%c%b%b" % (tag, _varint(len(payload)), payload)


def bytes_piece(value: str) -> bytes:
    """One encoded element of a BytesList; join pieces to form the list."""
    return _len_field(0x0A, value.encode("utf-8"))


def bytes_feature(pieces: bytes) -> bytes:
    """Feature{bytes_list} from joined `bytes_piece`s."""
    return _len_field(0x0A, pieces)


def int64_feature(values: Sequence[int]) -> bytes:
    """Feature{int64_list} with packed values."""
    if not values:
        packed = b""
    elif min(values) >= 0 and max(values) < 128:
        packed = bytes(values)
    else:
        packed = b"".join(_varint(int(v)) for v in values)
    return _len_field(0x1A, _len_field(0x0A, packed) if packed else b"")


def float_feature(values: Sequence[float]) -> bytes:
    """Feature{float_list} with packed little-endian float32 values."""
    import struct

    packed = struct.pack(f"<{len(values)}f", *values)
    return _len_field(0x12, _len_field(0x0A, packed) if packed else b"")


def _entry(key: str, value: bytes) -> bytes:
    key_field = _KEY_FIELDS.get(key) or _len_field(0x0A, key.encode("utf-8"))
    return _len_field(0x0A, key_field + _len_field(0x12, value))


def encode_features(feature_bytes: dict[str, bytes]) -> bytes:
    """Example from `{key: encoded Feature}`; keys sorted as protobuf does."""
    return _len_field(0x0A, b"".join(_entry(k, v) for k, v in sorted(feature_bytes.items())))


def _bytes_list(values: Iterable[str]) -> bytes:
    return bytes_feature(b"".join([bytes_piece(v) for v in values]))


def _single_bytes(value: str) -> bytes:
    return bytes_feature(bytes_piece(value))


_KEY_FIELDS = {
    key: _len_field(0x0A, key.encode("utf-8"))
    for key in (USER_ID, TARGET_ITEM_ID, TARGET_TIMESTAMP, TARGET_NEGATIVE, HISTORY_ITEM_IDS,
                HISTORY_NEGATIVE, HISTORY_VALID, CONDITION_TOPIC, FOLLOWED_TOPICS)
}


def encode_example(
    user_id: str,
    target_item_id: str,
    target_timestamp: int,
    target_negative: bool,
    history_item_ids: Sequence[str] | bytes,
    history_negative: Sequence[int],
    history_valid: Sequence[int],
    condition_topic: str = "",
    followed_topics: Sequence[str] = (),
) -> bytes:
    """Serialises one training/eval record as a `tf.train.Example`.

    `history_item_ids` may be pre-joined `bytes_piece`s (the fast path used by
    the pipeline, where consecutive histories share most items).
    """
    if isinstance(history_item_ids, bytes):
        history = bytes_feature(history_item_ids)
    else:
        history = _bytes_list(history_item_ids)
    # Keys in sorted order (what deterministic protobuf serialisation does).
    return _len_field(
        0x0A,
        b"".join(
            [
                _entry(CONDITION_TOPIC, _single_bytes(condition_topic)),
                _entry(FOLLOWED_TOPICS, _bytes_list(followed_topics)),
                _entry(HISTORY_ITEM_IDS, history),
                _entry(HISTORY_NEGATIVE, int64_feature(history_negative)),
                _entry(HISTORY_VALID, int64_feature(history_valid)),
                _entry(TARGET_ITEM_ID, _single_bytes(target_item_id)),
                _entry(TARGET_NEGATIVE, int64_feature([int(bool(target_negative))])),
                _entry(TARGET_TIMESTAMP, int64_feature([int(target_timestamp)])),
                _entry(USER_ID, _single_bytes(user_id)),
            ]
        ),
    )


def encode_item(
    item_id: str,
    topics: Sequence[str],
    content: Sequence[float],
    categorical: dict[str, str],
    features_valid: bool,
    train_count: int,
) -> bytes:
    """Serialises one item-table row as a `tf.train.Example`."""
    feats = {
        ITEM_ID: _single_bytes(item_id),
        ITEM_TOPICS: _bytes_list(topics),
        ITEM_CONTENT: float_feature(list(content)),
        ITEM_FEATURES_VALID: int64_feature([int(bool(features_valid))]),
        ITEM_TRAIN_COUNT: int64_feature([int(train_count)]),
        ITEM_IN_CORPUS: int64_feature([int(train_count > 0)]),
    }
    for name, value in categorical.items():
        feats[categorical_key(name)] = _single_bytes(value)
    return encode_features(feats)


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
