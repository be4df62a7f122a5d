"""tf.data input over the prepare stage's TFRecords (the feature contract)."""

from __future__ import annotations

from trainer import features
from trainer.layers._keras import tf


def pad_history(parsed: dict, history_length: int) -> dict:
    """Ragged histories -> dense `[B, L]` (right-padded with "" / 0), most recent L kept."""
    out = dict(parsed)
    for key, pad in ((features.HISTORY_ITEM_IDS, ""), (features.HISTORY_NEGATIVE, 0),
                     (features.HISTORY_VALID, 0)):
        ragged = parsed[key]
        ragged = ragged[:, -history_length:]
        out[key] = ragged.to_tensor(default_value=pad, shape=[None, history_length])
    out[features.FOLLOWED_TOPICS] = parsed[features.FOLLOWED_TOPICS].to_tensor(default_value="")
    return out


def build_dataset(pattern: str, batch_size: int, history_length: int, shuffle: bool = True,
                  seed: int = 0, repeat: bool = False, drop_remainder: bool = True) -> tf.data.Dataset:
    """Batched, parsed, padded examples from `pattern` (local or any gfile URI).

    Raises:
      FileNotFoundError: the pattern matches no file.
    """
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"training data: pattern {pattern!r} matched no TFRecord files")
    ds = tf.data.TFRecordDataset(files)
    if shuffle:
        ds = ds.shuffle(20_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    spec = features.example_feature_spec()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x: pad_history(tf.io.parse_example(x, spec), history_length),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
