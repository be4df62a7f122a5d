"""tf.data input over the prepare stage's TFRecords (the feature contract)."""

from __future__ import annotations

import json
import os
import re

import numpy as np

from trainer import features
from trainer.layers._keras import tf


def ragged_rows(ragged: tf.RaggedTensor) -> list[np.ndarray]:
    """A `[b, None]` RaggedTensor as b NumPy rows (one conversion, not b eager slices)."""
    return np.split(ragged.values.numpy(), ragged.row_splits.numpy()[1:-1])


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


def _in_time_range(time_range: tuple[int, int]):
    lo, hi = time_range
    spec = {features.TARGET_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64)}

    def keep(record):
        ts = tf.io.parse_single_example(record, spec)[features.TARGET_TIMESTAMP]
        return tf.logical_and(ts >= lo, ts < hi)

    return keep


# `<name>-00003-of-00016<suffix>`, as beam/shard_writer.py names shards.
_SHARD = re.compile(r"^(?P<name>.+)-\d{5}-of-(?P<count>\d{5})(?P<suffix>\.[^/]*)?$")
_MANIFEST_LEVELS = 3  # data_dir/train/implicit-*: the manifest sits one or two levels up


def _manifest_shards(name: str, cache: dict) -> tuple[str, int] | None:
    """`(manifest path, shard count)` the nearest manifest.json above `name` gives it, if any."""
    parent = name
    for _ in range(_MANIFEST_LEVELS):
        parent = os.path.dirname(parent.rstrip("/"))
        if parent in ("", "/", ".") or ("://" in name and "://" not in parent):
            return None
        path = f"{parent}/{features.MANIFEST}"
        if path not in cache:
            cache[path] = None
            if tf.io.gfile.exists(path):
                with tf.io.gfile.GFile(path) as handle:
                    cache[path] = json.load(handle).get("shards", {})
        shards = cache[path]
        if shards is not None:
            count = shards.get(name[len(parent) + 1:])
            return None if count is None else (path, int(count))
    return None


def one_shard_set(pattern: str, files: list[str]) -> list[str]:
    """Keeps, per sharded output, only the shard set its manifest names.

    Why: a directory can hold shards of two runs (`-of-00004` left next to
    `-of-00002`); reading both silently doubles the data. Files that are not
    `-NNNNN-of-NNNNN` shards pass through.

    Raises:
      FileNotFoundError: the manifest names a shard count none of the files has.
      ValueError: no manifest names the output and the files mix shard counts.
    """
    sets: dict[str, dict[int, list[str]]] = {}
    kept = []
    for path in files:
        match = _SHARD.match(path)
        if match is None:
            kept.append(path)
            continue
        name = match["name"]
        sets.setdefault(name, {}).setdefault(int(match["count"]), []).append(path)
    cache: dict = {}
    for name, by_count in sets.items():
        named = _manifest_shards(name, cache)
        if named is not None:
            manifest, count = named
            if count not in by_count:
                found = ", ".join(f"-of-{c:05d}" for c in sorted(by_count))
                raise FileNotFoundError(f"{pattern}: {manifest} names {name}-*-of-{count:05d}; found only {found}")
            kept += by_count[count]
        elif len(by_count) > 1:
            found = ", ".join(f"-of-{c:05d}" for c in sorted(by_count))
            raise ValueError(f"{pattern}: {name} mixes shard sets of two runs ({found}) and no manifest.json "
                             "says which is current; prepare again into an empty directory (--overwrite)")
        else:
            kept += next(iter(by_count.values()))
    return sorted(kept)


def match_files(pattern: str) -> list[str]:
    """Sorted files of a glob (local or any gfile URI), one shard set per output.

    Raises:
      FileNotFoundError: the pattern matches no file, or not the shard set
        the manifest names.
      ValueError: the files mix shard sets and no manifest says which to read.
    """
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"training data: pattern {pattern!r} matched no TFRecord files")
    return one_shard_set(pattern, files)


def target_timestamps(pattern: str) -> np.ndarray:
    """All `target_timestamp`s of the matching records (one cheap pass)."""
    spec = {features.TARGET_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(match_files(pattern)).batch(8192).map(
        lambda x: tf.io.parse_example(x, spec)[features.TARGET_TIMESTAMP])
    parts = [b.numpy() for b in ds]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def build_dataset(pattern: str, batch_size: int, history_length: int, shuffle: bool = True,
                  seed: int = 0, repeat: bool = False, drop_remainder: bool = True,
                  time_range: tuple[int, int] | None = None, skip_batches: int = 0) -> tf.data.Dataset:
    """Batched, parsed, padded examples from `pattern` (local or any gfile URI).

    The order is a pure function of (files, seed): with `repeat`, batch j of
    the stream is the same in every run, which is what lets a resumed job
    `skip_batches` exactly the batches its checkpoint already trained on.

    Args:
      time_range: keep records with `lo <= target_timestamp < hi` (the
        validation carve).
      skip_batches: drop this many batches from the start of the stream.

    Raises:
      FileNotFoundError: the pattern matches no file.
    """
    ds = tf.data.TFRecordDataset(match_files(pattern))
    if time_range is not None:
        ds = ds.filter(_in_time_range(time_range))
    if shuffle:
        ds = ds.shuffle(20_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    spec = features.example_feature_spec()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if skip_batches:
        ds = ds.skip(skip_batches)
    ds = ds.map(lambda x: pad_history(tf.io.parse_example(x, spec), history_length),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
