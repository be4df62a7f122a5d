"""The trained-model artifact: what `trainer.task` writes, what evaluation
and export read.

  <model_dir>/config.yaml            the resolved config
  <model_dir>/checkpoint/model-*     tf.train.Checkpoint(model=...) weights
  <model_dir>/training.json          the training summary (data dir, steps,
                                     validation HR, history, audit)
  <model_dir>/artifacts/             what the model was built with, so export,
                                     evaluation and serving never need the
                                     prepared data directory: manifest.json,
                                     vocab/*.txt, items/items-*.tfrecord (the
                                     item table) and samples.tfrecord (real
                                     training records: variable creation,
                                     warmup requests, index recall queries)
"""

from __future__ import annotations

import json

from trainer import features
from trainer.config import MerConfig, dump_config, load_config

CHECKPOINT = "checkpoint/model"
SUMMARY = "training.json"
CONFIG = "config.yaml"
ARTIFACTS = "artifacts"
SAMPLES = f"{ARTIFACTS}/samples.tfrecord"
NUM_SAMPLES = 256


def _join(base: str, rel: str) -> str:
    return f"{base.rstrip('/')}/{rel}"


def train_pattern(data_dir: str, cfg: MerConfig) -> str:
    """The training TFRecords of `cfg.model.kind` (CR trains on explicit examples)."""
    split = features.TRAIN_EXPLICIT if cfg.model.kind == "cr" else features.TRAIN_IMPLICIT
    return _join(data_dir, f"{split}-*{features.TFRECORD_SUFFIX}")


def sample_batch(data_dir: str, cfg: MerConfig) -> dict:
    """Two training records, enough to create every weight."""
    from trainer.data import build_dataset

    return next(iter(build_dataset(train_pattern(data_dir, cfg), 2, cfg.data.history_length, shuffle=False)))


def _artifact_files(data_dir: str) -> list[str]:
    """The prepare-stage files a model is built from (relative paths)."""
    import tensorflow as tf

    base = data_dir.rstrip("/")
    patterns = ("vocab/*.txt", f"{features.ITEM_TABLE}-*{features.TFRECORD_SUFFIX}")
    found = [features.MANIFEST]
    for pattern in patterns:
        found += sorted(path[len(base) + 1:] for path in tf.io.gfile.glob(_join(base, pattern)))
    return found


