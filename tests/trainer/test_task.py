"""The training job end to end on the small synthetic world, then `mer evaluate`."""

from __future__ import annotations

import glob
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from trainer import runtime
from trainer.config import MerConfig, config_flags, config_keys, config_to_dict, load_config
from trainer.data import target_timestamps
from trainer.layers._keras import tf
from trainer.model import DIAGNOSTICS
from trainer.task import config_from_args, final_line, main, parse_args, train
from trainer.validation import validation_split

pytestmark = pytest.mark.slow


def _scalar_tags(directory: str) -> set[str]:
    tags = set()
    for path in glob.glob(f"{directory}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_validation_split_carves_the_end_of_training():
    ts = np.arange(100)
    split = validation_split(ts, 0.1)
    assert split["train_records"] == 90 and split["validation_records"] == 10
    assert split["train_range"] == (0, 90) and split["validation_range"] == (90, 100)
    with pytest.raises(ValueError, match="validation_fraction=1.5"):
        validation_split(ts, 1.5)
    assert validation_split(ts, 0)["validation_range"] is None


def test_train_writes_model_logs_and_tuning_metric(world, tmp_path, capsys):
    from mer import cli

    hp_file = tmp_path / "hp" / "output.metrics"
    env = {"AIP_MODEL_DIR": str(tmp_path / "model"), "CLOUD_ML_HP_METRIC_FILE": str(hp_file)}
    cfg = load_config("synthetic-small", ["train.epochs=2", "train.batch_size=128"])
    summary = train(cfg, world, runtime.resolve(env=env), verbose=0)

    # Validation = the end of the *training* records; the eval split is untouched.
    train_ts = target_timestamps(f"{world}/train/implicit-*")
    assert summary["validation_cutoff"] < cfg.data.split.timestamp
    assert summary["records"]["validation"] == int((train_ts >= summary["validation_cutoff"]).sum()) > 0
    assert summary["records"]["train"] + summary["records"]["validation"] == len(train_ts)
    # The carve is under train.validation_max_records: every record scores.
    n_val = summary["records"]["validation"]
    assert summary["validation_set"] == {"records": n_val, "carve_records": n_val, "selection": "all", "seed": None,
                                         "time_range": [summary["validation_cutoff"], int(train_ts.max()) + 1]}
    steps = summary["steps_per_epoch"]
    assert steps == summary["records"]["train"] // 128
    assert summary["optimizer_steps"] == 2 * steps and summary["epochs"] == {"run": 2, "max": 2}
    # EarlyStopping restores the best epoch's weights, audit counters included.
    assert summary["trained_examples"] == (summary["best_epoch"] + 1) * steps * 128
    assert 0 <= summary["best_validation"] <= 1 and len(summary["history"]["val_hr_at_50"]) == 2

    model_dir = tmp_path / "model"
    assert (model_dir / "config.yaml").exists() and (model_dir / "training.json").exists()
    (index,) = glob.glob(str(model_dir / "checkpoint" / "model*.index"))
    # Weights, frequency state and audit are checkpointed; metric accumulators are not
    # (a new diagnostic must not orphan older checkpoints).
    saved = [name for name, _ in tf.train.list_variables(index[: -len(".index")])]
    assert any("frequency" in n for n in saved) and any("trained_examples" in n for n in saved)
    assert not [n for n in saved if any(d in n for d in DIAGNOSTICS)], saved
    assert not (model_dir / "backup" / "chief").exists()  # BackupAndRestore cleans up after success
    # Self-contained: the item table and vocabularies travel with the model, and on
    # Vertex ($AIP_MODEL_DIR) the job ends with TF Serving SavedModels there.
    assert (model_dir / "artifacts" / "vocab" / "items.txt").read_text() == (
        pathlib.Path(world) / "vocab" / "items.txt").read_text()
    for name in ("user_implicit", "item_implicit"):
        assert (model_dir / name / "1" / "saved_model.pb").exists(), name
    assert summary["export"]["version"] == 1 and (model_dir / "models.config").exists()
    tags = _scalar_tags(str(model_dir / "logs"))
    assert {"epoch_loss", "epoch_pairwise_cosine", "epoch_routing_entropy", "epoch_masked_fraction",
            "epoch_effective_interests",
            "epoch_hr_at_50"} <= tags, tags
    line = json.loads(hp_file.read_text().splitlines()[-1])
    assert float(line["val_hr_at_50"]) == pytest.approx(summary["best_validation"])
    assert line["global_step"] == str(2 * steps)
    # One cloudml-hypertune line per epoch before the final (best) one: Vertex
    # sees intermediate measurements, for trial early stopping.
    epochs = [json.loads(text) for text in hp_file.read_text().splitlines()[:-1]]
    assert [int(e["global_step"]) for e in epochs] == [steps, 2 * steps]
    assert [float(e["val_hr_at_50"]) for e in epochs] == pytest.approx(summary["history"]["val_hr_at_50"])
    assert {e["trial"] for e in epochs} == {"0"}

    # `mer evaluate` on the artifact: SPEC §6 metrics with CIs, segments, coverage.
    capsys.readouterr()
    assert cli.main(["evaluate", "--model_dir", str(model_dir), "--ks", "20,50", "--served"]) == 0
    report = json.loads((model_dir / "evaluation.json").read_text())
    eval_records = len(target_timestamps(f"{world}/eval/implicit-*"))
    assert report["records"] == eval_records
    hr = report["hr"]["50"]
    assert hr["ci95"][0] <= hr["mean"] <= hr["ci95"][1]
    assert set(report["segments"]) == {"core", "casual", "new"}
    assert sum(s["records"] for s in report["segments"].values()) == eval_records
    assert {"head", "torso", "tail", "all"} <= set(report["coverage"])
    # Served HR (the serving merge's K candidates) is reported next to HR@K.
    served = report["served_hr"]
    assert 0 < served["20"]["mean"] <= served["50"]["mean"] <= 1
    assert "| HR |" in capsys.readouterr().out
    # As a user runs it, in a process of its own: the table on stdout, and
    # none of TensorFlow's native start-up lines on stderr (hidden without -v).
    done = subprocess.run([sys.executable, "-m", "mer", "evaluate", "--model_dir", str(model_dir), "--ks", "20",
                           "--max_records", "50", "--output", str(tmp_path / "quiet.json")],
                          capture_output=True, text=True, timeout=600, cwd=pathlib.Path(__file__).parents[2])
    assert done.returncode == 0 and "| HR |" in done.stdout, done.stderr
    native = ("cuInit", "InitializeLog", "PredictCost", "cpu_feature_guard", "cudart_stub", "oneDNN")
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in native)], done.stderr


