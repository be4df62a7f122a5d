"""An embedded model server that speaks TensorFlow Serving's gRPC API.

`tensorflow_model_server` cannot be installed on our machines (SPEC §2.5),
so this serves the same directory layout (`common/contract.py`) through the
same services, using `tensorflow-serving-api`'s generated stubs: any TF
Serving client (ours, `saved_model_cli`-style tools, load testers) works
against it unchanged, and production points the same client at real TF
Serving.

Served: `PredictionService.Predict` and `GetModelMetadata` (the
"signature_def" field), `ModelService.GetModelStatus`. Models load with the
TF1 session loader, warmup records are replayed before a version becomes
AVAILABLE, new versions are picked up by polling the base paths and swapped
in without dropping a request, concurrent Predicts are batched
(`--enable_batching`), and errors carry TF Serving's status codes.

Python:

    server = ModelServer("/exports/base").start()     # or the models.config path
    server.wait_until_available(["user_implicit"], timeout=60)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    ...
    server.stop()

CLI (TF Serving's flag names):

    python -m serving.model_server --model_config_file /exports/base/models.config --port 8500
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from common import contract
from serving.batch_scheduler import BatchStats
from serving.model_manager import ModelManager
from serving.servable import Servable
from serving.server_config import (
    BatchingOptions,
    read_batching_parameters,
    read_model_server_config,
    read_monitoring_config,
    single_model_config,
)
from serving.server_metrics import PrometheusEndpoint, ServerMetrics, start_prometheus
from serving.serving_error import ServingError
from serving.stop_signals import StopSignals

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef


class _Handlers:
    """The three RPCs, on top of the model manager; errors become status codes."""

    def __init__(self, manager: ModelManager, metrics: ServerMetrics):
        self._manager = manager
        self._metrics = metrics

    def run(self, api: str, request, handler: Callable):
        """`handler(request)`, counted in the metrics; a failure is raised as a
        ServingError (anything unexpected as INTERNAL, logged)."""
        model = request.model_spec.name if request.HasField("model_spec") else ""
        try:
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            response = handler(request)
        except ServingError as err:
            error = err
        except Exception as err:  # noqa: BLE001
            log.exception("%s for model %r failed", api, model)
            error = ServingError(grpc.StatusCode.INTERNAL, f"{api} for model {model!r} failed: {err}")
        else:
            self._metrics.record(model, api, grpc.StatusCode.OK)
            return response
        self._metrics.record(model, api, error.code)
        raise error

    def call(self, api: str, request, context, handler: Callable):
        """`run` for a gRPC call: a ServingError aborts with its code, so no
        request crashes the server."""
        try:
            return self.run(api, request, handler)
        except ServingError as err:
            context.abort(err.code, err.message)

    def predict(self, request):
        with self._manager.servable(request.model_spec) as servable:
            return servable.predict(request)

    def get_model_metadata(self, request):
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != SIGNATURE_DEF_FIELD:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Metadata field {field} is not supported "
                                   f"(supported: {SIGNATURE_DEF_FIELD})")
        with self._manager.servable(request.model_spec) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
            return response

    def get_model_status(self, request):
        return self._manager.version_status(request.model_spec)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

    def __init__(self, handlers: _Handlers):
        self._handlers = handlers

    def Predict(self, request, context):  # noqa: N802  (the gRPC method name)
        return self._handlers.call("Predict", request, context, self._handlers.predict)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._handlers.call("GetModelMetadata", request, context, self._handlers.get_model_metadata)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

    def __init__(self, handlers: _Handlers):
        self._handlers = handlers

    def GetModelStatus(self, request, context):  # noqa: N802
        return self._handlers.call("GetModelStatus", request, context, self._handlers.get_model_status)


class LocalRpcError(grpc.RpcError):
    """A failed in-process call, as a gRPC client sees a failed RPC."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self._code, self._message = code, message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message


STOPPED = "the model server has stopped"


class _LocalCalls:
    """The threads in-process calls run on; closed with the server (calls
    still queued then fail UNAVAILABLE as they start)."""

    def __init__(self, threads: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="predict")
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.pool.shutdown(wait=True)  # the calls running now (one session run each)


