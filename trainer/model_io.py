"""The trained-model artifact: what `trainer.task` writes, what evaluation
and export read.

  <model_dir>/config.yaml            the resolved config
  <model_dir>/checkpoint/model-*     tf.train.Checkpoint(model=...) weights
  <model_dir>/training.json          the training summary (data dir, steps,
                                     validation HR, history, audit)
"""

from __future__ import annotations

import json

from trainer import features
from trainer.config import MerConfig, dump_config, load_config

CHECKPOINT = "checkpoint/model"
SUMMARY = "training.json"
CONFIG = "config.yaml"


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


def load_trained(model_dir: str, data_dir: str | None = None):
    """Rebuilds the model of `model_dir` and restores its weights.

    Returns: `(cfg, model, summary)`.

    Raises:
      FileNotFoundError: `model_dir` has no trained model.
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
    data_dir = data_dir or summary["data_dir"]
    model = build_model(cfg.model, load_item_table(data_dir), cfg.train.seed)
    create_variables(model, sample_batch(data_dir, cfg))
    status = tf.train.Checkpoint(model=model).read(_join(model_dir, CHECKPOINT))
    status.assert_existing_objects_matched().expect_partial()
    return cfg, model, summary