def test_early_stopping_stops_on_a_flat_validation_curve_reading_a_gfile_uri(world, tmp_path):
    """Also: `--data_dir` may be any tf.io.gfile URI (gs:// on Vertex); the
    job reads TFRecords, manifest, item table and corpus only through gfile.
    `ram://` is TF's in-memory filesystem: no local path is read."""
    uri = f"ram://prepared-{tmp_path.name}"
    for root, _, files in tf.io.gfile.walk(world):
        target = uri + root[len(world):]
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(f"{root}/{name}", f"{target}/{name}", overwrite=True)
    cfg = load_config("synthetic-small", ["train.epochs=6", "train.learning_rate=0.0",
                                          "train.early_stopping_patience=1", "train.steps_per_epoch=3"])
    summary = train(cfg, uri, runtime.resolve(str(tmp_path / "m"), env={}), verbose=0)
    assert summary["data_dir"] == uri and summary["records"]["train"] > 0
    # Weights never change, so epoch 2 does not improve on epoch 1: stop.
    assert summary["epochs_run_this_process"] == 2 and summary["epochs"] == {"run": 2, "max": 6}
    assert summary["optimizer_steps"] == 6


@pytest.mark.parametrize("run, stopped", [(6, ""), (2, " (early stopping)")])
def test_the_final_line_says_the_epochs_run_of_the_most(run, stopped):
    summary = {"kind": "dcm", "optimizer_steps": 30, "trained_examples": 7680.0, "epochs": {"run": run, "max": 6},
               "seconds": 12.5, "monitor": "val_hr_at_50", "best_validation": 0.25, "weights_sha256": "ab" * 32}
    rt = runtime.resolve("/m", env={})
    assert final_line(summary, rt) == (
        f"trainer.task [chief:0]: dcm trained 30 steps (7680 examples), epochs {run}/6{stopped}, in 12.5 s; "
        f"val_hr_at_50=0.25; weights sha256 {'ab' * 32}; model in /m")