class _LocalMethod:
    """One RPC of `LocalPredictionStub`: `method(request, timeout)` and
    `method.future(request, timeout)` as on a gRPC stub, with gRPC's
    deadline semantics: a call that has not started, or not finished, when
    its timeout is up fails DEADLINE_EXCEEDED (nothing cancels a session run
    already started)."""

    def __init__(self, handlers: _Handlers, api: str, handler: Callable, calls: _LocalCalls):
        self._handlers, self._api, self._handler, self._calls = handlers, api, handler, calls

    def __call__(self, request, timeout: float | None = None):
        return self._run(request, None if timeout is None else time.monotonic() + timeout)

    def future(self, request, timeout: float | None = None) -> concurrent.futures.Future:
        expires = None if timeout is None else time.monotonic() + timeout
        try:
            return self._calls.pool.submit(self._run, request, expires)
        except RuntimeError:  # the pool is shut down: the server stopped
            failed = concurrent.futures.Future()
            failed.set_exception(LocalRpcError(grpc.StatusCode.UNAVAILABLE, STOPPED))
            return failed

    def _run(self, request, expires: float | None):
        if self._calls.closed:
            raise LocalRpcError(grpc.StatusCode.UNAVAILABLE, STOPPED)
        if expires is not None and time.monotonic() >= expires:
            raise LocalRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        try:
            response = self._handlers.run(self._api, request, self._handler)
        except ServingError as err:
            raise LocalRpcError(err.code, err.message) from None
        if expires is not None and time.monotonic() > expires:
            raise LocalRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return response


class LocalPredictionStub:
    """`PredictionServiceStub`'s `Predict` and `GetModelMetadata` served in
    this process: the same handlers as the gRPC port (input checks, version
    policy, batching, metrics, status codes), without the loopback hop and
    the protobuf bytes in between. Errors are `LocalRpcError`s, a
    `grpc.RpcError` with `code()` and `details()`."""

    def __init__(self, handlers: _Handlers, calls: _LocalCalls):
        self.Predict = _LocalMethod(handlers, "Predict", handlers.predict, calls)  # noqa: N815  (the stub's names)
        self.GetModelMetadata = _LocalMethod(handlers, "GetModelMetadata",  # noqa: N815
                                             handlers.get_model_metadata, calls)


def _config_path(config: str) -> str:
    """`models.config` itself, or the export base directory that holds it."""
    return contract.join(config, contract.MODELS_CONFIG) if tf.io.gfile.isdir(config) else config


def _sibling(config_file: str, name: str) -> str | None:
    """`<config dir>/<name>` when it exists (the export writes the files side by side)."""
    path = contract.join(os.path.dirname(config_file) or ".", name)
    return path if tf.io.gfile.exists(path) else None


