"""The training job: `python -m trainer.task --data_dir <prepared> [...]`.

Runs the same way locally, as a Vertex AI custom job and as a Kubeflow
TFJob (specs under `deploy/`); see `trainer/runtime.py` for the environment
it reads. What it does:

1. Carves a validation split from the *training* records: the last
   `train.validation_fraction` of them by target time (with the `per_user`
   data split: each user's last `data.split.per_user_eval` of them), all
   scored, or a seeded random sample of `train.validation_max_records` of
   them when the carve holds more (`trainer/validation.py`; training.json's
   `validation_set` says which). The eval split is never read here.
2. Trains with `Model.fit` under the strategy the cluster calls for
   (MultiWorkerMirroredStrategy for >= 2 workers), on a repeated stream whose
   order is a pure function of the seed. With several workers each reads
   only its own files when there are enough (`trainer/data.py`
   `shards_by_file`), else every file and its share of each batch.
3. Preemption: `BackupAndRestore` saves every `train.checkpoint_every_steps`
   steps; on restart the model, optimizer, frequency estimator and step
   counters come back from it (the training-time random draws are functions
   of the seed and the step counter: `trainer/layers/step_seed.py`), and the
   input stream skips exactly the batches already trained, so no example of
   the resumed epoch is trained twice and none is skipped (Keras alone would
   replay the epoch's first batches). Work after the last backup is lost and
   redone.
4. Each epoch: exact validation HR@K (SPEC §6 scoring) and the collapse
   diagnostics go to the Keras logs, TensorBoard and the tuning metric file
   (one line per epoch, then the best epoch's value last); early stopping
   keeps the best weights.
5. Every config key is also a flag (`--train.learning_rate=0.01`, and
   `--learning_rate=0.01` where the last part is unique), which is how
   Vertex AI hyperparameter tuning passes the trial's values.
6. Writes `<model_dir>/checkpoint/`, `config.yaml`, `training.json` and
   `artifacts/` (item table, vocabularies, sample records: the model is
   self-contained); on Vertex (`AIP_MODEL_DIR` set) the chief also exports
   the TF Serving SavedModels there (`export/exporter.py`).
"""

from __future__ import annotations

import argparse
import logging
import time

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)
from trainer import runtime
from trainer.config import MerConfig, config_flags, config_to_dict, load_config
from trainer.model_io import train_pattern
from trainer.validation import carve_is_per_user, carve_split, validation_records, validation_set

log = logging.getLogger("trainer.task")  # (also when run as __main__)


def resume_position(checkpoint_dir: str, steps_per_epoch: int) -> dict:
    """Where a BackupAndRestore checkpoint left off (what Keras will resume).

    Returns `{"epoch", "step", "batches_done"}`; zeros when there is none.
    """
    import tensorflow as tf

    path = tf.train.latest_checkpoint(f"{checkpoint_dir}/chief")
    if not path:
        return {"epoch": 0, "step": 0, "batches_done": 0}
    reader = tf.train.load_checkpoint(path)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    if batch < 0:  # saved at an epoch end
        epoch, step = epoch + 1, 0
    elif batch == steps_per_epoch - 1:
        epoch, step = epoch + 1, 0
    else:
        step = batch + 1
    return {"epoch": epoch, "step": step, "batches_done": epoch * steps_per_epoch + step}


def weights_digest(model) -> str:
    """SHA-256 over the bytes of every trainable weight (replicas must agree)."""
    import hashlib

    digest = hashlib.sha256()
    for weight in sorted(model.trainable_weights, key=lambda w: w.name):
        digest.update(weight.name.encode())
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


