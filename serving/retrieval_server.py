"""The retrieval service over gRPC: `mer serve` and its Python API.

`RetrievalServer` serves `mer.retrieval.v1.Retrieval/Retrieve`
(`serving/protos/retrieval.proto`), the standard gRPC health service
(`grpc.health.v1.Health`: SERVING once an index is loaded) and Prometheus
metrics (requests by status code, latency per stage). It polls the export
directory for new index versions and switches once the model server has
the matching user-tower version AVAILABLE.

Requests are parsed in the handler (not by gRPC), so a malformed message is
INVALID_ARGUMENT like any other bad request, never INTERNAL.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from common.extras import require
from serving.protos import retrieval_pb2 as pb
from serving.client import STAGES
from serving.retrieval import Answer, RequestError, Retriever, UpstreamError
from serving.retrieval_config import RetrievalConfig

log = logging.getLogger(__name__)
SERVICE = "mer.retrieval.v1.Retrieval"
CHANNEL_OPTIONS = [
    # Reconnect quickly when the model server comes back (gRPC's default
    # backoff grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


class Metrics:
    """Prometheus metrics of one service (its own registry)."""

    def __init__(self):
        prom = require("prometheus_client")
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter("mer_retrieval_requests", "Retrieve calls by gRPC status code", ["code"],
                                     registry=self.registry)
        self.latency = prom.Histogram("mer_retrieval_latency_seconds", "Retrieve latency per stage", ["stage"],
                                      registry=self.registry,
                                      buckets=(.001, .002, .004, .006, .008, .01, .015, .02, .03, .05, .1, .25, .5, 1, 2.5))
        self.candidates = prom.Histogram("mer_retrieval_candidates", "candidates returned", registry=self.registry,
                                         buckets=(0, 10, 50, 100, 250, 500, 1000, 2500, 10000))

    def observe(self, code: grpc.StatusCode, answer=None) -> None:
        self.requests.labels(code.name).inc()
        if answer is not None:
            for stage in STAGES:
                self.latency.labels(stage).observe(answer.header.stage_ms.get(stage, 0.0) / 1000.0)
            self.candidates.observe(answer.count)

    def count(self, code: str) -> float:
        return self.registry.get_sample_value("mer_retrieval_requests_total", {"code": code}) or 0.0

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        prom = require("prometheus_client")
        server, _ = prom.start_http_server(port, addr=host, registry=self.registry)
        return server.server_port


class RetrievalServer:
    """The retrieval service.

    Args:
      cfg: the service config (export dir, model server address, ...).
      host, port: where to listen (port 0 = a free one; see `port`).
      metrics_port: Prometheus HTTP port (None = off, 0 = a free one).
      workers: gRPC worker threads.
      predict_stub: how Predict reaches the model server; None = a
        `PredictionServiceStub` on a channel to `cfg.model_server` (an
        embedded server's `local_stub()` skips the loopback hop).
    """

    def __init__(self, cfg: RetrievalConfig, host: str = "127.0.0.1", port: int = 0,
                 metrics_port: int | None = None, workers: int = 16, predict_stub=None):
        self.cfg = cfg
        self.host = host
        self.channel = grpc.insecure_channel(cfg.model_server, options=CHANNEL_OPTIONS)
        self.retriever = Retriever(cfg, self.channel, predict_stub)
        self.metrics = Metrics()
        self.health = require("grpc_health.v1.health").HealthServicer()
        self._requested = (port, metrics_port, workers)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.Server | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- model server status ----------------------------------------------------
    def _available(self, model: str, version: int) -> bool:
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        request.model_spec.version.value = version
        try:
            status = model_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus(request, timeout=2.0)
        except grpc.RpcError:
            return False
        return any(v.version == version and v.state == v.AVAILABLE for v in status.model_version_status)

    def refresh(self) -> list[str]:
        """Loads newer indexes whose towers are available; updates health."""
        changed = self.retriever.refresh(self._available)
        if changed:
            log.info("retrieval now serves %s", self.retriever.versions())
        health_pb2 = require("grpc_health.v1.health_pb2")
        state = health_pb2.HealthCheckResponse.SERVING if self.retriever.loaded else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            self.health.set(name, state)
        return changed

    def _poll(self) -> None:
        while not self._stop.wait(self.cfg.index_poll_seconds):
            try:
                self.refresh()
            except Exception:  # a bad new index must not stop serving the current one
                log.exception("index refresh failed; still serving %s", self.retriever.versions())

    # -- the RPC ------------------------------------------------------------------
    def _retrieve(self, raw: bytes, context: grpc.ServicerContext) -> Answer:
        code, response = grpc.StatusCode.OK, None
        try:
            try:
                request = pb.RetrieveRequest.FromString(raw)
            except DecodeError as err:
                raise RequestError(f"not a RetrieveRequest: {err}") from None
            response = self.retriever.retrieve(request, timeout=context.time_remaining())
            return response
        except RequestError as err:
            code = grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(err))
        except UpstreamError as err:
            code = err.code
            context.abort(code, str(err))
        except Exception as err:  # noqa: BLE001  (answer, never drop the call)
            if isinstance(err, grpc.RpcError) or context.code() is not None:
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception("retrieve failed")
            context.abort(code, f"internal error: {type(err).__name__}: {err}")
        finally:
            self.metrics.observe(code, response)

    def start(self) -> RetrievalServer:
        port, metrics_port, workers = self._requested
        self.refresh()
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="retrieve"),
                                   options=CHANNEL_OPTIONS[3:])
        handler = grpc.unary_unary_rpc_method_handler(self._retrieve, request_deserializer=None,
                                                      response_serializer=Answer.serialize)
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Retrieve": handler})])
        require("grpc_health.v1.health_pb2_grpc").add_HealthServicer_to_server(self.health, self._server)
        self.port = self._server.add_insecure_port(f"{self.host}:{port}")
        if not self.port:
            raise OSError(f"cannot bind the retrieval service to {self.host}:{port}")
        self._server.start()
        if metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(metrics_port, self.host)
        self._poller = threading.Thread(target=self._poll, name="index-poll", daemon=True)
        self._poller.start()
        log.info("retrieval service on %s:%d (model server %s; indexes %s)", self.host, self.port,
                 self.cfg.model_server, self.retriever.versions() or "none yet")
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.retriever.loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no index of {self.cfg.export_dir} became servable in {timeout:.0f} s "
                                   f"(model server {self.cfg.model_server})")
            time.sleep(0.1)
            self.refresh()

    def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop(grace).wait()
        self.retriever.close()
        self.channel.close()
