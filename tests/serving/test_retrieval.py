"""The retrieval service over loopback gRPC on the exported synthetic world:
the embedded model server (TF Serving API) under it, real ScaNN indexes,
answers checked against a NumPy reference, every bad-request class, the
model server killed and restarted, and a new version hot-swapped under
traffic."""

from __future__ import annotations

import concurrent.futures
import shutil
import threading
import time

import grpc
import numpy as np
import pytest

import numpy_reference as ref
from common import contract
from trainer import features

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(indexed, tmp_path_factory):
    """A copy of the indexed export, served: {"models", "service", "base"}."""
    from serving.model_server import ModelServer
    from serving.retrieval_config import RetrievalConfig
    from serving.retrieval_server import RetrievalServer

    from beam.embed_items import read_embeddings
    from common.item_index import IndexConfig, load_index, save
    from common.topic_index import build_topic_indexes, topic_members
    from export.exporter import write_serving_files

    base = str(tmp_path_factory.mktemp("served") / "serving")
    shutil.copytree(indexed, base)
    write_serving_files(base)  # models.config names absolute paths: point it at the copy
    # Every topic above 60 items but the largest gets its own index (`mer
    # build-index` gives one to every topic of at least 20,000 items); the
    # largest keeps ScaNN + the post-filter.
    index_dir = contract.index_dir(base, contract.EXPLICIT, 1)
    explicit = load_index(index_dir)
    members = topic_members(explicit.topics)
    largest = max(members, key=lambda t: len(members[t]))
    embeddings = read_embeddings(contract.embeddings_dir(base, contract.EXPLICIT, 1))["embeddings"]
    explicit.topic_indexes = build_topic_indexes(embeddings, [[t for t in ts if t != largest] for ts in explicit.topics],
                                                 IndexConfig(), 61)
    shutil.rmtree(index_dir)
    save(explicit, index_dir)
    models = ModelServer(base, file_system_poll_wait_seconds=0.5).start()
    models.wait_until_available(timeout=120)
    # Topics of at most 60 items are scored exactly over their items; larger
    # ones through their own index or ScaNN + the relevance post-filter: all
    # three paths run.
    cfg = RetrievalConfig(export_dir=base, model_server=models.address, deadline_ms=1500, index_poll_seconds=0.5,
                          exact_topic_max_items=60)
    service = RetrievalServer(cfg, metrics_port=0).start()
    service.wait_until_serving(timeout=60)
    served = {"models": models, "service": service, "base": base}
    yield served
    service.stop()
    served["models"].stop()


@pytest.fixture(scope="module")
def client(stack):
    from serving.client import RetrievalClient

    with RetrievalClient(stack["service"].address, timeout=10) as c:
        yield c


def eval_users(world, n=6):
    from trainer.data import build_dataset

    batch = next(iter(build_dataset(f"{world}/{features.EVAL_IMPLICIT}-*", 64, 50, shuffle=False)))
    users = []
    for ids, neg, follows in zip(batch[features.HISTORY_ITEM_IDS].numpy(), batch[features.HISTORY_NEGATIVE].numpy(),
                                 batch[features.FOLLOWED_TOPICS].numpy()):
        history = [i.decode() for i in ids if i]
        topics = [t.decode() for t in follows if t]
        if len(history) >= 3 and topics:
            users.append((history, [int(x) for x in neg[:len(history)]], topics))
    return users[:n]


