"""Shared test helpers: the GroupLens data location, TFRecord reading."""

from __future__ import annotations

import glob
import os
import pathlib
import signal
import time

import numpy as np
import pytest

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)

from beam.run import IN_MEMORY

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get("MER_DATA_DIR", REPO.parent / "shared" / "data"))
# The Beam options after `mer prepare ... --`: the in-memory runner (one process, fast).
BEAM_CLI_ARGS = ("--", *IN_MEMORY)


def movielens_dir(name: str) -> pathlib.Path:
    """The raw GroupLens directory, or skip with the reason."""
    path = DATA_DIR / name
    if not path.is_dir():
        pytest.skip(f"GroupLens {name} not found at {path} (set MER_DATA_DIR to its parent)")
    return path


def read_examples(pattern: str) -> list[dict]:
    """Parses every record of the matching TFRecord shards with the contract's spec."""
    import tensorflow as tf

    from trainer import features
    from trainer.data import ragged_rows

    files = sorted(glob.glob(pattern))
    assert files, f"no files match {pattern}"
    spec = features.example_feature_spec()
    rows = []
    # Parsed a batch at a time (per-record eager parsing is ~10x slower), then split into rows.
    for batch in tf.data.TFRecordDataset(files).batch(4096).map(lambda raw: tf.io.parse_example(raw, spec)):
        columns = {k: ragged_rows(v) if isinstance(v, tf.RaggedTensor) else list(v.numpy())
                   for k, v in batch.items()}
        rows += [dict(zip(columns, values)) for values in zip(*columns.values())]
    return rows


def decode(values) -> list[str]:
    return [v.decode() for v in np.asarray(values).tolist()]


def prepare_small_world(output_dir: str, overrides: list[str] | None = None) -> str:
    """Prepares the `synthetic-small` world in-process; returns `output_dir`."""
    from beam.run import IN_MEMORY, run_prepare
    from trainer.config import load_config

    cfg = load_config("synthetic-small", overrides or [])
    run_prepare(cfg, output_dir, list(IN_MEMORY))
    return output_dir


def saved_position(backup: str):
    """`(epoch, batch)` of the training job's latest backup under `backup`
    (BackupAndRestore's chief checkpoint), None while there is none or it is
    being written (callers poll)."""
    import tensorflow as tf

    try:
        path = tf.train.latest_checkpoint(f"{backup}/chief")
        if not path:
            return None
        reader = tf.train.load_checkpoint(path)
        return (int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")),
                int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE")))
    except Exception:  # noqa: BLE001  (a checkpoint being written; poll again)
        return None


def run_benchmark(main, argv: list[str], out) -> tuple[dict, str]:
    """Runs a benchmark's `main(argv)` (which must succeed) and returns its
    JSON result (`out`) and the tables it printed."""
    import contextlib
    import io
    import json

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return json.loads(out.read_text()), printed.getvalue()


def tiny_example(user: int, ts: int) -> bytes:
    """A serialized training example of user `u<user>` at timestamp `ts`
    (one-item history, fixed item ids): for data-pipeline tests."""
    from trainer import features
    from trainer.layers._keras import tf

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    return tf.train.Example(features=tf.train.Features(feature={
        features.USER_ID: b([f"u{user}".encode()]), features.TARGET_ITEM_ID: b([b"i"]),
        features.TARGET_TIMESTAMP: i([ts]), features.TARGET_NEGATIVE: i([0]),
        features.HISTORY_ITEM_IDS: b([b"h"]), features.HISTORY_NEGATIVE: i([0]),
        features.HISTORY_VALID: i([1])})).SerializeToString()


def kill_after_first_backup(procs: dict, backups: dict, timeout: float) -> dict:
    """SIGKILLs each process (`{key: Popen}`) as soon as its training job's
    backup (`{key: backup dir}`) exists; returns where each backup was (None:
    the process ended before one was written)."""
    positions, deadline = {}, time.time() + timeout
    while len(positions) < len(procs) and time.time() < deadline:
        for key, proc in procs.items():
            if key in positions:
                continue
            position = saved_position(backups[key])
            if position is not None or proc.poll() is not None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                positions[key] = position
        time.sleep(0.05)
    return positions
