"""The embedded model server, over real gRPC with TF Serving's own stubs.

Tiny SavedModels shaped like the user towers (string ids [B, L] + int64
negatives [B, L] -> embeddings [B, K, d], importance [B, K], mask [B, K],
with a vocabulary asset) are saved per test module; every served output is
compared with the same SavedModel run in-process by `tf.saved_model.load`.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from common import contract
from mer_testing import REPO
from serving.model_server import ModelServer, parse_args
from serving.servable import Servable
from serving.server_config import BatchingOptions, aspired_versions

K, D = 3, 4
TOPICS = 2
EXPLICIT = "explicit"
VOCAB = ["a", "b", "c", "d", "e"]
IDS = contract.HISTORY_ITEM_IDS
NEG = contract.HISTORY_NEGATIVE
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
BATCHING = ("max_batch_size { value: 8 }\n"
            "batch_timeout_micros { value: 100000 }\n"
            "num_batch_threads { value: 1 }\n")


class _Tower(tf.Module):
    """A user-tower stand-in: the sum of non-negative history rows' vectors,
    scaled by `version` so that versions give different answers."""

    def __init__(self, vocab_file: str, version: int):
        super().__init__()
        self.vocab = tf.saved_model.Asset(vocab_file)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(self.vocab, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                          tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), -1)
        rng = np.random.default_rng(version)
        self.table_rows = tf.Variable(rng.normal(size=(len(VOCAB), K * D)).astype(np.float32) * version)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name=IDS),
                                  tf.TensorSpec([None, None], tf.int64, name=NEG)])
    def serve(self, ids, negative):
        index = self.table.lookup(ids)
        keep = tf.cast((index >= 0) & (negative == 0), tf.float32)
        rows = tf.gather(self.table_rows, tf.maximum(index, 0)) * keep[..., None]
        embeddings = tf.reshape(tf.reduce_sum(rows, axis=1), [-1, K, D])
        norms = tf.norm(embeddings, axis=-1)
        return {contract.EMBEDDINGS: embeddings, contract.IMPORTANCE: tf.nn.softmax(norms),
                contract.MASK: norms > 0}

    @tf.function(input_signature=[tf.TensorSpec([None, TOPICS], tf.string, name=contract.TOPICS)])
    def serve_topics(self, topics):
        """A second signature with a static dim (the explicit tower's topics)."""
        rows = tf.gather(self.table_rows, tf.maximum(self.table.lookup(topics), 0))
        return {contract.EMBEDDINGS: tf.reshape(rows, [-1, TOPICS, K, D])}


def save_version(model_dir: str, version: int, warmup: list | None = None, atomic: bool = False) -> str:
    """Saves version `version` under `model_dir` (via a temp dir + rename when `atomic`)."""
    final = os.path.join(model_dir, str(version))
    path = os.path.join(model_dir, f".tmp-{version}") if atomic else final
    vocab = os.path.join(model_dir, f"vocab-{version}.txt")
    os.makedirs(model_dir, exist_ok=True)
    with open(vocab, "w") as handle:
        handle.write("\n".join(VOCAB) + "\n")
    tower = _Tower(vocab, version)
    tf.saved_model.save(tower, path,
                        signatures={contract.SIGNATURE: tower.serve, EXPLICIT: tower.serve_topics})
    if warmup is not None:
        os.makedirs(os.path.join(path, "assets.extra"))
        with tf.io.TFRecordWriter(os.path.join(path, contract.WARMUP_FILE)) as writer:
            for request in warmup:
                writer.write(prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    if atomic:
        os.rename(path, final)
    return final


def status_of(model_stub, model: str) -> dict:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    return {s.version: s for s in model_stub.GetModelStatus(request, timeout=30).model_version_status}


def make_inputs(rows: int, width: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.choice(VOCAB + ["", "unknown"], size=(rows, width)).astype(object)
    negative = (rng.random((rows, width)) < 0.2).astype(np.int64)
    return {IDS: ids, NEG: negative}


def request_of(model: str, inputs: dict, signature: str = "", output_filter=(), version=None, label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        request.inputs[key].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return request


def warmup_request():
    return request_of("warm", make_inputs(2, 3, seed=7))


def reference(version_dir: str, inputs: dict, signature: str = contract.SIGNATURE) -> dict[str, np.ndarray]:
    """The SavedModel run in-process (what the server must return)."""
    signature = tf.saved_model.load(version_dir).signatures[signature]
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def assert_outputs_equal(response, expected: dict) -> None:
    assert set(response.outputs) == set(expected)
    for key, want in expected.items():
        got = tf.make_ndarray(response.outputs[key])
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def export_base(tmp_path_factory):
    """An export base: user_implicit v1; `warm` v1 (with warmup requests);
    `partial` v1 + a v2 without saved_model.pb; `swap` v1."""
    base = str(tmp_path_factory.mktemp("export"))
    save_version(os.path.join(base, "user_implicit"), 1)
    save_version(os.path.join(base, "warm"), 1, warmup=[warmup_request(), warmup_request()])
    save_version(os.path.join(base, "partial"), 1)
    half = save_version(os.path.join(base, "partial"), 2)
    os.remove(os.path.join(half, "saved_model.pb"))
    save_version(os.path.join(base, "swap"), 1)
    config = model_server_config_pb2.ModelServerConfig()
    for name in ("user_implicit", "warm", "partial", "swap"):
        model = config.model_config_list.config.add(name=name, base_path=name, model_platform="tensorflow")
        model.model_version_policy.latest.num_versions = 1
    config.model_config_list.config[0].version_labels["stable"] = 1
    with open(os.path.join(base, contract.MODELS_CONFIG), "w") as handle:
        handle.write(str(config))
    with open(os.path.join(base, contract.BATCHING_PARAMETERS), "w") as handle:
        handle.write(BATCHING)
    return base


@pytest.fixture(scope="module")
def server(export_base):
    server = ModelServer(export_base, file_system_poll_wait_seconds=0.2).start()
    try:
        server.wait_until_available(timeout=30)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def test_predict_returns_what_the_saved_model_computes(server, predict_stub, export_base):
    inputs = make_inputs(4, 6, seed=1)
    response = predict_stub.Predict(request_of("user_implicit", inputs), timeout=30)
    assert_outputs_equal(response, reference(os.path.join(export_base, "user_implicit", "1"), inputs))
    spec = response.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("user_implicit", 1, contract.SIGNATURE)
    assert server.batching == BatchingOptions(8, 100000, 1)


def test_signature_name_selects_another_signature_and_its_static_dims_are_checked(predict_stub, export_base):
    topics = {contract.TOPICS: np.array([["a", "e"], ["", "c"], ["b", "zz"]], object)}
    response = predict_stub.Predict(request_of("user_implicit", topics, signature=EXPLICIT), timeout=30)
    expected = reference(os.path.join(export_base, "user_implicit", "1"), topics, EXPLICIT)
    assert_outputs_equal(response, expected)
    assert response.model_spec.signature_name == EXPLICIT
    wide = {contract.TOPICS: np.array([["a", "b", "c"]], object)}
    error = _error(predict_stub.Predict, request_of("user_implicit", wide, signature=EXPLICIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [1, 3]" in error.details() and "[None, 2]" in error.details(), error.details()


def test_version_and_label_select_explicitly(predict_stub):
    inputs = make_inputs(1, 2, seed=2)
    for spec in ({"version": 1}, {"label": "stable"}):
        response = predict_stub.Predict(request_of("user_implicit", inputs, **spec), timeout=30)
        assert response.model_spec.version.value == 1


def test_output_filter_is_honoured(predict_stub, export_base):
    inputs = make_inputs(2, 3, seed=3)
    request = request_of("user_implicit", inputs, output_filter=[contract.MASK])
    response = predict_stub.Predict(request, timeout=30)
    expected = reference(os.path.join(export_base, "user_implicit", "1"), inputs)
    assert_outputs_equal(response, {contract.MASK: expected[contract.MASK]})


def test_get_model_metadata_returns_the_signature_defs(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "user_implicit"
    response = predict_stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def[contract.SIGNATURE]
    assert {k: v.dtype for k, v in signature.inputs.items()} == {IDS: tf.string.as_datatype_enum,
                                                                 NEG: tf.int64.as_datatype_enum}
    assert set(signature.outputs) == {contract.EMBEDDINGS, contract.IMPORTANCE, contract.MASK}
    assert signatures.signature_def[EXPLICIT].inputs[contract.TOPICS].tensor_shape.dim[1].size == TOPICS
    assert (response.model_spec.name, response.model_spec.version.value) == ("user_implicit", 1)


def test_get_model_status_reports_available(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "user_implicit"
    (status,) = model_stub.GetModelStatus(request, timeout=30).model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, AVAILABLE, 0)


def _error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=30)
    return raised.value


@pytest.mark.parametrize("spec, code, words", [
    ({"model": "nope"}, grpc.StatusCode.NOT_FOUND, ["Latest(nope)", "user_implicit"]),
    ({"version": 99}, grpc.StatusCode.NOT_FOUND, ["Specific(user_implicit, 99)", "[1]"]),
    ({"label": "canary"}, grpc.StatusCode.INVALID_ARGUMENT, ["Unrecognized servable version label: canary"]),
    ({"signature": "nope"}, grpc.StatusCode.FAILED_PRECONDITION, ['"nope" not found', "serving_default"]),
])
def test_unknown_model_version_label_signature(predict_stub, spec, code, words):
    model = spec.pop("model", "user_implicit")
    error = _error(predict_stub.Predict, request_of(model, make_inputs(1, 2, 0), **spec))
    assert error.code() == code
    assert all(w in error.details() for w in words), error.details()


def _malformed_negative():
    proto = tf.make_tensor_proto(np.zeros((2, 2), np.int64))
    proto.tensor_content = proto.tensor_content[:5]
    return proto


@pytest.mark.parametrize("case, words", [
    ("missing", ["Missing but required: {history_negative}"]),
    ("extra", ["Sent extra: {foo}"]),
    ("dtype", ["'history_negative'", "DT_FLOAT", "expects DT_INT64"]),
    ("rank", ["'history_item_ids'", "shape [2]", "[None, None]"]),
    ("malformed", ["tensor parsing error: history_negative"]),
    ("output_filter", ["output tensor alias not found in signature: nope"]),
])
def test_bad_requests_are_invalid_argument(predict_stub, case, words):
    inputs = make_inputs(2, 2, 0)
    output_filter = ()
    if case == "missing":
        del inputs[NEG]
    elif case == "extra":
        inputs["foo"] = np.zeros(2, np.int64)
    elif case == "dtype":
        inputs[NEG] = inputs[NEG].astype(np.float32)
    elif case == "rank":
        inputs[IDS] = inputs[IDS][:, 0]
    elif case == "malformed":
        inputs[NEG] = _malformed_negative()
    else:
        output_filter = ["nope"]
    error = _error(predict_stub.Predict, request_of("user_implicit", inputs, output_filter=output_filter))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert all(w in error.details() for w in words), error.details()
    assert "user_implicit" in error.details() or case == "malformed"


def test_missing_model_spec_and_unknown_metadata_field(predict_stub, model_stub):
    no_spec = _error(predict_stub.Predict, predict_pb2.PredictRequest())
    assert no_spec.code() == grpc.StatusCode.INVALID_ARGUMENT and "Missing ModelSpec" in no_spec.details()
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nope"])
    request.model_spec.name = "user_implicit"
    assert _error(predict_stub.GetModelMetadata, request).code() == grpc.StatusCode.INVALID_ARGUMENT
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    assert _error(model_stub.GetModelStatus, status).code() == grpc.StatusCode.NOT_FOUND


def test_failing_warmup_fails_the_version_and_the_previous_one_keeps_serving(predict_stub, model_stub,
                                                                            export_base):
    bad = request_of("warm", {IDS: make_inputs(1, 3, 0)[IDS], NEG: np.zeros((1, 3), np.float32)})
    save_version(os.path.join(export_base, "warm"), 2, warmup=[warmup_request(), bad], atomic=True)
    deadline = time.monotonic() + 30
    while 2 not in status_of(model_stub, "warm") or status_of(model_stub, "warm")[2].state != END:
        assert time.monotonic() < deadline, status_of(model_stub, "warm")
        time.sleep(0.1)
    states = status_of(model_stub, "warm")
    assert states[1].state == AVAILABLE
    assert states[2].state == END and states[2].status.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    message = states[2].status.error_message
    assert "warmup record 2" in message and "DT_FLOAT" in message, message
    response = predict_stub.Predict(request_of("warm", make_inputs(1, 2, 0)), timeout=30)
    assert response.model_spec.version.value == 1


def test_warmup_records_are_replayed(export_base):
    servable = Servable.load("warm", 1, os.path.join(export_base, "warm", "1"), warm_up=False)
    try:
        assert servable.warm_up() == 2
    finally:
        servable.close()


def test_a_version_without_saved_model_pb_is_never_loaded(server, model_stub, export_base):
    half = os.path.join(export_base, "partial", "3")
    os.makedirs(os.path.join(half, "variables"))
    time.sleep(0.6)  # three polls
    versions = sorted(status_of(model_stub, "partial"))
    assert versions == [1] and server.available_versions("partial") == [1]


def test_new_version_is_hot_swapped_with_no_failed_request(server, predict_stub, model_stub, export_base):
    inputs = make_inputs(2, 3, seed=5)
    seen, errors, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                response = predict_stub.Predict(request_of("swap", inputs), timeout=30)
                seen.append(response.model_spec.version.value)
            except grpc.RpcError as err:
                errors.append(err)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        while not seen:
            time.sleep(0.05)
        new_dir = save_version(os.path.join(export_base, "swap"), 2, atomic=True)
        deadline = time.monotonic() + 30
        while 2 not in seen[-3:] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert not errors, [e.details() for e in errors]
    assert seen[0] == 1 and seen[-1] == 2 and sorted(set(seen)) == [1, 2]
    assert seen == sorted(seen)  # never back to the old version
    assert {v: s.state for v, s in status_of(model_stub, "swap").items()} == {1: END, 2: AVAILABLE}
    response = predict_stub.Predict(request_of("swap", inputs), timeout=30)
    assert_outputs_equal(response, reference(new_dir, inputs))


def test_concurrent_requests_are_batched_and_give_the_unbatched_results(server, predict_stub, export_base):
    before = server.batch_stats()
    cases = [make_inputs(1 + i % 2, 4, seed=100 + i) for i in range(16)]
    results, barrier = [None] * len(cases), threading.Barrier(8)

    def client(worker):
        barrier.wait()
        for i in range(worker, len(cases), 8):
            results[i] = predict_stub.Predict(request_of("user_implicit", cases[i]), timeout=30)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    version_dir = os.path.join(export_base, "user_implicit", "1")
    for inputs, response in zip(cases, results):
        assert_outputs_equal(response, reference(version_dir, inputs))
    after = server.batch_stats()
    assert after.tasks - before.tasks == len(cases)
    assert after.tasks_in_shared_batches > before.tasks_in_shared_batches
    assert after.batches - before.batches < len(cases)


def test_single_model_flags_serve_without_batching(export_base):
    solo = ModelServer(model_name="solo", model_base_path=os.path.join(export_base, "user_implicit"),
                       file_system_poll_wait_seconds=0)
    with solo as server, grpc.insecure_channel(server.address) as channel:
        assert server.batching is None and server.port > 0
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request_of("solo", make_inputs(1, 2, 0)), timeout=30)
        assert (response.model_spec.name, response.model_spec.version.value) == ("solo", 1)


def test_per_model_thread_pools_serve_what_the_saved_model_computes(export_base):
    """`mer serve --per_model_thread_pools` with one intra- and one inter-op
    thread: the same outputs, each version's session on an inter-op pool of
    its own (the intra-op pool stays process-wide)."""
    path = os.path.join(export_base, "user_implicit")
    solo = ModelServer(model_name="user_implicit", model_base_path=path, file_system_poll_wait_seconds=0,
                       tensorflow_intra_op_parallelism=1, tensorflow_inter_op_parallelism=1,
                       per_model_thread_pools=True)
    with solo as server, grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        inputs = make_inputs(4, 6, seed=3)
        response = stub.Predict(request_of("user_implicit", inputs), timeout=30)
        assert_outputs_equal(response, reference(os.path.join(path, "1"), inputs))
        with server._manager.servable(response.model_spec) as servable:
            config = servable._session._config
        assert config.use_per_session_threads and config.intra_op_parallelism_threads == 1
    assert parse_args(["--model_name", "m", "--model_base_path", "/m", "--per_model_thread_pools"]
                      ).per_model_thread_pools


def test_wait_until_available_names_what_failed(tmp_path):
    save_version(str(tmp_path / "broken"), 1)
    (tmp_path / "broken" / "1" / "variables" / "variables.index").write_bytes(b"garbage")
    server = ModelServer(model_name="broken", model_base_path=str(tmp_path / "broken"),
                         file_system_poll_wait_seconds=0).start()
    try:
        with pytest.raises(TimeoutError, match="broken: version 1 END"):
            server.wait_until_available(timeout=0.1)
    finally:
        server.stop()


def test_version_policy_and_batching_options():
    policy = model_server_config_pb2.ModelConfig().model_version_policy
    assert aspired_versions(policy, [1, 3, 2]) == {3}
    policy.latest.num_versions = 2
    assert aspired_versions(policy, [1, 3, 2]) == {2, 3}
    policy.specific.versions.extend([1, 7])
    assert aspired_versions(policy, [1, 3, 2]) == {1}
    policy.all.SetInParent()
    assert aspired_versions(policy, [1, 3, 2]) == {1, 2, 3}
    with pytest.raises(ValueError, match="must match max_batch_size"):
        BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4))


def test_cli_flags_are_tensorflow_model_servers():
    args = parse_args(["--model_config_file", "/x/models.config", "--port", "0", "--enable_batching",
                       "--file_system_poll_wait_seconds", "5"])
    assert (args.model_config_file, args.port, args.enable_batching, args.file_system_poll_wait_seconds) == (
        "/x/models.config", 0, True, 5.0)
    single = parse_args(["--model_name", "m", "--model_base_path", "/m", "--enable_batching=false"])
    assert single.enable_batching is False
    with pytest.raises(SystemExit):
        parse_args(["--port", "1"])


def test_stop_unloads_everything(export_base, tmp_path):
    shutil.copytree(os.path.join(export_base, "user_implicit"), tmp_path / "m")
    server = ModelServer(model_name="m", model_base_path=str(tmp_path / "m"),
                         file_system_poll_wait_seconds=0.1)
    server.start()
    server.stop()
    server.stop()
    assert server.available_versions("m") == []


def test_prometheus_metrics_when_enabled(export_base, tmp_path, caplog):
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    caplog.set_level(logging.INFO, logger="serving")
    monitored = ModelServer(model_name="m", model_base_path=os.path.join(export_base, "user_implicit"),
                            monitoring_config_file=str(monitoring), rest_api_port=0,
                            file_system_poll_wait_seconds=0)
    with monitored as server, grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(request_of("m", make_inputs(1, 2, 0)), timeout=30)
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            assert server.prometheus_port is None and "prometheus_client is not installed" in caplog.text
            return
        page = urllib.request.urlopen(f"http://127.0.0.1:{server.prometheus_port}/metrics", timeout=10).read()
        assert b'request_count_total{api="Predict",model_name="m",status="OK"} 1.0' in page


@pytest.mark.slow  # a second Python process importing TensorFlow (~10 s on a busy 2-core machine)
def test_cli_serves_until_sigterm(export_base):
    """`python -m serving.model_server` with TF Serving's flags, stopped by SIGTERM."""
    command = [sys.executable, "-m", "serving.model_server", "--model_config_file",
               os.path.join(export_base, contract.MODELS_CONFIG), "--port", "0", "--enable_batching=false",
               "--file_system_poll_wait_seconds", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []  # every stderr line, for the failure message
    reader = threading.Thread(target=lambda: [(lines.put(line), seen.append(line)) for line in process.stderr],
                              daemon=True)
    reader.start()
    try:
        address, deadline = None, time.monotonic() + 120
        while address is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if "Running gRPC ModelServer at " in line:
                address = line.split("Running gRPC ModelServer at ", 1)[1].split()[0]
        with grpc.insecure_channel(address) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            assert status_of(stub, "user_implicit")[1].state == AVAILABLE
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 60 s after SIGTERM; its stderr:\n" + "".join(seen[-30:]))
        reader.join(timeout=10)  # its last lines
        assert code == 0, "".join(seen[-30:])
        assert any("stopping on SIGTERM" in line for line in seen)
    finally:
        if process.poll() is None:
            process.kill()