class ModelServer:
    """TF Serving's gRPC API over the SavedModels of an export base directory.

    Args:
      config: the `models.config` file (`ModelServerConfig` text proto) or
        the export base directory holding it; None with `model_name` and
        `model_base_path` serves that one model.
      host: the interface to bind (127.0.0.1 keeps it local).
      port: the gRPC port; 0 picks a free one (read `port` after `start`).
      model_name, model_base_path: TF Serving's single-model flags.
      enable_batching: batch concurrent Predicts; None = on iff a batching
        parameters file is given or sits beside `models.config`.
      batching_parameters_file: a `BatchingParameters` text proto; default
        `batching_parameters.txt` beside `models.config`.
      monitoring_config_file: a `MonitoringConfig` text proto; default
        `monitoring.config` beside `models.config`.
      rest_api_port: the HTTP port of the Prometheus endpoint (None = off,
        0 = a free one); it needs `prometheus_client` installed.
      file_system_poll_wait_seconds: how often base paths are polled for new
        versions (<= 0: only at start).
      max_message_bytes: gRPC max send and receive message size.
      grpc_max_threads: gRPC worker threads (concurrent requests).
      tensorflow_intra_op_parallelism, tensorflow_inter_op_parallelism:
        session thread pools (0 = TensorFlow's choice).
      per_model_thread_pools: each loaded model version's session runs its
        ops on an inter-op pool of its own (of the size above), instead of
        the process-wide one every version shares
        (`ConfigProto.use_per_session_threads`; in TF Serving, a platform
        config's `session_config`). The intra-op pool stays process-wide.

    Raises:
      ValueError / FileNotFoundError: a missing or invalid config file, or
        contradictory options (named in the message).
    """

    def __init__(self, config: str | None = None, host: str = "127.0.0.1", port: int = 0, *,
                 model_name: str | None = None, model_base_path: str | None = None,
                 enable_batching: bool | None = None, batching_parameters_file: str | None = None,
                 monitoring_config_file: str | None = None, rest_api_port: int | None = None,
                 file_system_poll_wait_seconds: float = 1.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 grpc_max_threads: int = 16, tensorflow_intra_op_parallelism: int = 0,
                 tensorflow_inter_op_parallelism: int = 0, per_model_thread_pools: bool = False):
        if (config is None) == (model_name is None and model_base_path is None):
            raise ValueError("give either config (models.config or its directory) or model_name and "
                             f"model_base_path; got config={config!r}, model_name={model_name!r}, "
                             f"model_base_path={model_base_path!r}")
        default_batching_file = None
        if config is not None:
            config_file = _config_path(config)
            server_config = read_model_server_config(config_file)
            default_batching_file = _sibling(config_file, contract.BATCHING_PARAMETERS)
            monitoring_config_file = (monitoring_config_file
                                      or _sibling(config_file, contract.MONITORING_CONFIG))
        else:
            server_config = single_model_config(model_name, model_base_path)
        self.host = host
        self._requested_port = port
        self._rest_api_port = rest_api_port
        self._poll_seconds = file_system_poll_wait_seconds
        self._max_message_bytes = max_message_bytes
        self._grpc_max_threads = grpc_max_threads
        self.batching = _batching_options(enable_batching, batching_parameters_file, default_batching_file)
        self._monitoring = read_monitoring_config(monitoring_config_file) if monitoring_config_file else None
        self._session_config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=tensorflow_intra_op_parallelism,
            inter_op_parallelism_threads=tensorflow_inter_op_parallelism,
            use_per_session_threads=per_model_thread_pools)
        self.metrics = ServerMetrics()
        self._manager = ModelManager(server_config.model_config_list.config, self._load)
        self._handlers = _Handlers(self._manager, self.metrics)
        self._grpc_server: grpc.Server | None = None
        self._local: _LocalCalls | None = None
        self._local_lock = threading.Lock()
        self._prometheus: PrometheusEndpoint | None = None
        self.port: int | None = None
        self._stopped = False

    @property
    def model_names(self) -> list[str]:
        return self._manager.model_names

    @property
    def address(self) -> str:
        """`host:port` for `grpc.insecure_channel` (after `start`)."""
        return _grpc_address(self.host, self.port)

    @property
    def prometheus_port(self) -> int | None:
        return self._prometheus.port if self._prometheus is not None else None

    def _load(self, name: str, version: int, path: str) -> Servable:
        return Servable.load(name, version, path, batching=self.batching, session_config=self._session_config)

    def start(self) -> ModelServer:
        """Loads the models' current versions, then serves gRPC and starts polling.

        Like `tensorflow_model_server`, the first load happens before the
        port opens; a model that fails to load is logged (see
        `wait_until_available`) and the others are served.

        Returns:
          self, so `server = ModelServer(base).start()` reads naturally.

        Raises:
          RuntimeError: the port cannot be bound.
        """
        if self._grpc_server is not None:
            raise RuntimeError("ModelServer.start() called twice")
        self._manager.poll()
        self._grpc_server = self._build_grpc_server()
        self._grpc_server.start()
        self._manager.start_polling(self._poll_seconds)
        self._prometheus = start_prometheus(self._monitoring, self.metrics, self.batch_stats, self.host,
                                            self._rest_api_port)
        atexit.register(self.stop)  # a server left running must not outlive the interpreter's teardown
        log.info("Running gRPC ModelServer at %s (models %s, batching %s)", self.address, self.model_names,
                 "on" if self.batching else "off")
        return self

    def _build_grpc_server(self) -> grpc.Server:
        options = [("grpc.max_send_message_length", self._max_message_bytes),
                   ("grpc.max_receive_message_length", self._max_message_bytes),
                   ("grpc.so_reuseport", 0)]  # a taken port must fail, not be shared
        workers = concurrent.futures.ThreadPoolExecutor(self._grpc_max_threads, thread_name_prefix="grpc")
        server = grpc.server(workers, options=options)
        handlers = self._handlers
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(handlers),
                                                                            server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(handlers), server)
        address = _grpc_address(self.host, self._requested_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as err:
            raise RuntimeError(f"cannot bind the gRPC port at {address}: {err}") from err
        if not port:
            raise RuntimeError(f"cannot bind the gRPC port at {address}")
        self.port = port
        return server

    def local_stub(self) -> LocalPredictionStub:
        """A `PredictionServiceStub` for callers in this process (`mer serve`'s
        retrieval service): the gRPC port's handlers, called directly on
        `grpc_max_threads` threads of its own.

        Raises:
          RuntimeError: the server has stopped.
        """
        with self._local_lock:
            if self._stopped:
                raise RuntimeError(f"ModelServer at {self.address}: {STOPPED}")
            if self._local is None:
                self._local = _LocalCalls(self._grpc_max_threads)
            return LocalPredictionStub(self._handlers, self._local)

    def wait_until_available(self, model_names: Sequence[str] | None = None,
                             timeout: float | None = 60.0) -> None:
        """Blocks until each named model (default: all) has an AVAILABLE version.

        Raises:
          ValueError: a model that is not configured.
          TimeoutError: naming each missing model's version states and load errors.
        """
        self._manager.wait_until_available(model_names, timeout)

    def available_versions(self, model_name: str) -> list[int]:
        """The AVAILABLE versions of a model, ascending."""
        return self._manager.available_versions(model_name)

    def batch_stats(self) -> BatchStats:
        """Batching counters over every version served so far."""
        return self._manager.batch_stats()

    def stop(self, grace: float = 2.0) -> None:
        """Stops accepting RPCs, lets in-flight ones finish (up to `grace` s),
        then unloads every version. Safe to call twice."""
        with self._local_lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self.stop)
        if self._local is not None:
            self._local.close()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
        self._manager.stop()
        if self._prometheus is not None:
            self._prometheus.stop()
        log.info("ModelServer at %s stopped", self.address)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _grpc_address(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _batching_options(enable: bool | None, given_file: str | None, default_file: str | None
                      ) -> BatchingOptions | None:
    """Batching on iff enabled, or not disabled and a parameters file exists.

    As in TF Serving, a parameters file given with batching disabled is an
    error; the one found beside models.config is simply not used then.
    """
    if given_file and enable is False:
        raise ValueError(f"batching_parameters_file ({given_file}) is set with enable_batching=False")
    parameters_file = given_file or default_file
    if enable is None:
        enable = parameters_file is not None
    if not enable:
        return None
    if parameters_file is None:
        return BatchingOptions()
    try:
        return BatchingOptions.from_proto(read_batching_parameters(parameters_file))
    except ValueError as err:
        raise ValueError(f"{parameters_file}: {err}") from err


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`tensorflow_model_server`'s flags (the ones this server honours), plus --host."""
    parser = argparse.ArgumentParser(prog="python -m serving.model_server",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    parser.add_argument("--rest_api_port", type=int, default=0,
                        help="HTTP port of the Prometheus endpoint (0 = off)")
    parser.add_argument("--model_config_file",
                        help="models.config (ModelServerConfig text proto) or its directory")
    parser.add_argument("--model_name", help="single-model mode: the model's name")
    parser.add_argument("--model_base_path", help="single-model mode: the directory of its versions")
    parser.add_argument("--enable_batching", type=_parse_bool, nargs="?", const=True, default=None,
                        help="batch concurrent Predicts (default: on iff a batching parameters file exists)")
    parser.add_argument("--batching_parameters_file", help="BatchingParameters text proto")
    parser.add_argument("--monitoring_config_file", help="MonitoringConfig text proto")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="seconds between polls for new versions (<= 0: only at start)")
    parser.add_argument("--grpc_max_threads", type=int, default=16)
    parser.add_argument("--max_message_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    parser.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    parser.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    parser.add_argument("--per_model_thread_pools", action="store_true",
                        help="each model version gets a TF inter-op pool of its own (of the size above)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if not args.model_config_file and not (args.model_name and args.model_base_path):
        parser.error("give --model_config_file, or --model_name and --model_base_path")
    if args.model_config_file and (args.model_name or args.model_base_path):
        parser.error("--model_config_file excludes --model_name/--model_base_path")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the server until SIGINT/SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    server = ModelServer(args.model_config_file, host=args.host, port=args.port, model_name=args.model_name,
                         model_base_path=args.model_base_path, enable_batching=args.enable_batching,
                         batching_parameters_file=args.batching_parameters_file,
                         monitoring_config_file=args.monitoring_config_file,
                         rest_api_port=args.rest_api_port or None,
                         file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
                         max_message_bytes=args.max_message_bytes, grpc_max_threads=args.grpc_max_threads,
                         tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
                         tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
                         per_model_thread_pools=args.per_model_thread_pools)
    with StopSignals() as signals:  # see serve_main (serving/main.py)
        server.start()
        log.info("stopping on %s", signals.wait().name)
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