def _validation_callback(model, corpus, data_dir, cfg, split, rt: runtime.Runtime):
    from trainer.evaluation import ModelScorer, evaluate_scorer
    from trainer.layers._keras import keras

    k = cfg.train.validation_k
    key = f"val_hr_at_{k}"

    class ValidationHitRate(keras.callbacks.Callback):
        """Exact HR@K on the validation carve, into the epoch logs and, as
        one line per epoch, the tuning metric file (Vertex's early stopping
        of trials reads the intermediate reports)."""

        scorer = None

        def on_epoch_end(self, epoch, logs=None):
            if self.scorer is None:
                self.scorer = ModelScorer(model, corpus)
            self.scorer.refresh()
            scorer = self.scorer
            records = validation_records(train_pattern(data_dir, cfg), split, cfg.train.validation_max_records,
                                         cfg.train.seed, 256, cfg.data.history_length)
            ranks = evaluate_scorer(scorer, corpus, records, coverage_k=1).ranks
            value = float((ranks <= k).mean())
            if logs is not None:
                logs[key] = value
            runtime.report_hp_metric(rt, key, value, int(model.optimizer.iterations.numpy()))

    return key, ValidationHitRate()


def train(cfg: MerConfig, data_dir: str, rt: runtime.Runtime, verbose: int = 2, callbacks=()) -> dict:
    """Trains `cfg` on the prepared data in `data_dir`; returns the summary.

    `verbose`: 2 = a progress bar per epoch (`common/progress.py`: one log
    line per epoch with loss and validation HR where stderr is no terminal),
    1 = Keras' own bar, 0 = nothing. `callbacks`: extra Keras callbacks, run
    after the job's own.
    """
    from trainer.data import build_dataset, target_columns, target_counts
    from trainer.early_stopping import ResumableEarlyStopping
    from trainer.evaluation import load_corpus
    from trainer.item_table import load_item_table
    from trainer.layers._keras import keras, tf
    from trainer.model import build_model, create_variables
    from trainer.model_io import sample_batch, save_trained, write_artifacts

    started = time.time()
    strategy = runtime.make_strategy(rt)
    keras.utils.set_random_seed(cfg.train.seed)
    pattern = train_pattern(data_dir, cfg)
    columns = target_columns(pattern, with_ids=cfg.train.logq_warm_start,  # one pass for all
                             with_users=carve_is_per_user(cfg))
    split = carve_split(cfg, columns.stamps, columns.users)
    scored = validation_set(split, cfg.train.validation_max_records, cfg.train.seed)
    if scored is not None:
        log.info("validation: %d of %d training records carved (%s), %s scored", split["validation_records"],
                 split["train_records"] + split["validation_records"],
                 f"each user's last {scored['per_user_last']}" if "per_user_last" in scored
                 else f"target time in {scored['time_range']}",
                 "all" if scored["seed"] is None else f"a sample of {scored['records']} (seed {scored['seed']})")
    batch = cfg.train.batch_size
    steps = cfg.train.steps_per_epoch or max(1, split["train_records"] // batch)
    resume = resume_position(rt.checkpoint_dir, steps)
    data = build_dataset(pattern, batch, cfg.data.history_length, shuffle=True, seed=cfg.train.seed,
                         repeat=True, time_range=split["train_range"], skip_batches=resume["batches_done"],
                         num_workers=rt.num_workers, num_replicas=strategy.num_replicas_in_sync)
    table = load_item_table(data_dir, cfg.model.max_item_topics)
    with strategy.scope():
        model = build_model(cfg.model, table, cfg.train.seed)
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
        create_variables(model, sample_batch(data_dir, cfg))
        model.use_train_config(cfg.train)
        if cfg.train.logq_warm_start:  # a resumed job's backup overwrites it with the saved state
            ids, counts = target_counts(columns, split["train_range"])
            model.frequency.warm_start(ids, counts, split["train_records"] / batch)

    extra, callbacks = list(callbacks), [
        keras.callbacks.BackupAndRestore(rt.checkpoint_dir, save_freq=cfg.train.checkpoint_every_steps)]
    monitor = stopper = None
    if split["validation_range"] is not None:
        monitor, validate = _validation_callback(model, load_corpus(data_dir), data_dir, cfg, split, rt)
        stopper = ResumableEarlyStopping(
            f"{rt.checkpoint_dir}/early_stopping", resume_epoch=resume["epoch"], is_chief=rt.is_chief,
            keep_epochs=ResumableEarlyStopping.keep_for(cfg.train.checkpoint_every_steps, steps),
            monitor=monitor, mode="max", patience=cfg.train.early_stopping_patience, verbose=0)
        callbacks += [validate, stopper]
    callbacks.append(keras.callbacks.TensorBoard(runtime.worker_dir(rt.tensorboard_dir, rt),
                                                 update_freq=cfg.train.log_every_steps))
    if verbose == 2:  # after the validation callback: its HR is in the epoch's final line
        from common.progress import epoch_callback

        callbacks.append(epoch_callback(keras.callbacks.Callback, log))
    callbacks += extra
    if resume["batches_done"]:
        log.info("resuming from %s at epoch %s step %s; skipping the %s batches already trained",
                 rt.checkpoint_dir, resume["epoch"], resume["step"], resume["batches_done"])
    history = model.fit(data, epochs=cfg.train.epochs, steps_per_epoch=steps, callbacks=callbacks,
                        verbose=1 if verbose == 1 else 0)
    logs = {k: [float(v) for v in values] for k, values in history.history.items()}
    ran = len(next(iter(history.history.values()), []))
    first_epoch = resume["epoch"]
    best = best_epoch = None
    if stopper is not None:  # every epoch's logs, those before a restart too
        first_epoch = stopper.first_epoch
        logs = {k: [e[k] for e in stopper.epoch_logs if k in e] for k in logs}
        if stopper.best_weights is not None:
            # The restored weights (audit counters included) are this epoch's.
            # The last line is the best epoch's value: the trial's result.
            best_epoch, best = int(stopper.best_epoch), float(stopper.best)
            runtime.report_hp_metric(rt, monitor, best, int(model.optimizer.iterations.numpy()))
    summary = {
        "config": cfg.name, "kind": cfg.model.kind, "data_dir": data_dir,
        "records": {"train": split["train_records"], "validation": split["validation_records"]},
        "validation_cutoff": split["cutoff"], "steps_per_epoch": steps,
        "validation_set": scored,
        "items_topics_truncated": table.topics_truncated,
        # Epochs of the whole job (a resumed one's earlier processes too) of
        # train.epochs at most; fewer when early stopping ended it.
        "epochs": {"run": resume["epoch"] + ran, "max": cfg.train.epochs},
        "epochs_run_this_process": ran,
        "history_first_epoch": first_epoch,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "resumed": resume, "monitor": monitor, "best_validation": best, "best_epoch": best_epoch,
        "history": logs,
        "trained_examples": float(model.trained_examples.numpy()),
        "trained_checksum": float(model.trained_checksum.numpy()),
        "weights_sha256": weights_digest(model),
        "strategy": ("MultiWorkerMirroredStrategy" if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                     else type(strategy).__name__), "workers": max(1, rt.num_workers),
        "seconds": round(time.time() - started, 1), "resolved_config": config_to_dict(cfg),
    }
    write_dir = runtime.worker_dir(rt.model_dir, rt)
    save_trained(model, cfg, rt.model_dir, summary, write_dir)
    if rt.is_chief:
        write_artifacts(data_dir, rt.model_dir, cfg)
        if rt.export_dir:
            # Vertex: the job ends with TF Serving SavedModels in
            # $AIP_MODEL_DIR (export reads only what was just written).
            from export.exporter import export_models

            summary["export"] = export_models([rt.model_dir], rt.export_dir)
    for scratch in {write_dir, runtime.worker_dir(rt.tensorboard_dir, rt)} - {rt.model_dir, rt.tensorboard_dir}:
        if tf.io.gfile.exists(scratch):
            tf.io.gfile.rmtree(scratch)
    return summary


class _ConfigFlag(argparse.Action):
    """`--train.learning_rate=0.01` / `--learning_rate 0.01` -> the override
    `train.learning_rate=0.01`, kept in command-line order."""

    def __init__(self, option_strings, dest, key: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.key = key

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), f"{self.key}={values}"])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainer.task", description=__doc__.split("\n")[0], allow_abbrev=False,
        usage="%(prog)s --data_dir DIR [--config NAME] [--set KEY=VALUE] [--<config key> VALUE ...] "
              "[options]")
    p.add_argument("--data_dir", required=True, help="prepared data (`mer prepare` output; any gfile URI)")
    p.add_argument("--config", default="synthetic-small", help="preset name or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--model_dir", "--job-dir", "--job_dir", dest="model_dir", default=None,
                   help="default: $AIP_MODEL_DIR, else runs/model")
    p.add_argument("--checkpoint_dir", default=None, help="default: $AIP_CHECKPOINT_DIR, else <model_dir>/backup")
    p.add_argument("--tensorboard_dir", default=None,
                   help="default: $AIP_TENSORBOARD_LOG_DIR, else <model_dir>/logs")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                   help="2: a progress bar per epoch (a log line per epoch off a terminal); 1: Keras' own bar; 0: none")
    p.add_argument("-v", dest="debug_logs", action="store_true", help="also show the INFO logs of TensorFlow and other libraries")
    # Every config key is a flag too (what Vertex AI hyperparameter tuning
    # passes: `--learning_rate=0.01`); they apply after --config and --set.
    keys = p.add_argument_group(
        "config keys", "every key is a flag, `--train.learning_rate=0.01` or `--train.learning_rate 0.01`; "
        "keys whose last part is unique also as `--learning_rate`; values are YAML like --set, and "
        "apply after --config and --set")
    taken = {option for action in p._actions for option in action.option_strings}
    names: dict[str, list[str]] = {}
    for flag, key in config_flags().items():
        if f"--{flag}" not in taken:
            names.setdefault(key, []).append(f"--{flag}")
    for key, flags in names.items():
        keys.add_argument(*flags, action=_ConfigFlag, key=key, dest="config_flags", default=[],
                          metavar="VALUE")
    return p


