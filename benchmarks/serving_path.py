"""Where one retrieval request's time goes: the serving path in one process,
one request at a time.

No gRPC and no load generator: the embedded model server and the retrieval
service's `Retriever`, wired as `mer serve` wires them (the in-process
Predict stub), answer `--requests` of the serving benchmark's requests one
after the other, on its cached export (`benchmarks/serving.py` builds it:
1M items, 7 implicit + 5 explicit embeddings, budget 1,000). Reported:

  towers alone  each user tower's Predict (the request the service sends),
                called alone: ms per call and process CPU ms per call (all
                threads: TensorFlow's pools too);
  timeline      per request, ms from its start until each tower answered,
                until each retriever's searches and filters were done
                (they start when its tower answers, so the two retrievers
                overlap), and until the answer's bytes were ready (budgets,
                merge, response);
  cpu           process CPU ms per request.

The critical path is towers (called concurrently) -> searches -> merge: the
timeline shows what each phase costs on the request's path, "towers alone"
what a tower costs when it has the cores to itself.

  python -m benchmarks.serving_path [--items 1000000] [--requests 300]
      [--cache benchmarks/results/serving_export] [--out benchmarks/results/serving_path.json]
"""

from __future__ import annotations

from serving.main import single_threaded_blas

single_threaded_blas()  # as `mer serve`: before NumPy loads

import argparse  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import write_result  # noqa: E402

WARMUP_REQUESTS = 30


def _timed_retriever(cfg, stub):
    """A `Retriever` that notes when each tower answered and each
    retriever's searches were done (`marks`, perf_counter seconds)."""
    from serving.retrieval import Retriever

    class Timed(Retriever):
        def __init__(self, *args):
            super().__init__(*args)
            self.marks: dict[str, float] = {}

        def _submit_part(self, part, retriever, *rest):
            self.marks[f"{retriever} tower answered"] = time.perf_counter()
            return super()._submit_part(part, retriever, *rest)

        def _part(self, retriever, *rest):
            try:
                return super()._part(retriever, *rest)
            finally:
                self.marks[f"{retriever} searches done"] = time.perf_counter()

    return Timed(cfg, None, stub)


def _stats(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"mean": round(float(values.mean()), 3), "p50": round(float(np.percentile(values, 50)), 3),
            "p90": round(float(np.percentile(values, 90)), 3)}


def _requests(users: list[dict], budget: int) -> list:
    from serving.client import retrieve_request

    return [retrieve_request(u["history"], u["negative"], u["topics"], budget) for u in users]


def towers_alone(retriever, requests: list) -> dict:
    """Each user tower's Predict, called alone, over `requests`."""
    from common import contract

    with retriever._lock:
        loaded = dict(retriever.loaded)
    queries = [retriever.validate(r, loaded) for r in requests]
    out = {}
    for name in contract.RETRIEVERS:
        if name not in loaded:
            continue
        ms, cpu0 = [], time.process_time()
        for query in queries:
            started = time.perf_counter()
            retriever._predict(name, loaded[name].version, query, 10.0).result()
            ms.append((time.perf_counter() - started) * 1000.0)
        out[contract.USER_MODEL[name]] = {**_stats(ms),
                                          "cpu_ms": round((time.process_time() - cpu0) * 1000.0 / len(ms), 3)}
    return out


def timeline(retriever, requests: list) -> tuple[dict, float]:
    """`({mark: stats of ms since the request started}, CPU ms per request)`."""
    marks: dict[str, list[float]] = {}
    cpu0 = time.process_time()
    for request in requests:
        retriever.marks.clear()
        started = time.perf_counter()
        retriever.retrieve(request).serialize()
        done = time.perf_counter()
        for name, at in [*retriever.marks.items(), ("answer ready", done)]:
            marks.setdefault(name, []).append((at - started) * 1000.0)
    cpu = (time.process_time() - cpu0) * 1000.0 / len(requests)
    ordered = sorted(marks, key=lambda m: np.median(marks[m]))
    return {name: _stats(marks[name]) for name in ordered}, round(cpu, 3)


def print_report(result: dict) -> None:
    print(f"\n## One request at a time, in process ({result['items']:,} items, budget {result['budget']}, "
          f"{result['requests']} requests, {result['machine']['cpus']} CPUs)\n")
    print("| tower, called alone | p50 ms | p90 ms | CPU ms per call |")
    print("|---|---|---|---|")
    for name, s in result["towers_alone"].items():
        print(f"| {name} | {s['p50']:.2f} | {s['p90']:.2f} | {s['cpu_ms']:.2f} |")
    print("\n| ms after the request started | mean | p50 | p90 |")
    print("|---|---|---|---|")
    for name, s in result["timeline_ms"].items():
        print(f"| {name} | {s['mean']:.2f} | {s['p50']:.2f} | {s['p90']:.2f} |")
    print(f"\nprocess CPU per request: {result['cpu_ms_per_request']:.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="benchmarks/results/serving_export",
                        help="the serving benchmark's export cache (built there when missing)")
    parser.add_argument("--out", default="benchmarks/results/serving_path.json")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error(f"--requests {args.requests}: at least 1")

    from common.logs import setup_logging

    setup_logging()
    import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)
    from benchmarks.serving import served_export, source_state
    from serving.model_server import ModelServer
    from serving.retrieval_config import RetrievalConfig

    export, base, users = served_export(pathlib.Path(args.cache), args.items, args.seed)
    requests = _requests(users, args.budget)
    server = ModelServer(str(base)).start()
    retriever = None
    try:
        server.wait_until_available(timeout=300)
        retriever = _timed_retriever(RetrievalConfig(export_dir=str(base), model_server=server.address),
                                     server.local_stub())
        retriever.refresh()
        for request in requests[:WARMUP_REQUESTS]:
            retriever.retrieve(request)
        measured = [requests[i % len(requests)] for i in range(args.requests)]
        alone = towers_alone(retriever, measured)
        marks, cpu = timeline(retriever, measured)
    finally:
        if retriever is not None:
            retriever.close()
        server.stop()
    command = " ".join(["python -m benchmarks.serving_path", *(sys.argv[1:] if argv is None else argv)])
    result = {"command": command, "items": args.items,
              "budget": args.budget, "requests": args.requests, "export_reused": export["reused"],
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "source": source_state(),
              "towers_alone": alone, "timeline_ms": marks, "cpu_ms_per_request": cpu}
    print_report(result)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
