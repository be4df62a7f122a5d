"""`mer demo` / `make demo`: the whole flow on the built-in synthetic world or MovieLens.

generate (synthetic only) + prepare (Beam) -> train DCM (implicit) and CR (explicit) ->
evaluate (SPEC §6) -> export (TF Serving SavedModels) -> item embeddings
(Beam RunInference) + ScaNN indexes -> embedded model server + retrieval
service (gRPC) -> real requests for a few eval users (merged candidates,
printed) and served HR@K over eval records -> clean shutdown.

Everything lands in one run directory; the same seed gives the same numbers.
`--config movielens-small --raw_dir DIR` (or `ml-100k`) runs the same flow
on GroupLens files a user downloaded (`mer.demo_source`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time

log = logging.getLogger("mer.demo")


class Stages:
    """One progress line per stage, with elapsed time.

    While a stage runs, a bar shows its elapsed time on a terminal (a line
    every 30 s elsewhere); the stage's own bars (Beam rows, epochs, items
    embedded, indexes built) draw inside it (`common/progress.py`).
    """

    def __init__(self):
        self.started = time.time()
        self.times: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        from common.progress import Progress

        with Progress(f"[{name}]", logger=log, tick=True) as bar:
            out = fn(*args, **kwargs)
            self.times[name] = round(bar.elapsed, 1)
            bar.close(f"[{name}] done in {self.times[name]:.1f} s (total {time.time() - self.started:.0f} s)")
        return out


def eval_requests(data_dir: str, limit: int) -> list[dict]:
    """Eval records as service requests: history, negatives, followed topics, target."""
    from trainer import features
    from trainer.data import build_dataset

    out = []
    for batch in build_dataset(f"{data_dir}/{features.EVAL_IMPLICIT}-*{features.TFRECORD_SUFFIX}", 512, 50,
                               shuffle=False, drop_remainder=False):
        cols = {k: v.numpy() for k, v in batch.items()}
        for i in range(len(cols[features.TARGET_ITEM_ID])):
            history = [x.decode() for x in cols[features.HISTORY_ITEM_IDS][i] if x]
            out.append({"history": history,
                        "negative": [bool(n) for n in cols[features.HISTORY_NEGATIVE][i][:len(history)]],
                        "topics": [t.decode() for t in cols[features.FOLLOWED_TOPICS][i] if t],
                        "target": cols[features.TARGET_ITEM_ID][i].decode(),
                        "user": cols[features.USER_ID][i].decode()})
        if len(out) >= limit:
            break
    return out[:limit]


SHOWN_POOL = 4096  # eval records searched for the users the demo prints


def shown_requests(pool: list[dict], n: int = 3) -> list[dict]:
    """The first `n` records of distinct users who follow topics and have >= 5 engagements."""
    shown, users = [], set()
    for r in pool:
        if r["topics"] and len(r["history"]) >= 5 and r["user"] not in users:
            shown.append(r)
            users.add(r["user"])
    return shown[:n]


def served_hit_rates(client, requests: list[dict], ks=(20, 50, 100)) -> dict:
    """HR@K of the served list, through the retrieval service, implicit only
    (no topics sent) and implicit + explicit (followed topics sent)."""
    import numpy as np

    report = {}
    requests = [r for r in requests if r["history"]]  # both rows over the same records
    for name, with_topics in (("implicit", False), ("implicit+explicit", True)):
        hits = {k: [] for k in ks}
        for r in requests:
            response = client.retrieve(r["history"], r["negative"], r["topics"] if with_topics else [],
                                       budget=max(ks), seed=1)
            ids = [c.item_id for c in response.candidates]
            rank = ids.index(r["target"]) + 1 if r["target"] in ids else max(ks) + 1
            for k in ks:
                hits[k].append(rank <= k)
        report[name] = {f"hr@{k}": float(np.mean(v)) for k, v in hits.items()} | {"records": len(hits[ks[0]])}
    return report


def show_user(client, request: dict, topic_of: dict, top: int = 10) -> dict:
    """Prints one user's merged candidates (the head); returns the whole served list for demo.json."""
    from collections import Counter

    response = client.retrieve(request["history"], request["negative"], request["topics"], budget=100, seed=1)
    interests = Counter(t for i in request["history"] for t in topic_of.get(i, []))
    print(f"\nuser {request['user']}: {len(request['history'])} engagements, top history topics "
          f"{', '.join(f'{t}({n})' for t, n in interests.most_common(4))}; follows {', '.join(request['topics']) or '-'}")
    from serving.main import format_response

    served = {"user": request["user"], "history": request["history"], "topics": request["topics"],
              "candidates": [c.item_id for c in response.candidates]}
    del response.candidates[top:]  # show the head of the merged list
    print(format_response(response))
    return served