def config_from_args(args: argparse.Namespace) -> MerConfig:
    """The job's config: the preset, then `--set`, then the config-key flags."""
    return load_config(args.config, [*args.set, *args.config_flags])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """`parser().parse_args` that names a close config key for an unknown flag."""
    import difflib

    p = parser()
    args, unknown = p.parse_known_args(argv)
    if unknown:
        flags = [f"--{flag}" for flag in config_flags()]
        hints = [f"did you mean {close[0]}?" for arg in unknown if arg.startswith("--")
                 for close in [difflib.get_close_matches(arg.split("=", 1)[0], flags, n=1)] if close]
        p.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else ""))
    return args


def final_line(summary: dict, rt: runtime.Runtime) -> str:
    """The job's last log line: what trained, the epochs run of the most
    (`train.epochs`), the best validation value and the weights digest."""
    epochs = summary["epochs"]
    stopped = " (early stopping)" if epochs["run"] < epochs["max"] else ""
    return (f"trainer.task [{rt.task_type}:{rt.task_index}]: {summary['kind']} trained {summary['optimizer_steps']} "
            f"steps ({summary['trained_examples']:.0f} examples), epochs {epochs['run']}/{epochs['max']}{stopped}, "
            f"in {summary['seconds']} s; {summary['monitor']}={summary['best_validation']}; "
            f"weights sha256 {summary['weights_sha256']}" + (f"; model in {rt.model_dir}" if rt.is_chief else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.debug_logs)  # before TensorFlow loads
    try:
        cfg = config_from_args(args)
        rt = runtime.resolve(args.model_dir, args.checkpoint_dir, args.tensorboard_dir)
        summary = train(cfg, args.data_dir, rt, args.verbose)
    except (ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    print(final_line(summary, rt), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
