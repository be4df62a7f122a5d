"""The exported towers, loaded the ways TF Serving and its users load them.

Parity (1e-5): the Keras model == `tf.saved_model.load` == the TF1 session
loader (what TF Serving uses) == `saved_model_cli run`, on real eval records
and on edge cases. Plus: self-contained export, warmup replay, config files,
atomic versions, op validation, vocabulary mismatch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from common import contract
from trainer import features
from trainer.layers._keras import tf

pytestmark = pytest.mark.slow
TOL = 1e-5


def session_run(version_dir: str, inputs: dict) -> dict:
    """Runs `serving_default` through the TF1 session loader, as TF Serving does."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], version_dir)
        sig = meta.signature_def[contract.SIGNATURE]
        feed = {sig.inputs[k].name: v for k, v in inputs.items()}
        return sess.run({k: v.name for k, v in sig.outputs.items()}, feed)


def reference_history(ids: np.ndarray, negative: np.ndarray, length: int):
    """NumPy reference of the signature's preprocessing: drop padding, keep
    the most recent `length`, right-pad."""
    out_ids = np.full((len(ids), length), b"", dtype=object)
    out_neg = np.zeros((len(ids), length), np.int64)
    for r, (row, neg) in enumerate(zip(ids, negative)):
        keep = [(i, n) for i, n in zip(row, neg) if i != b""][-length:]
        for c, (i, n) in enumerate(keep):
            out_ids[r, c], out_neg[r, c] = i, n
    return out_ids, out_neg


def user_requests(data_dir: str, length: int, explicit: bool) -> dict[str, dict]:
    """Real eval records plus the edge cases, as request inputs."""
    from trainer.data import build_dataset

    split = features.EVAL_EXPLICIT if explicit else features.EVAL_IMPLICIT
    batch = next(iter(build_dataset(f"{data_dir}/{split}-*", 16, length, shuffle=False)))
    ids = batch[features.HISTORY_ITEM_IDS].numpy().astype(object)
    neg = batch[features.HISTORY_NEGATIVE].numpy()
    real = {contract.HISTORY_ITEM_IDS: ids, contract.HISTORY_NEGATIVE: neg}
    known = [i for i in ids.ravel() if i][:3]
    long_ids = np.array([[known[j % 3] if j % 7 else b"unknown-%d" % j for j in range(length + 30)]], object)
    cases = {
        "real": real,
        "empty history": {contract.HISTORY_ITEM_IDS: np.full((2, 5), b"", object),
                          contract.HISTORY_NEGATIVE: np.zeros((2, 5), np.int64)},
        "all negative": {contract.HISTORY_ITEM_IDS: ids[:2], contract.HISTORY_NEGATIVE: np.ones_like(neg[:2])},
        "unknown items": {contract.HISTORY_ITEM_IDS: np.array([[b"nope", b"", b"never-seen"]], object),
                          contract.HISTORY_NEGATIVE: np.zeros((1, 3), np.int64)},
        "left padded": {contract.HISTORY_ITEM_IDS: np.array([[b"", b"", *known]], object),
                        contract.HISTORY_NEGATIVE: np.array([[0, 0, 1, 0, 0]], np.int64)},
        "longer than history_length": {contract.HISTORY_ITEM_IDS: long_ids,
                                       contract.HISTORY_NEGATIVE: (np.arange(length + 30) % 5 == 0)[None].astype(np.int64)},
    }
    if explicit:
        real_topics = np.stack([batch[features.CONDITION_TOPIC].numpy().astype(object),
                                np.full(16, b"", object)], axis=1)
        for name, case in cases.items():
            rows = len(case[contract.HISTORY_ITEM_IDS])
            case[contract.TOPICS] = real_topics[:rows] if name == "real" else np.tile(
                np.array([[real_topics[0, 0], b"no-such-topic"]], object), (rows, 1))
    return cases


def keras_outputs(model, cfg, inputs: dict, explicit: bool) -> dict:
    ids, neg = reference_history(inputs[contract.HISTORY_ITEM_IDS], inputs[contract.HISTORY_NEGATIVE],
                                 cfg.data.history_length)
    out = model.user_embeddings({features.HISTORY_ITEM_IDS: tf.constant(ids), features.HISTORY_NEGATIVE: tf.constant(neg)},
                                training=False, conditions=tf.constant(inputs[contract.TOPICS]) if explicit else None)
    keys = (contract.EMBEDDINGS, contract.MASK) if explicit else (contract.EMBEDDINGS, contract.IMPORTANCE, contract.MASK)
    return {k: out[k].numpy() for k in keys}


def assert_same(expected: dict, actual: dict, what: str):
    assert set(expected) == set(actual), (what, set(expected), set(actual))
    for key, value in expected.items():
        if value.dtype == bool:
            np.testing.assert_array_equal(actual[key], value, err_msg=f"{what}: {key}")
        else:
            np.testing.assert_allclose(actual[key], value, atol=TOL, err_msg=f"{what}: {key}")


