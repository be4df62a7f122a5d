"""tf.data input: parallel reads keep the order, batched filtering equals the
per-record filter, and multi-worker input is sharded by file."""

from __future__ import annotations

import numpy as np
import pytest

from mer_testing import tiny_example
from trainer import data, features
from trainer.layers._keras import tf

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """4 shard files of uneven length; user n's timestamp is (n * 7) % 50."""
    out = tmp_path_factory.mktemp("shards")
    files, user = [], 0
    for shard, count in enumerate((13, 5, 9, 11)):
        path = str(out / f"implicit-{shard:05d}-of-00004{features.TFRECORD_SUFFIX}")
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(count):
                writer.write(tiny_example(user, (user * 7) % 50))
                user += 1
        files.append(path)
    return files


def _users(ds) -> list[str]:
    spec = {features.USER_ID: tf.io.FixedLenFeature([], tf.string)}
    return [tf.io.parse_single_example(r, spec)[features.USER_ID].numpy().decode() for r in ds]


def test_file_order_reads_the_files_one_after_another(shards):
    assert _users(data.read_records(shards)) == [f"u{n}" for n in range(38)]


def test_interleaved_order_does_not_depend_on_the_reader_count(shards):
    orders = [_users(data.read_records(shards, interleave=True, num_parallel_reads=r))
              for r in (1, 2, 4, tf.data.AUTOTUNE)]
    assert all(order == orders[0] for order in orders)
    # One record of each file in turn: u0 (file 0), u13 (file 1), u18, u27, u1, ...
    assert orders[0][:5] == ["u0", "u13", "u18", "u27", "u1"]
    assert sorted(orders[0]) == sorted(f"u{n}" for n in range(38))


def test_batched_time_filter_equals_the_per_record_filter(shards, monkeypatch):
    monkeypatch.setattr(data, "_FILTER_BATCH", 4)  # batches cross file boundaries
    got = _users(data.filter_time_range(data.read_records(shards), (10, 30)))
    want = [f"u{n}" for n in range(38) if 10 <= (n * 7) % 50 < 30]
    assert got == want and 0 < len(want) < 38


def test_same_seed_same_batches_whatever_the_reader_count(shards):
    def users(reads, seed):
        ds = data.build_dataset(shards[0].replace("00000-of", "*-of"), 8, 3, seed=seed, time_range=(0, 40),
                                num_parallel_reads=reads)
        return [b[features.USER_ID].numpy().tolist() for b in ds]

    first = users(1, seed=3)
    assert users(2, seed=3) == first == users(tf.data.AUTOTUNE, seed=3)
    assert users(2, seed=4) != first


@pytest.mark.parametrize("num_files, workers, batch, replicas, by_file", [
    (4, 2, 8, None, True), (2, 2, 8, None, True), (1, 2, 8, None, False), (3, 4, 8, None, False),
    (4, 2, 7, None, False), (4, 2, 6, 4, False), (4, 2, 8, 4, True)])
def test_sharded_by_file_when_every_worker_gets_a_file_and_equal_shares(num_files, workers, batch, replicas,
                                                                        by_file):
    assert data.shards_by_file(num_files, workers, batch, replicas) == by_file
    options = data.auto_shard_options(by_file)
    want = tf.data.experimental.AutoShardPolicy.FILE if by_file else tf.data.experimental.AutoShardPolicy.DATA
    assert options.experimental_distribute.auto_shard_policy == want


def _worker_steps(pattern: str, batch: int, workers: int, per_worker: int, index: int, skip: int,
                  steps: int) -> list[list[str]]:
    """The users of each of worker `index`'s first `steps` steps, through the
    rebatch and auto-shard rewrite `MultiWorkerMirroredStrategy` applies to
    a dataset on that worker (tensorflow/python/distribute/input_lib.py)."""
    from tensorflow.python.data.experimental.ops import distribute
    from tensorflow.python.distribute import input_ops

    replicas = workers * per_worker
    ds = data.build_dataset(pattern, batch, 3, seed=5, repeat=True, skip_batches=skip, num_workers=workers,
                            num_replicas=replicas)
    ds = ds.rebatch(distribute.batch_sizes_for_worker(batch, workers, per_worker, index))
    ds = input_ops.auto_shard_dataset(ds, workers, index, replicas)
    replica_batches = iter(ds)
    return [[u.decode() for _ in range(per_worker) for u in next(replica_batches)[features.USER_ID].numpy()]
            for _ in range(steps)]


@pytest.mark.parametrize("batch, per_worker", [(8, 1), (8, 2), (7, 1)])
def test_resumed_workers_skip_exactly_the_steps_trained(shards, batch, per_worker):
    """A job resumed after 3 steps sees, on every worker, the very batches
    steps 3.. of the uninterrupted job saw. Sharded by file (batch 8) a
    worker's local batch lasts 2 steps, so skipping 3 whole batches there
    would skip 6 steps; batch 7 cannot split evenly, so it is by data."""
    pattern = shards[0].replace("00000-of", "*-of")
    streams = []
    for index in range(2):
        uninterrupted = _worker_steps(pattern, batch, 2, per_worker, index, 0, 8)
        assert _worker_steps(pattern, batch, 2, per_worker, index, 3, 5) == uninterrupted[3:]
        streams.append(uninterrupted)
    if batch % (2 * per_worker) == 0:  # by file: the workers' records are disjoint
        assert not set(sum(streams[0], [])) & set(sum(streams[1], []))
    assert all(len(a) + len(b) == batch for a, b in zip(*streams))


def test_each_worker_reads_only_its_files(shards):
    """The auto-shard rewrite tf.distribute applies per worker: with FILE,
    worker i reads files i, i + 2, ... (disjoint, together everything)."""
    from tensorflow.python.distribute import input_ops

    pattern = shards[0].replace("00000-of", "*-of")
    per_worker = []
    for index in range(2):
        ds = data.build_dataset(pattern, 4, 3, shuffle=False, drop_remainder=False, num_workers=2)
        ds = input_ops.auto_shard_dataset(ds, 2, index, 1)
        per_worker.append([u.decode() for b in ds for u in b[features.USER_ID].numpy().tolist()])
    files = [[f"u{n}" for n in range(lo, hi)] for lo, hi in ((0, 13), (13, 18), (18, 27), (27, 38))]
    assert per_worker[0] == files[0] + files[2]
    assert per_worker[1] == files[1] + files[3]
    assert np.isin(per_worker[0], per_worker[1]).sum() == 0


def test_target_columns_read_once_serve_the_carve_and_the_logq_counts(world):
    from trainer.data import target_columns, target_counts, target_timestamps
    from trainer.validation import validation_split

    pattern = f"{world}/{features.TRAIN_IMPLICIT}-*"
    columns = target_columns(pattern)
    stamps = columns.stamps
    assert columns.users is None  # read only when asked (the per-user carve)
    np.testing.assert_array_equal(stamps, target_timestamps(pattern))
    split = validation_split(stamps, 0.1)
    lo, hi = split["train_range"]
    unique, counts = target_counts(columns, split["train_range"])
    want = {}
    for batch in data.build_dataset(pattern, 512, 5, shuffle=False, drop_remainder=False):
        for item, ts in zip(batch[features.TARGET_ITEM_ID].numpy(), batch[features.TARGET_TIMESTAMP].numpy()):
            if lo <= ts < hi:
                want[item] = want.get(item, 0) + 1
    assert dict(zip(unique.tolist(), counts.tolist())) == want
    assert sum(want.values()) == split["train_records"]
