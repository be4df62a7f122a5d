"""`mer serve` (model server + retrieval service, one command) and `mer query`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from serving.stop_signals import StopSignals

log = logging.getLogger("serving")


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mer serve", description="Serve an export: model server + retrieval service.")
    p.add_argument("--export_dir", required=True, help="the `mer export` base (models.config, models, indexes)")
    p.add_argument("--host", default="127.0.0.1", help="interface for both servers (default: loopback only)")
    p.add_argument("--port", type=int, default=8600, help="retrieval service gRPC port (0 = any free)")
    p.add_argument("--model_server", default=None,
                   help="host:port of a running TF Serving (e.g. the tensorflow/serving container); "
                        "default: start the embedded model server")
    p.add_argument("--model_server_port", type=int, default=8500, help="embedded model server gRPC port")
    p.add_argument("--model_server_transport", choices=("in_process", "grpc"), default="in_process",
                   help="how the retrieval service calls the embedded model server: in_process (its Predict "
                        "handler, no loopback hop; other clients still use the gRPC port) or grpc (loopback "
                        "gRPC, as with a separate TF Serving); not used with --model_server")
    # TF's default (0): with one inter-op thread, the table initialisers of a
    # version being loaded (1M-item vocabularies, seconds) held the thread
    # the serving version's Predicts needed, and a hot swap timed requests out.
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="embedded model server: threads per TF op (TF Serving's flag; 0 = TF's choice)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="embedded model server: ops run in parallel (TF Serving's flag; 0 = TF's choice)")
    p.add_argument("--per_model_thread_pools", action="store_true",
                   help="embedded model server: each model version gets a TF inter-op pool of its own")
    p.add_argument("--metrics_port", type=int, default=None, help="Prometheus HTTP port of the retrieval service")
    p.add_argument("--merge_policy", default="round_robin", help="round_robin (paper) or score")
    p.add_argument("--deadline_ms", type=int, default=2000)
    p.add_argument("--num_explicit", type=int, default=5, help="K_ex, followed topics sampled per request")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def start(args) -> tuple:
    """Starts (embedded model server,) retrieval service; returns both."""
    from serving.retrieval_config import RetrievalConfig
    from serving.retrieval_server import RetrievalServer

    model_server = stub = None
    address = args.model_server
    if address is None:
        from serving.model_server import ModelServer

        model_server = ModelServer(args.export_dir, host=args.host, port=args.model_server_port,
                                   tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
                                   tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
                                   per_model_thread_pools=args.per_model_thread_pools).start()
        model_server.wait_until_available(timeout=300)
        address = model_server.address
        if args.model_server_transport == "in_process":
            stub = model_server.local_stub()
        log.info("embedded model server on %s (%s); the retrieval service calls it %s", address,
                 ", ".join(model_server.model_names),
                 "in process" if stub is not None else "over loopback gRPC")
    cfg = RetrievalConfig(export_dir=args.export_dir, model_server=address, merge_policy=args.merge_policy,
                          deadline_ms=args.deadline_ms, num_explicit=args.num_explicit)
    service = RetrievalServer(cfg, host=args.host, port=args.port, metrics_port=args.metrics_port,
                              predict_stub=stub).start()
    service.wait_until_serving(timeout=120)
    return model_server, service


def single_threaded_blas() -> None:
    """One OpenBLAS thread for NumPy in the serving process: its worker
    threads busy-wait between calls and took most of a core from the ANN
    searches and the model runs (measured: one client, 411 -> 682 requests
    in 12 s). Effective only before NumPy is first imported; an explicit
    OPENBLAS_NUM_THREADS wins."""
    if "numpy" not in sys.modules:  # (later it would change nothing)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def serve_main(argv: list[str] | None = None) -> int:
    single_threaded_blas()
    args = serve_parser().parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.verbose)
    # From before loading: a stop signal during it is kept (a second one exits
    # at once), and the shutdown runs with the handlers still in place.
    with StopSignals() as signals:
        try:
            model_server, service = start(args)
        except (FileNotFoundError, ValueError, TimeoutError, OSError, ImportError, RuntimeError) as err:
            log.error("mer serve: %s", err)
            return 2
        print(json.dumps({"retrieval": service.address, "model_server": service.cfg.model_server,
                          "metrics_port": service.metrics_port, "versions": service.retriever.versions()}),
              flush=True)
        log.info("shutting down on %s", signals.wait().name)
        service.stop()
        if model_server is not None:
            model_server.stop()
    return 0


def query_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mer query", description="Send one request to a running `mer serve`.")
    p.add_argument("--address", default="127.0.0.1:8600")
    p.add_argument("--history", required=True, help="comma-separated item ids, oldest first")
    p.add_argument("--negative", default="", help="comma-separated item ids of the history that were negative")
    p.add_argument("--topics", default="", help="comma-separated followed topics")
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge_policy", default="")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    return p


def format_response(response) -> str:
    """A readable table of the merged candidates."""
    lines = [f"{'#':>4}  {'item':<16} {'score':>7}  {'from':<14} {'condition':<14} item topics"]
    for rank, c in enumerate(response.candidates, start=1):
        source = f"{c.retriever}[{c.embedding}]"
        lines.append(f"{rank:>4}  {c.item_id:<16} {c.score:>7.3f}  {source:<14} {c.condition_topic or '-':<14} "
                     f"{'|'.join(c.item_topics)}")
    used = ", ".join(f"{e.retriever}[{e.embedding}]{'/' + e.condition_topic if e.condition_topic else ''}: "
                     f"budget {e.budget}, {e.contributed} taken" for e in response.embeddings)
    lines.append(f"embeddings: {used}")
    if response.ignored_topics:
        lines.append(f"ignored topics (unknown): {', '.join(response.ignored_topics)}")
    lines.append(f"versions {dict(response.versions)}; ms {dict(response.stage_ms)}")
    return "\n".join(lines)


def query_main(argv: list[str] | None = None) -> int:
    import grpc
    from google.protobuf import json_format

    from serving.client import RetrievalClient

    args = query_parser().parse_args(argv)
    history = [h for h in args.history.split(",") if h]
    negative = set(n for n in args.negative.split(",") if n)
    topics = [t for t in args.topics.split(",") if t]
    with RetrievalClient(args.address) as client:
        try:
            response = client.retrieve(history, [h in negative for h in history], topics, args.budget, args.seed,
                                       args.merge_policy)
        except grpc.RpcError as err:
            print(f"mer query: {err.code().name}: {err.details()}", file=sys.stderr)
            return 2
    print(json_format.MessageToJson(response) if args.json else format_response(response))
    return 0