def run(run_dir: str, epochs: int, steps: int, source=None, overrides: list[str] | None = None,
        eval_records: int = 0) -> dict:
    """Prepare, train, evaluate, export, embed and index into `run_dir`.

    Args:
      source: a `mer.demo_source.DemoSource`; None = the synthetic-small world.
      overrides: `--set` overrides for every stage's config (model.kind is the demo's: dcm, then cr).
      eval_records: eval records the SPEC §6 evaluation scores (0 = all).
    """
    from beam.run import IN_MEMORY, run_prepare
    from mer.demo_source import resolve_source
    from trainer import runtime
    from trainer.task import train

    source = source or resolve_source("synthetic-small", None, run_dir)

    stages = Stages()
    shutil.rmtree(run_dir, ignore_errors=True)
    data, dcm, cr, base = (f"{run_dir}/{n}" for n in ("data", "dcm", "cr", "export"))
    beam_args = list(IN_MEMORY)
    overrides = list(overrides or [])
    stages.run("prepare (Beam)", run_prepare, source.load(overrides), data, beam_args,  # logs the example counts
               raw_dir=source.raw_dir)
    for kind, model_dir in (("dcm", dcm), ("cr", cr)):
        cfg = source.load([f"train.epochs={epochs}"] + ([f"train.steps_per_epoch={steps}"] if steps else [])
                          + overrides + [f"model.kind={kind}"])
        summary = stages.run(f"train {kind}", train, cfg, data, runtime.resolve(model_dir=model_dir, env={}),
                             verbose=2)  # a bar per epoch; its final line has the validation HR
        log.info("%s: %d steps, best %s %.4f at epoch %s", kind, summary["optimizer_steps"], summary["monitor"],
                 summary["best_validation"] or 0.0, summary["best_epoch"])
    from trainer import evaluate

    stages.run("evaluate (SPEC §6)", evaluate.main, ["--model_dir", dcm, "--explicit_model_dir", cr, "--ks",
                                                     "20,50,100", "--served", "--max_records", str(eval_records)])
    from beam.embed_items import run_embed_items
    from export.build_index import run_build_index
    from export.exporter import export_models

    stages.run("export", export_models, [dcm, cr], base)
    for retriever in ("implicit", "explicit"):
        stages.run(f"embed items {retriever} (Beam RunInference)", run_embed_items, base, retriever,
                   beam_args=beam_args)
        stages.run(f"index {retriever} (ScaNN)", run_build_index, base, retriever, data_dir=data)
    return {"stages": stages, "data": data, "base": base}


def serve_and_query(base: str, data: str, records: int, stages: Stages) -> tuple[dict, list[dict]]:
    """Starts the model server and the retrieval service; returns (served HR@K, the shown users' lists)."""
    from serving.client import RetrievalClient
    from serving.model_server import ModelServer
    from serving.retrieval_config import RetrievalConfig
    from serving.retrieval_server import RetrievalServer

    models = stages.run("start model server", lambda: ModelServer(base).start())
    try:
        models.wait_until_available(timeout=300)
        # Wired as `mer serve` wires them: the service calls the model server in process.
        cfg = RetrievalConfig(export_dir=base, model_server=models.address)
        service = stages.run("start retrieval service",
                             lambda: RetrievalServer(cfg, predict_stub=models.local_stub()).start())
        try:
            service.wait_until_serving(timeout=120)
            # Shown users come from a larger pool: on MovieLens most early eval records belong to users
            # who follow nothing (they start in the eval period), and the demo shows both retrievers.
            pool = eval_requests(data, max(records, SHOWN_POOL))
            requests = pool[:records]
            topic_of = {}
            for loaded in service.retriever.loaded.values():
                topic_of.update(zip(loaded.index.item_ids, loaded.index.topics))
            with RetrievalClient(service.address, timeout=30) as client:
                shown = shown_requests(pool)
                users = [show_user(client, request, topic_of) for request in shown]
                served = stages.run("served HR@K through the service", served_hit_rates, client, requests)
        finally:
            service.stop()
    finally:
        models.stop()
    return served, users


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mer demo", description=__doc__.splitlines()[0])
    p.add_argument("--run_dir", default="runs/demo", help="every artifact goes here (cleared first)")
    p.add_argument("--config", default="synthetic-small",
                   help="preset name (synthetic-small, movielens-small, ml-100k) or YAML/JSON path")
    p.add_argument("--raw_dir", default=None,
                   help="MovieLens presets: the downloaded GroupLens directory (replaces data.source.path); "
                        "synthetic: reuse the files of `mer synthesize --output_dir DIR` instead of generating")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every stage, e.g. train.validation_max_records=200 (repeatable)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="training steps per epoch (0 = one pass over the data)")
    p.add_argument("--records", type=int, default=500, help="eval records sent through the service for served HR")
    p.add_argument("--eval_records", type=int, default=0, help="eval records the SPEC §6 evaluation scores (0 = all)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.verbose)
    from mer.demo_source import resolve_source

    try:
        source = resolve_source(args.config, args.raw_dir, args.run_dir)
        source.load(args.set)  # a bad --set is one line now, not a traceback after the run dir is cleared
    except (ValueError, FileNotFoundError) as err:
        print(f"mer demo: error: {err}", file=sys.stderr)
        return 2
    log.info("data: %s (%s%s)", args.config, source.format, f", {source.path}" if source.path else ", generated")
    out = run(args.run_dir, args.epochs, args.steps, source, args.set, args.eval_records)
    served, users = serve_and_query(out["base"], out["data"], args.records, out["stages"])
    print("\nserved HR@K through `mer serve` (eval records, budget 100, de-duplicated merged list):")
    print(f"{'':<20}" + "".join(f"{k:>9}" for k in ("hr@20", "hr@50", "hr@100", "records")))
    for name, row in served.items():
        print(f"{name:<20}" + "".join(f"{row[k]:>9.4f}" for k in ("hr@20", "hr@50", "hr@100")) + f"{row['records']:>9}")
    stages = out["stages"]
    summary = {"config": args.config, "source": {"format": source.format, "path": source.path},
               "served_hr": served, "users": users, "stage_seconds": stages.times, "seconds": round(time.time() - stages.started, 1)}
    with open(f"{args.run_dir}/demo.json", "w") as handle:
        json.dump(summary, handle, indent=2)
    log.info("demo finished in %.0f s; artifacts in %s", summary["seconds"], args.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