def test_tf_serving_stub_returns_the_keras_embeddings(stack, trained):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from trainer.layers._keras import tf
    from trainer.model_io import load_trained

    _, model, _ = load_trained(trained["dcm"])
    ids = np.array([[model.store.vocabulary[5], model.store.vocabulary[9], ""]], object)
    neg = np.array([[0, 1, 0]], np.int64)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "user_implicit"
    request.inputs["history_item_ids"].CopyFrom(tf.make_tensor_proto(ids))
    request.inputs["history_negative"].CopyFrom(tf.make_tensor_proto(neg))
    with grpc.insecure_channel(stack["models"].address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    got = tf.make_ndarray(response.outputs["embeddings"])
    padded = {features.HISTORY_ITEM_IDS: tf.constant(np.pad(ids[:, :2], ((0, 0), (0, 48)), constant_values=b"")),
              features.HISTORY_NEGATIVE: tf.constant(np.pad(neg[:, :2], ((0, 0), (0, 48))))}
    want = model.user_embeddings(padded, training=False)["embeddings"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert response.model_spec.version.value == 1


def reference_answer(stack, trained, history, negative, topics, budget):
    """NumPy: Keras embeddings, exact scores over each index's items, history
    and topic filters, budgets, round-robin with de-duplication."""
    from beam.embed_items import read_embeddings
    from export.build_index import user_query_embeddings  # noqa: F401  (same export, same items)
    from trainer.layers._keras import tf
    from trainer.model_io import load_trained

    base = stack["base"]
    lists, weights, meta = [], [], []
    pad = lambda xs, v: np.array([xs[-50:] + [v] * (50 - len(xs[-50:]))])  # noqa: E731
    for kind, retriever in (("dcm", contract.IMPLICIT), ("cr", contract.EXPLICIT)):
        _, model, _ = load_trained(trained[kind])
        inputs = {features.HISTORY_ITEM_IDS: tf.constant(pad(history, "")),
                  features.HISTORY_NEGATIVE: tf.constant(pad(negative, 0))}
        conditions = tf.constant([topics]) if retriever == contract.EXPLICIT else None
        out = {k: v.numpy()[0] for k, v in model.user_embeddings(inputs, training=False, conditions=conditions).items()}
        items = read_embeddings(contract.embeddings_dir(base, retriever, 1))
        scores = out["embeddings"] @ items["embeddings"].T
        valid = np.flatnonzero(out["mask"])
        # float64 as the service: the global interest's importance is the
        # mean of the others', so float32 weights tie-break budgets differently.
        imp = out["importance"][valid].astype(np.float64) if retriever == contract.IMPLICIT else np.ones(len(valid))
        weights += list(imp * len(imp) / imp.sum())
        for j in valid:
            order = np.lexsort((np.arange(len(scores[j])), -scores[j]))
            keep = [items["item_ids"][r] for r in order if items["item_ids"][r] not in history
                    and (retriever == contract.IMPLICIT or topics[j] in items["topics"][r])]
            lists.append(keep)
            meta.append((retriever, int(j)))
    budget_per = ref.apportion(weights, budget)
    names = sorted({i for keep in lists for i in keep})
    number = {name: n for n, name in enumerate(names)}
    merged, sources = ref.round_robin([[number[i] for i in keep] for keep in lists], budget_per, budget)
    return [(names[item], meta[j]) for item, (j, _) in zip(merged, sources)]


def test_answer_equals_numpy_reference(stack, client, trained, world):
    users = eval_users(world)
    assert len(users) >= 3
    searches = set()
    for history, negative, topics in users:
        topics = topics[:5]
        response = client.retrieve(history, negative, topics, budget=60)
        got = [(c.item_id, (c.retriever, c.embedding)) for c in response.candidates]
        want = reference_answer(stack, trained, history, negative, topics, 60)
        assert got == want
        assert len({c.item_id for c in response.candidates}) == len(response.candidates) == 60
        assert not set(history) & {c.item_id for c in response.candidates}
        for c in response.candidates:
            if c.retriever == "explicit":
                assert c.condition_topic in c.item_topics
        assert sum(e.budget for e in response.embeddings) == 60
        searches |= {(e.retriever, e.search) for e in response.embeddings}
        assert list(response.sampled_topics) == topics and dict(response.versions) == {"implicit": 1, "explicit": 1}
        again = client.retrieve(history, negative, topics, budget=60)
        assert [c.item_id for c in again.candidates] == [c.item_id for c in response.candidates]
    # Every explicit path ran (the topic's own index, ScaNN + post-filter,
    # and exact over a topic's items: small topics, or a filtered list that
    # came up short), and each matched the exact reference.
    assert {("implicit", "ann"), ("explicit", "ann"), ("explicit", "exact_topic"),
            ("explicit", "topic_index")} <= searches, searches


def test_stage_ms_splits_the_request(client, world):
    """`stage_ms` reports every stage of `serving.client.STAGES`, none
    negative, and the stages before total add up to it (each is rounded to
    1 us): no stage overlaps another or leaves a gap."""
    from serving.client import STAGES

    for history, negative, topics in eval_users(world)[:3]:
        ms = dict(client.retrieve(history, negative, topics[:5], budget=60).stage_ms)
        assert set(ms) == set(STAGES)
        assert min(ms.values()) >= 0 and ms["merge"] > 0 and ms["collect"] > 0
        assert abs(sum(ms[s] for s in STAGES if s != "total") - ms["total"]) < 0.01, ms


def test_topic_sample_is_seeded_and_reproducible(client, world):
    history, negative, _ = eval_users(world)[0]
    with open(f"{world}/vocab/topics.txt") as handle:
        topics = [t.strip() for t in handle][:12]
    first = client.retrieve(history, negative, topics, budget=30, seed=7)
    assert len(first.sampled_topics) == 5 and set(first.sampled_topics) <= set(topics)
    assert list(client.retrieve(history, negative, topics, budget=30, seed=7).sampled_topics) == list(first.sampled_topics)
    samples = {tuple(client.retrieve(history, negative, topics, budget=30, seed=s).sampled_topics) for s in range(1, 9)}
    assert len(samples) > 1
    unseeded = [tuple(client.retrieve(history, negative, topics, budget=30).sampled_topics) for _ in range(2)]
    assert unseeded[0] == unseeded[1]


@pytest.mark.parametrize("case, message", [
    ({"budget": -1}, "budget=-1"),
    ({"budget": 10_001}, "budget=10001"),
    ({"history": ["a"] * 1001}, "at most 1000"),
    ({"history": ["ok", ""]}, "history[1].item_id"),
    ({"history": [], "topics": []}, "nothing to retrieve"),
    ({"history": [], "topics": ["no-such-topic"]}, "nothing to retrieve"),
    ({"merge_policy": "best"}, "merge_policy='best'"),
    ({"topics": [""]}, "followed_topics"),
])
def test_bad_requests_are_invalid_argument(client, case, message):
    args = {"history": ["pin_00000001"], "topics": [], "budget": 10, "merge_policy": ""} | case
    with pytest.raises(grpc.RpcError) as err:
        client.retrieve(args["history"], None, args["topics"], args["budget"], merge_policy=args["merge_policy"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details(), err.value.details()


def test_malformed_bytes_and_graceful_answers(stack, client):
    call = client.channel.unary_unary("/mer.retrieval.v1.Retrieval/Retrieve")
    with pytest.raises(grpc.RpcError) as err:
        call(b"\xff\xff\xff garbage", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "RetrieveRequest" in err.value.details()
    # Unknown items (a cold user) and unknown topics: answered, and reported.
    response = client.retrieve(["never-seen-1", "never-seen-2"], None, ["no-such-topic"], budget=25)
    assert len(response.candidates) == 25 and response.unknown_items == 2
    assert list(response.ignored_topics) == ["no-such-topic"] and not response.sampled_topics
    assert client.health() == "SERVING"
    assert stack["service"].metrics.count("INVALID_ARGUMENT") >= 1 and stack["service"].metrics.count("OK") >= 1
    import urllib.request

    port = stack["service"].metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'mer_retrieval_latency_seconds_bucket{le="0.01",stage="ann"}' in text


def test_model_server_killed_and_restarted(stack, client, world):
    from serving.model_server import ModelServer

    models, base = stack["models"], stack["base"]
    history, negative, topics = eval_users(world)[0]
    port = models.port
    models.stop()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        client.retrieve(history, negative, topics, budget=20)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), err.value
    assert time.monotonic() - started < 1.5 + 2.0  # within the service deadline (+ slack)
    restarted = ModelServer(base, port=port, file_system_poll_wait_seconds=0.5).start()
    restarted.wait_until_available(timeout=120)
    stack["models"] = restarted
    deadline = time.monotonic() + 30
    while True:
        try:
            assert len(client.retrieve(history, negative, topics, budget=20).candidates) == 20
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the service did not recover"
            time.sleep(0.2)


def test_new_version_hot_swap_under_traffic(stack, client, trained, world):
    from beam.embed_items import run_embed_items
    from beam.run import IN_MEMORY
    from export.build_index import run_build_index
    from export.exporter import export_models

    service, base = stack["service"], stack["base"]
    history, negative, topics = eval_users(world)[1]
    failures, answered, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                answered.append(dict(client.retrieve(history, negative, topics, budget=20).versions))
            except grpc.RpcError as err:
                failures.append(f"{err.code().name}: {err.details()}")
            time.sleep(0.02)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        export_models([trained["dcm"], trained["cr"]], base, version=2)
        for retriever in contract.RETRIEVERS:
            run_embed_items(base, retriever, beam_args=list(IN_MEMORY))
            run_build_index(base, retriever)
        deadline = time.monotonic() + 60
        while service.retriever.versions() != {"implicit": 2, "explicit": 2}:
            assert time.monotonic() < deadline, (service.retriever.versions(), stack["models"].available_versions(
                "user_implicit"), stack["models"].available_versions("user_explicit"))
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:5]
    assert answered[0] == {"implicit": 1, "explicit": 1} and answered[-1] == {"implicit": 2, "explicit": 2}
    assert len(answered) > 20


def test_generated_stubs_match_the_proto(tmp_path):
    """serving/protos/*_pb2*.py are what grpc_tools makes of retrieval.proto
    (run in a subprocess: grpc_tools must not share a process with TF)."""
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{repo}", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", str(repo / "serving/protos/retrieval.proto")],
                   check=True, capture_output=True, timeout=120)
    for name in ("retrieval_pb2.py", "retrieval_pb2_grpc.py"):
        assert (tmp_path / "serving/protos" / name).read_text() == (repo / "serving/protos" / name).read_text(), name


def _deadline_exceeded(stack, world, stub, deadline_ms: int):
    """One request through a service with `deadline_ms` and Predict `stub`
    (None: gRPC): `(its RpcError, seconds it took)`."""
    from serving.client import RetrievalClient
    from serving.retrieval_config import RetrievalConfig
    from serving.retrieval_server import RetrievalServer

    cfg = RetrievalConfig(export_dir=stack["base"], model_server=stack["models"].address, deadline_ms=deadline_ms)
    service = RetrievalServer(cfg, predict_stub=stub).start()
    try:
        service.wait_until_serving(timeout=60)
        history, negative, topics = eval_users(world)[0]
        with RetrievalClient(service.address, timeout=10) as client:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                client.retrieve(history, negative, topics, budget=20)
            return err.value, time.monotonic() - started
    finally:
        service.stop()


@pytest.mark.parametrize("transport", ["grpc", "in_process"])
def test_slow_model_server_is_deadline_exceeded(stack, world, transport):
    """A model server slower than the service's deadline: DEADLINE_EXCEEDED,
    answered within the deadline (plus slack), never a hang; in process too,
    where nothing cancels the call (`mer serve`'s default transport)."""
    err, took = _deadline_exceeded(stack, world, stack["models"].local_stub() if transport == "in_process" else None, 1)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert took < 2.0


def test_in_process_transport_answers_as_grpc(stack, client, world):
    """`mer serve`'s default: the service calls the embedded model server's
    Predict handler in process. Same answers as over loopback gRPC, and the
    same status codes and messages for bad Predicts (the deadline: above)."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.client import RetrievalClient
    from serving.retrieval_config import RetrievalConfig
    from serving.retrieval_server import RetrievalServer
    from serving.tensors import string_tensor

    models = stack["models"]
    local = models.local_stub()
    cfg = RetrievalConfig(export_dir=stack["base"], model_server=models.address, deadline_ms=1500,
                          exact_topic_max_items=60)
    fast = RetrievalServer(cfg, predict_stub=local).start()
    try:
        fast.wait_until_serving(timeout=60)
        with RetrievalClient(fast.address, timeout=10) as in_process:
            for history, negative, topics in eval_users(world, 4):
                want = client.retrieve(history, negative, topics[:5], budget=60)
                got = in_process.retrieve(history, negative, topics[:5], budget=60)
                assert [(c.item_id, c.retriever, c.embedding, c.score) for c in got.candidates] == \
                       [(c.item_id, c.retriever, c.embedding, c.score) for c in want.candidates]
    finally:
        fast.stop()
    bad = {"unknown model": ("no_such_model", "serving_default", {"history_item_ids": [["a"]]}),
           "unknown signature": ("user_implicit", "nope", {"history_item_ids": [["a"]]}),
           "missing input": ("user_implicit", "serving_default", {})}
    with grpc.insecure_channel(models.address) as channel:
        remote = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for case, (name, signature, inputs) in bad.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = name, signature
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(string_tensor(value))
            errors = []
            for call in (remote.Predict, local.Predict, lambda r: local.Predict.future(r).result()):
                with pytest.raises(grpc.RpcError) as err:
                    call(request)
                errors.append((err.value.code(), err.value.details()))
            assert errors[0] == errors[1] == errors[2], (case, errors)
            assert errors[0][0] in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.INVALID_ARGUMENT), (case, errors)


class _SilentModelServer:
    """A Predict stub whose calls never complete (a hung model server)."""

    class _Method:
        def future(self, request, timeout=None):
            return concurrent.futures.Future()

    Predict = _Method()


def test_a_model_server_that_never_answers_is_deadline_exceeded(stack, world):
    """Even when nothing ends the tower call (an in-process stub that hangs),
    the request answers DEADLINE_EXCEEDED shortly after its deadline."""
    from serving.retrieval import SEARCH_GRACE_S

    err, took = _deadline_exceeded(stack, world, _SilentModelServer(), 100)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no answer" in err.details()
    assert 0.1 + SEARCH_GRACE_S - 0.05 < took < 0.1 + SEARCH_GRACE_S + 1.0, took


def test_local_stub_deadline_and_a_stopped_server(stack, world):
    """The in-process stub's timeout is a gRPC deadline; once its server
    stops, calls fail UNAVAILABLE and no new stub is handed out."""
    from tensorflow_serving.apis import predict_pb2

    from serving.model_server import ModelServer
    from serving.tensors import int64_tensor, string_tensor

    history = eval_users(world)[0][0][:3]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "user_implicit"
    request.inputs["history_item_ids"].CopyFrom(string_tensor([history]))
    request.inputs["history_negative"].CopyFrom(int64_tensor([[0] * len(history)]))
    server = ModelServer(stack["base"], file_system_poll_wait_seconds=0).start()
    try:
        server.wait_until_available(["user_implicit"], timeout=120)
        stub = server.local_stub()
        assert "embeddings" in stub.Predict(request, timeout=10).outputs
        assert "embeddings" in stub.Predict.future(request, timeout=10).result().outputs
        for call in (stub.Predict, lambda r, timeout: stub.Predict.future(r, timeout).result()):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=0)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value
    finally:
        server.stop()
    for call in (stub.Predict, lambda r, timeout: stub.Predict.future(r, timeout).result()):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    with pytest.raises(RuntimeError, match="stopped"):
        server.local_stub()