def saved_model_cli(version_dir: str, inputs: dict, tmp_path) -> dict:
    exprs = ";".join(f"{k}={[[x.decode() if isinstance(x, bytes) else int(x) for x in row] for row in v]!r}"
                     for k, v in inputs.items())
    out = tmp_path / "cli_out"
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    subprocess.run([cli, "run", "--dir", version_dir, "--tag_set", "serve", "--signature_def", contract.SIGNATURE,
                    "--input_exprs", exprs, "--outdir", str(out), "--overwrite"],
                   check=True, capture_output=True, timeout=300)
    return {p.stem: np.load(p) for p in out.glob("*.npy")}


@pytest.mark.parametrize("kind", ["dcm", "cr"])
def test_user_tower_parity_keras_savedmodel_session_cli(kind, trained, exported, world, tmp_path):
    from trainer.model_io import load_trained

    explicit = kind == "cr"
    retriever = contract.EXPLICIT if explicit else contract.IMPLICIT
    version_dir = f"{exported}/{contract.USER_MODEL[retriever]}/1"
    cfg, model, _ = load_trained(trained[kind])
    loaded = tf.saved_model.load(version_dir).signatures[contract.SIGNATURE]
    for name, inputs in user_requests(world, cfg.data.history_length, explicit).items():
        expected = keras_outputs(model, cfg, inputs, explicit)
        via_load = {k: v.numpy() for k, v in loaded(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
        assert_same(expected, via_load, f"{kind} {name}: tf.saved_model.load")
        assert_same(expected, session_run(version_dir, inputs), f"{kind} {name}: session loader")
        again = session_run(version_dir, inputs)  # deterministic: VA-FPI's first centroid included
        for key, value in via_load.items():
            np.testing.assert_array_equal(again[key], value, err_msg=f"{kind} {name}: same request twice")
        assert expected[contract.EMBEDDINGS].shape[-1] == cfg.model.embedding_dim
        if name == "empty history" and not explicit:
            assert expected[contract.MASK].sum(axis=1).tolist() == [1, 1]  # one embedding from the pooled fields
    cli_inputs = {k: v[:2] for k, v in user_requests(world, cfg.data.history_length, explicit)["real"].items()}
    assert_same(keras_outputs(model, cfg, cli_inputs, explicit), saved_model_cli(version_dir, cli_inputs, tmp_path),
                f"{kind}: saved_model_cli run")


@pytest.mark.parametrize("kind", ["dcm", "cr"])
def test_item_tower_parity(kind, trained, exported):
    from trainer.model_io import load_trained

    retriever = contract.EXPLICIT if kind == "cr" else contract.IMPLICIT
    version_dir = f"{exported}/{contract.ITEM_MODEL[retriever]}/1"
    _, model, _ = load_trained(trained[kind])
    ids = np.array(model.store.vocabulary[:50] + ["not-an-item", ""], object)
    expected = {contract.EMBEDDINGS: model.item_embeddings(tf.constant(ids)).numpy()}
    loaded = tf.saved_model.load(version_dir).signatures[contract.SIGNATURE]
    assert_same(expected, {k: v.numpy() for k, v in loaded(item_ids=tf.constant(ids)).items()}, "tf.saved_model.load")
    assert_same(expected, session_run(version_dir, {contract.ITEM_IDS: ids}), "session loader")


def test_signatures_static_dim_vocabulary_assets_and_no_training_state(exported):
    from tensorflow.python.tools import saved_model_utils

    for name in ("user_implicit", "user_explicit", "item_implicit", "item_explicit"):
        version_dir = f"{exported}/{name}/1"
        sig = saved_model_utils.get_meta_graph_def(version_dir, "serve").signature_def[contract.SIGNATURE]
        dims = [d.size for d in sig.outputs[contract.EMBEDDINGS].tensor_shape.dim]
        assert dims[-1] == 32, (name, dims)
        assets = sorted(os.listdir(f"{version_dir}/assets"))
        assert "items.txt" in assets and (name != "user_explicit" or "topics.txt" in assets), (name, assets)
        variables = [v for v, _ in tf.train.list_variables(f"{version_dir}/variables/variables")]
        assert not [v for v in variables if any(s in v for s in ("optimizer", "frequency", "trained_"))], variables
    sig = saved_model_utils.get_meta_graph_def(f"{exported}/user_implicit/1", "serve").signature_def[contract.SIGNATURE]
    assert [d.size for d in sig.outputs[contract.EMBEDDINGS].tensor_shape.dim] == [-1, 8, 32]  # K_im = 7 interests + the global one


def test_export_runs_without_trainer_or_prepared_data(exported, tmp_path):
    """A fresh interpreter where `trainer`, `beam` and `export` cannot be
    imported, on a copy of the export (the prepared data is never referenced)."""
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    script = textwrap.dedent(f"""
        import sys
        for name in ("trainer", "beam", "export"):
            sys.modules[name] = None
        import numpy as np, tensorflow as tf
        user = tf.saved_model.load({str(copy / 'user_implicit' / '1')!r}).signatures["serving_default"]
        out = user(history_item_ids=tf.constant([["{open(copy / 'item_implicit/1/assets/items.txt').readline().strip()}", ""]]),
                   history_negative=tf.constant([[0, 0]], tf.int64))
        item = tf.saved_model.load({str(copy / 'item_explicit' / '1')!r}).signatures["serving_default"]
        emb = item(item_ids=tf.constant(["x"]))["embeddings"]
        print(out["embeddings"].shape, int(out["mask"].numpy().sum()), emb.shape)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "(1, 8, 32) 2 (1, 32)"  # 7 interests + global; one interest + global valid


def test_warmup_replays_through_session_loader_and_config_files_parse(exported):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from common.tf_serving_protos import parse_text
    from export.serving_files import read_warmup

    for name in ("user_implicit", "user_explicit", "item_implicit"):
        version_dir = f"{exported}/{name}/1"
        logs = read_warmup(f"{version_dir}/{contract.WARMUP_FILE}")
        assert 0 < len(logs) <= 1000
        for entry in logs[:6]:
            request = entry.predict_log.request
            assert request.model_spec.name == name and request.model_spec.signature_name == contract.SIGNATURE
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            out = session_run(version_dir, inputs)
            assert out[contract.EMBEDDINGS].shape[0] == len(next(iter(inputs.values())))
    config = text_format.Parse(open(f"{exported}/{contract.MODELS_CONFIG}").read(),
                               model_server_config_pb2.ModelServerConfig())
    models = {c.name: c for c in config.model_config_list.config}
    assert sorted(models) == ["item_explicit", "item_implicit", "user_explicit", "user_implicit"]
    assert all(c.model_platform == "tensorflow" and c.model_version_policy.latest.num_versions == 2
               and c.version_labels["stable"] == 1 and os.path.isdir(c.base_path) for c in models.values())
    batching = parse_text(open(f"{exported}/{contract.BATCHING_PARAMETERS}").read(), "BatchingParameters")
    assert batching.max_batch_size.value > 0 and not batching.pad_variable_length_inputs
    monitoring = parse_text(open(f"{exported}/{contract.MONITORING_CONFIG}").read(), "MonitoringConfig")
    assert monitoring.prometheus_config.enable
    summary = json.load(open(f"{exported}/export.json"))
    assert summary["version"] == 1 and summary["models"] == sorted(models)


def test_validation_rejects_py_function(tmp_path):
    from export.validation import validate_ops

    class Bad(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x):
            return {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}

    module = Bad()
    tf.saved_model.save(module, str(tmp_path / "bad"), signatures={"serving_default": module.serve})
    with pytest.raises(ValueError, match="EagerPyFunc"):
        validate_ops(str(tmp_path / "bad"))


def test_failed_or_killed_export_leaves_no_version(trained, tmp_path, monkeypatch):
    from export import exporter

    base = tmp_path / "base"
    # A failure mid-way (after the SavedModel is written): nothing in place.
    monkeypatch.setattr("export.serving_files.write_warmup", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        exporter.export_models([trained["dcm"]], str(base))
    assert contract.model_versions(str(base), "user_implicit") == [] and os.listdir(base / "user_implicit") == []
    monkeypatch.undo()
    # SIGKILL while the SavedModel is being written: no integer version directory.
    proc = subprocess.Popen([sys.executable, "-m", "export.exporter", "--model_dir", trained["dcm"],
                             "--export_dir", str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not any(n.startswith(".tmp-") for n in os.listdir(base / "user_implicit")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert time.time() < deadline, "the export never started writing"
    assert not [n for n in os.listdir(base / "user_implicit") if n.isdigit()]
    assert contract.model_versions(str(base), "user_implicit") == []
    # The next export is version 1, complete.
    assert exporter.export_models([trained["dcm"]], str(base))["version"] == 1
    assert contract.model_versions(str(base), "user_implicit") == [1]
    with pytest.raises(FileExistsError, match="immutable"):
        exporter.export_models([trained["dcm"]], str(base), version=1)


def test_model_refuses_a_data_dir_with_another_vocabulary(trained, world, tmp_path):
    from trainer.model_io import load_trained

    other = tmp_path / "other"
    shutil.copytree(f"{world}/vocab", other / "vocab")
    lines = (other / "vocab" / "items.txt").read_text().splitlines()
    lines[3], lines[4] = lines[4], lines[3]
    (other / "vocab" / "items.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="first difference at line 4"):
        load_trained(trained["dcm"], str(other))
    load_trained(trained["dcm"], world)  # the matching data directory is accepted


def test_labels_only_name_versions_a_model_has():
    """TF Serving refuses a label pointing at a version it has not loaded:
    a model without the labelled version gets no label."""
    from export.serving_files import models_config

    config = models_config({"user_implicit": "/m/user_implicit", "user_explicit": "/m/user_explicit"},
                           {"stable": 3}, present={"user_implicit": [2, 3], "user_explicit": [1, 2]})
    labels = {c.name: dict(c.version_labels) for c in config.model_config_list.config}
    assert labels == {"user_implicit": {"stable": 3}, "user_explicit": {}}