def test_cr_model_gets_filtered_hit_rate(world, tmp_path, capsys):
    from trainer.evaluate import main

    cfg = load_config("synthetic-small", ["model.kind=cr", "train.epochs=1", "train.steps_per_epoch=4"])
    train(cfg, world, runtime.resolve(str(tmp_path / "cr"), env={}), verbose=0)
    assert main(["--model_dir", str(tmp_path / "cr"), "--ks", "50", "--max_records", "200"]) == 0
    report = json.loads((tmp_path / "cr" / "evaluation.json").read_text())
    # Filtering can only remove competitors -> filtered HR >= HR (targets carry their topic).
    assert report["filtered_hr"]["50"]["mean"] >= report["hr"]["50"]["mean"]
    # The serving merge's served HR is for implicit/single models; CR says so.
    assert main(["--model_dir", str(tmp_path / "cr"), "--served", "--max_records", "10"]) == 2
    assert "--served: implicit or single-embedding models only" in capsys.readouterr().err



@pytest.mark.parametrize("flags, expected", [
    (["--learning_rate=0.01"], {"train.learning_rate": 0.01}),  # what Vertex tuning passes
    (["--train.learning_rate", "0.01"], {"train.learning_rate": 0.01}),
    (["--model.num_interests=5", "--batch_size", "64", "--epochs=3"],
     {"model.num_interests": 5, "train.batch_size": 64, "train.epochs": 3}),
    (["--batch_size=128.0"], {"train.batch_size": 128}),  # Vertex sends discrete values as doubles
    (["--model.implicit_fields=[latest]", "--kind", "mind"],
     {"model.implicit_fields": ["latest"], "model.kind": "mind"}),
    # Flags apply after --config and --set, wherever they stand; the last flag wins.
    (["--learning_rate=0.01", "--set", "train.learning_rate=0.5"], {"train.learning_rate": 0.01}),
    (["--set", "train.epochs=4", "--epochs=2", "--train.epochs=3"], {"train.epochs": 3}),
])
def test_every_config_key_is_a_flag(flags, expected):
    cfg = config_from_args(parse_args(["--data_dir", "d", "--config", "synthetic-small", *flags]))
    for key, value in expected.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value, key


@pytest.mark.parametrize("flag, hint", [
    ("--learning-rate=0.1", "--learning_rate"), ("--seed", "--train.seed"), ("--no_such_flag=1", None)])
def test_unknown_flag_is_an_error_naming_it(flag, hint, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--data_dir", "d", flag, "3"] if flag == "--seed" else ["--data_dir", "d", flag])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {flag}" in err
    assert (f"did you mean {hint}?" in err) if hint else "did you mean" not in err


def test_a_bad_flag_value_is_an_error_naming_the_key(capsys):
    assert main(["--data_dir", "d", "--learning_rate=fast"]) == 2
    assert "train.learning_rate: expected float" in capsys.readouterr().err


def _leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    return keys


def test_flag_names_cover_every_key_and_short_forms_are_unique():
    keys = config_keys()
    assert keys == _leaf_keys(config_to_dict(MerConfig()))
    flags = config_flags()
    assert all(flags[key] == key for key in keys)
    for short, key in [("learning_rate", "train.learning_rate"), ("batch_size", "train.batch_size"),
                       ("epochs", "train.epochs"), ("num_interests", "model.num_interests"),
                       ("history_length", "data.history_length"), ("field_dim", "model.dhen.field_dim")]:
        assert flags[short] == key
    # Ambiguous last parts have no short form (train.seed / data.synthetic.seed, ...).
    assert "seed" not in flags and "num_shards" not in flags
    shorts = [flag for flag in flags if "." not in flag and flag != "name"]
    assert len({flags[s] for s in shorts}) == len(shorts)