def write_artifacts(data_dir: str, model_dir: str, cfg: MerConfig, num_samples: int = NUM_SAMPLES) -> None:
    """Copies the item table and vocabularies into `<model_dir>/artifacts/`
    and keeps `num_samples` real training records (evenly spaced over the
    first 50,000) in `samples.tfrecord`. Chief only."""
    import tensorflow as tf

    from trainer.data import match_files

    target = _join(model_dir, ARTIFACTS)
    for rel in _artifact_files(data_dir):
        dest = _join(target, rel)
        tf.io.gfile.makedirs(dest.rsplit("/", 1)[0])
        tf.io.gfile.copy(_join(data_dir, rel), dest, overwrite=True)
    head = [r.numpy() for r in tf.data.TFRecordDataset(match_files(train_pattern(data_dir, cfg))).take(50_000)]
    if not head:
        raise ValueError(f"{train_pattern(data_dir, cfg)}: no training record to keep as samples")
    step = max(1, len(head) // num_samples)
    with tf.io.TFRecordWriter(_join(model_dir, SAMPLES) + ".tmp") as writer:
        for record in head[::step][:num_samples]:
            writer.write(record)
    tf.io.gfile.rename(_join(model_dir, SAMPLES) + ".tmp", _join(model_dir, SAMPLES), overwrite=True)


def has_artifacts(model_dir: str) -> bool:
    import tensorflow as tf

    return tf.io.gfile.exists(_join(model_dir, SAMPLES))


def artifacts_dir(model_dir: str) -> str:
    """The model's own copy of its item table and vocabularies (a directory
    `trainer.item_table.load_item_table` reads)."""
    return _join(model_dir, ARTIFACTS)


def sample_records(model_dir: str, cfg: MerConfig, batch_size: int = NUM_SAMPLES) -> dict:
    """The model's saved training records, parsed and padded (one batch)."""
    from trainer.data import build_dataset

    return next(iter(build_dataset(_join(model_dir, SAMPLES), batch_size, cfg.data.history_length,
                                   shuffle=False, drop_remainder=False)))


def check_vocabulary(model_dir: str, data_dir: str) -> None:
    """Fails when `data_dir`'s item or topic vocabulary differs from the one
    the model was trained with: ids would silently map to other rows.

    Raises:
      ValueError: naming the file and the first differing line.
    """
    import tensorflow as tf

    for rel in (features.VOCAB_ITEMS, features.VOCAB_TOPICS):
        ours = tf.io.gfile.GFile(_join(artifacts_dir(model_dir), rel)).read().splitlines()
        path = _join(data_dir, rel)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: no vocabulary (is {data_dir} a `mer prepare` output?)")
        theirs = tf.io.gfile.GFile(path).read().splitlines()
        if ours != theirs:
            line = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise ValueError(
                f"{path} differs from the vocabulary the model in {model_dir} was trained with "
                f"({len(theirs)} vs {len(ours)} entries, first difference at line {line + 1}); "
                f"ids would map to the wrong rows. Use the prepared data the model was trained on, or retrain.")


def write_json(path: str, payload: dict) -> None:
    import tensorflow as tf

    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def save_trained(model, cfg: MerConfig, model_dir: str, summary: dict, write_dir: str) -> str:
    """Writes the weights (every worker must call this; only `write_dir` of
    the chief is `model_dir`), then the config and summary (chief only)."""
    import tensorflow as tf

    path = tf.train.Checkpoint(model=model).write(_join(write_dir, CHECKPOINT))
    if write_dir == model_dir:
        with tf.io.gfile.GFile(_join(model_dir, CONFIG), "w") as handle:
            handle.write(dump_config(cfg))
        write_json(_join(model_dir, SUMMARY), summary)
    return path


def load_trained(model_dir: str, data_dir: str | None = None, asset_vocabularies: bool = False):
    """Rebuilds the model of `model_dir` and restores its weights.

    The model is built from its own artifacts (`<model_dir>/artifacts/`);
    `data_dir` is only checked for a matching vocabulary. Models trained
    before the artifacts existed fall back to `data_dir` (else the training
    summary's data directory).

    Args:
      asset_vocabularies: lookups read the vocabulary files (export).

    Returns: `(cfg, model, summary)`.

    Raises:
      FileNotFoundError: `model_dir` has no trained model.
      ValueError: `data_dir`'s vocabulary is not the model's.
    """
    import tensorflow as tf

    from trainer.item_table import load_item_table
    from trainer.model import build_model, create_variables

    config_path = _join(model_dir, CONFIG)
    summary_path = _join(model_dir, SUMMARY)
    if not tf.io.gfile.exists(config_path) or not tf.io.gfile.exists(summary_path):
        raise FileNotFoundError(f"{model_dir}: no trained model ({CONFIG} and {SUMMARY} expected; "
                                f"run `mer train` first)")
    cfg = load_config(config_path)
    summary = json.loads(tf.io.gfile.GFile(summary_path).read())
    if has_artifacts(model_dir):
        if data_dir:
            check_vocabulary(model_dir, data_dir)
        table = load_item_table(artifacts_dir(model_dir), cfg.model.max_item_topics)
        batch = sample_records(model_dir, cfg, 2)
    else:
        data_dir = data_dir or summary["data_dir"]
        table, batch = load_item_table(data_dir, cfg.model.max_item_topics), sample_batch(data_dir, cfg)
    model = build_model(cfg.model, table, cfg.train.seed, asset_vocabularies)
    create_variables(model, batch)
    status = tf.train.Checkpoint(model=model).read(_join(model_dir, CHECKPOINT))
    status.assert_existing_objects_matched().expect_partial()
    return cfg, model, summary
