"""tf.data input over the prepare stage's TFRecords (the feature contract)."""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

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


# Records whose timestamp is tested per parse: one parse per batch instead
# of one per record (the validation carve of a large training set).
_FILTER_BATCH = 4096
# Files open at once in the shuffled (training) order. A constant, not a
# core count: it is part of the order, so same seed -> same stream anywhere.
READ_CYCLE = 8


def filter_time_range(ds: tf.data.Dataset, time_range) -> tf.data.Dataset:
    """Serialized records with `lo <= target_timestamp < hi`, in their order;
    or, for a per-user carve (`trainer.validation.UserCutoffs`), the records
    of its side (user id -> cutoff in a lookup table).

    Why batched: `parse_single_example` per record costs a kernel launch per
    record; one `parse_example` per 4,096 records (in parallel, order kept)
    reads the same fields many times faster.
    """
    from trainer.validation import NO_CUTOFF, UserCutoffs

    spec = {features.TARGET_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64)}
    if isinstance(time_range, UserCutoffs):
        spec[features.USER_ID] = tf.io.FixedLenFeature([], tf.string)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(time_range.users, tf.string),
                                                tf.constant(time_range.cutoffs, tf.int64)),
            default_value=tf.constant(NO_CUTOFF, tf.int64))
        validation = time_range.validation

        def inside(parsed):
            carved = parsed[features.TARGET_TIMESTAMP] >= table.lookup(parsed[features.USER_ID])
            return carved if validation else tf.logical_not(carved)
    else:
        lo, hi = time_range

        def inside(parsed):
            ts = parsed[features.TARGET_TIMESTAMP]
            return tf.logical_and(ts >= lo, ts < hi)

    def keep(records):
        return tf.boolean_mask(records, inside(tf.io.parse_example(records, spec)))

    return ds.batch(_FILTER_BATCH).map(keep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


def read_records(files: list[str], interleave: bool = False,
                 num_parallel_reads: int | None = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Serialized records of `files`.

    With `interleave`, one record of each of `READ_CYCLE` open files in turn
    (training: the shuffle buffer then mixes records of many files), read by
    up to `num_parallel_reads` threads; the order never depends on that
    number (deterministic interleave). Without, file after file as listed
    (`iter_records`' "file order", a record limit's first N records).

    Args:
      files: TFRecord paths (any gfile URI), in order.
      interleave: mix the files record by record instead of file order.
      num_parallel_reads: reader threads when interleaving; 1 or None = one.
    """
    if not interleave:
        # A deterministic parallel interleave in file order would buffer
        # whole files (its output buffer is sized by the block length).
        return tf.data.TFRecordDataset(files)
    names = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    cycle = max(1, min(READ_CYCLE, len(files)))
    if num_parallel_reads in (None, 1):
        return names.interleave(tf.data.TFRecordDataset, cycle_length=cycle, block_length=1)
    return names.interleave(tf.data.TFRecordDataset, cycle_length=cycle, block_length=1,
                            num_parallel_calls=num_parallel_reads, deterministic=True)


def shards_by_file(num_files: int, num_workers: int, batch_size: int, num_replicas: int | None = None) -> bool:
    """Whether `MultiWorkerMirroredStrategy` input is sharded by file.

    By file when every worker gets a file (`num_files >= num_workers`) and
    every replica's share of a global batch has the same size
    (`batch_size % num_replicas == 0`): then a worker takes exactly
    `batch_size / num_workers` records of its own stream per step, which is
    what lets a resumed worker skip exactly what it trained
    (`build_dataset`'s `skip_batches`). Otherwise by data: every worker
    reads every file and keeps its share of each global batch (a worker
    without a file has no data; uneven shares would shift with the step).

    Args:
      num_replicas: replicas in sync over all workers; default one per worker.
    """
    replicas = num_replicas or num_workers
    return num_files >= num_workers and batch_size % replicas == 0


def keep_positions(ds: tf.data.Dataset, positions: np.ndarray) -> tf.data.Dataset:
    """The elements of `ds` at `positions` (sorted, 0-based), in their order.

    One boolean looked up per element, no parse: the records between the
    kept ones cost a read only.
    """
    positions = np.asarray(positions, np.int64)
    if not len(positions):
        return ds.take(0)
    mask = np.zeros(int(positions[-1]) + 1, bool)
    mask[positions] = True
    keep = tf.constant(mask)
    return ds.take(len(mask)).enumerate().filter(lambda i, _: keep[i]).map(lambda _, record: record)


def auto_shard_options(by_file: bool) -> tf.data.Options:
    """tf.data options for `MultiWorkerMirroredStrategy`'s auto-sharding:
    FILE (each worker reads only its own files) or DATA (`shards_by_file`)."""
    policy = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy.FILE if by_file else policy.DATA
    return options


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
    return target_columns(pattern, with_ids=False).stamps


class TargetColumns(NamedTuple):
    """Columns of every training record, in file order (`target_columns`)."""

    stamps: np.ndarray  # [N] int64 target_timestamp
    ids: np.ndarray | None  # [N] bytes target_item_id, or None (not read)
    users: np.ndarray | None  # [N] bytes user_id, or None (not read)


def target_columns(pattern: str, with_ids: bool = True, with_users: bool = False) -> TargetColumns:
    """`target_timestamp` (and `target_item_id`, `user_id`) of the matching
    records, in one pass: the training job's validation carve and logQ warm
    start read the files once."""
    names = {"stamps": (features.TARGET_TIMESTAMP, tf.int64)}
    if with_ids:
        names["ids"] = (features.TARGET_ITEM_ID, tf.string)
    if with_users:
        names["users"] = (features.USER_ID, tf.string)
    spec = {feature: tf.io.FixedLenFeature([], dtype) for feature, dtype in names.values()}
    ds = tf.data.TFRecordDataset(match_files(pattern), num_parallel_reads=4).batch(8192).map(
        lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
    parts = {name: [] for name in names}
    for b in ds:
        for name, (feature, _) in names.items():
            parts[name].append(b[feature].numpy())
    columns = {}
    for name in TargetColumns._fields:
        if name in names:
            empty = np.zeros(0, np.int64 if name == "stamps" else object)
            columns[name] = np.concatenate(parts[name]) if parts[name] else empty
        else:
            columns[name] = None
    return TargetColumns(**columns)


def target_counts(columns: TargetColumns, time_range=None) -> tuple[np.ndarray, np.ndarray]:
    """(distinct `target_item_id`s, their counts) among `target_columns`
    within `time_range` (`(lo, hi)` or a per-user carve side; the logQ warm start)."""
    from trainer.validation import in_range

    ids = columns.ids
    if time_range is not None:
        ids = ids[in_range(time_range, columns.stamps, columns.users)]
    if not len(ids):
        return np.zeros(0, object), np.zeros(0, np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    return unique, counts


def build_dataset(pattern: str, batch_size: int, history_length: int, shuffle: bool = True,
                  seed: int = 0, repeat: bool = False, drop_remainder: bool = True,
                  time_range: tuple[int, int] | None = None, skip_batches: int = 0,
                  num_parallel_reads: int | None = tf.data.AUTOTUNE, num_workers: int = 1,
                  num_replicas: int | None = None, positions: np.ndarray | None = None) -> tf.data.Dataset:
    """Batched, parsed, padded examples from `pattern` (local or any gfile URI).

    The order is a pure function of (files, shuffle, seed), whatever
    `num_parallel_reads`: with `repeat`, batch j of the stream is the same
    in every run, which is what lets a resumed job `skip_batches` exactly
    the batches its checkpoint already trained on. With `shuffle` the files
    are interleaved record by record before the shuffle buffer (in parallel,
    `read_records`); without, the records come file after file, as listed.

    Args:
      time_range: keep records with `lo <= target_timestamp < hi`, or one
        side of a per-user carve (`filter_time_range`).
      positions: keep only the records at these sorted positions of the
        (time-filtered) stream (`keep_positions`; a sampled validation set).
      skip_batches: global batches already trained: dropped from the start
        of the stream. Sharded by file, each worker drops its own share,
        `skip_batches * batch_size / num_workers` records of its files (the
        strategy splits each of its local batches over `num_workers` steps);
        sharded by data, the strategy splits each global batch, so whole
        batches are dropped before it.
      num_parallel_reads: files read at once with `shuffle` (1 = one at a time).
      num_workers: workers of a `MultiWorkerMirroredStrategy`; with >= 2 the
        dataset carries the auto-shard policy (`shards_by_file`).
      num_replicas: replicas in sync over all workers (default one per worker).

    Raises:
      FileNotFoundError: the pattern matches no file.
    """
    files = match_files(pattern)
    ds = read_records(files, interleave=shuffle, num_parallel_reads=num_parallel_reads)
    if time_range is not None:
        ds = filter_time_range(ds, time_range)
    if positions is not None:
        ds = keep_positions(ds, positions)
    if shuffle:
        ds = ds.shuffle(20_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    by_file = num_workers >= 2 and shards_by_file(len(files), num_workers, batch_size, num_replicas)
    if skip_batches and by_file:
        ds = ds.skip(skip_batches * (batch_size // num_workers))
    spec = features.example_feature_spec()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if skip_batches and not by_file:
        ds = ds.skip(skip_batches)
    ds = ds.map(lambda x: pad_history(tf.io.parse_example(x, spec), history_length),
                num_parallel_calls=tf.data.AUTOTUNE)
    if num_workers >= 2:
        ds = ds.with_options(auto_shard_options(by_file))
    return ds.prefetch(tf.data.AUTOTUNE)
