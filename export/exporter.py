"""`mer export`: trained models -> TF Serving model directories.

For each retriever (implicit: DCM or another implicit kind, or single;
explicit: CR) the user tower and the item tower become SavedModels under
`<base>/<model>/<version>/` (layout in `common/contract.py`), each written
to a temporary directory, validated (core ops only, signature present),
given its warmup requests, and renamed into place: a server polling `<base>`
never sees a half-written version. Then `models.config`,
`batching_parameters.txt` and `monitoring.config` are (re)written for every
model present under `<base>`.

Reads only the model directories (their `artifacts/`), never the prepared
data directory.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

import numpy as np

from common import contract

log = logging.getLogger(__name__)

CATALOG = "assets.extra/catalog.tsv"  # item model versions: row \t item_id \t in_corpus \t topics ('|')
ALL_MODELS = tuple(contract.USER_MODEL.values()) + tuple(contract.ITEM_MODEL.values())


def next_version(base: str) -> int:
    """1 + the largest version of any model under `base` (all towers of one
    export share a version number)."""
    return 1 + max([0] + [v for name in ALL_MODELS for v in contract.model_versions(base, name)])


def retriever_of(kind: str) -> str:
    return contract.EXPLICIT if kind == "cr" else contract.IMPLICIT


def save_version(module, base: str, name: str, version: int, warmup: list, extra: dict[str, str] | None = None) -> dict:
    """Saves `module` as `<base>/<name>/<version>/`, atomically.

    Raises:
      FileExistsError: that version exists (versions are immutable: a
        server may have loaded it).
      ValueError: the graph has a non-core op (nothing is left in place).
    """
    import tensorflow as tf

    from export.serving_files import write_warmup
    from export.validation import validate_ops

    final = contract.join(base, name, str(version))
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"{final} exists; versions are immutable, export with another --version")
    tmp = contract.join(base, name, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    started = time.time()
    try:
        tf.saved_model.save(module, tmp, signatures={contract.SIGNATURE: module.serve.get_concrete_function()})
        num_ops = validate_ops(tmp)
        write_warmup(tmp, warmup)
        for rel, text in (extra or {}).items():
            with tf.io.gfile.GFile(contract.join(tmp, rel), "w") as handle:
                handle.write(text)
        tf.io.gfile.rename(tmp, final)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
    seconds = round(time.time() - started, 2)
    log.info("exported %s version %d (%d op types, %d warmup requests) in %.1f s", name, version, num_ops,
             len(warmup), seconds)
    return {"path": final, "op_types": num_ops, "warmup_requests": len(warmup), "seconds": seconds}


def user_request_inputs(samples: dict, explicit: bool, num_explicit: int) -> dict[str, np.ndarray]:
    """User-tower request inputs from parsed records (NumPy): the history;
    for the explicit tower the record's followed topics (up to
    `num_explicit`, else its logged source topic)."""
    inputs = {contract.HISTORY_ITEM_IDS: samples["history_item_ids"].astype(object),
              contract.HISTORY_NEGATIVE: samples["history_negative"].astype(np.int64)}
    if explicit:
        followed = samples["followed_topics"][:, :num_explicit]
        topics = np.full((len(followed), num_explicit), b"", dtype=object)
        topics[:, :followed.shape[1]] = followed
        # Records without follows condition on their logged source topic.
        none = ~(topics != b"").any(axis=1)
        topics[none, 0] = samples["condition_topic"][none]
        inputs[contract.TOPICS] = topics
    return inputs


def catalog_text(table) -> str:
    """`row \\t item_id \\t in_corpus \\t topics` per item of the model's
    table (row = the item's vocabulary index)."""
    lines = []
    for i, item in enumerate(table.ids, start=1):
        lines.append(f"{i}\t{item}\t{int(table.train_count[i] > 0)}\t{'|'.join(table.item_topics(i))}")
    return "\n".join(lines) + "\n"


def export_retriever(model_dir: str, base: str, version: int) -> dict:
    """Exports the user and item towers of one trained model."""
    from export.serving_files import warmup_requests
    from export.towers import ItemTower, UserTower
    from trainer.item_table import load_item_table
    from trainer.model_io import artifacts_dir, has_artifacts, load_trained, sample_records

    if not has_artifacts(model_dir):
        raise FileNotFoundError(f"{model_dir}: no artifacts/ (item table, vocabularies, samples); "
                                f"it was trained before models became self-contained: retrain it")
    cfg, model, summary = load_trained(model_dir, asset_vocabularies=True)
    retriever = retriever_of(cfg.model.kind)
    explicit = retriever == contract.EXPLICIT
    samples = {k: v.numpy() for k, v in sample_records(model_dir, cfg).items()}
    num = None if explicit else model.num_embeddings
    user = UserTower(model, cfg.data.history_length, num, explicit)
    user_name, item_name = contract.USER_MODEL[retriever], contract.ITEM_MODEL[retriever]
    user_warmup = warmup_requests(user_name, user_request_inputs(samples, explicit, cfg.model.num_explicit))
    item_warmup = warmup_requests(item_name, {contract.ITEM_IDS: samples["target_item_id"].astype(object)})
    table = load_item_table(artifacts_dir(model_dir), max_topics=64)
    source = {"model_dir": model_dir, "kind": cfg.model.kind, "config": cfg.name,
              "best_validation": summary.get("best_validation"), "monitor": summary.get("monitor")}
    return {
        "retriever": retriever, "source": source,
        user_name: save_version(user, base, user_name, version, user_warmup),
        item_name: save_version(ItemTower(model), base, item_name, version, item_warmup,
                                {CATALOG: catalog_text(table)}),
    }


def write_serving_files(base: str, serving_base_path: str | None = None, labels: dict | None = None) -> list[str]:
    """(Re)writes `models.config` for every model under `base`, and the
    batching and monitoring files. `serving_base_path`: where the server
    sees `base` (e.g. `/models` in the TF Serving container)."""
    from export.serving_files import batching_parameters, models_config, monitoring_config, write_text_proto

    seen = serving_base_path or (os.path.abspath(base) if "://" not in base else base)
    on_disk = {name: contract.model_versions(base, name) for name in ALL_MODELS}
    present = {name: contract.join(seen, name) for name in ALL_MODELS if on_disk[name]}
    write_text_proto(contract.join(base, contract.MODELS_CONFIG), models_config(present, labels, present=on_disk))
    write_text_proto(contract.join(base, contract.BATCHING_PARAMETERS), batching_parameters())
    write_text_proto(contract.join(base, contract.MONITORING_CONFIG), monitoring_config())
    return sorted(present)


def export_models(model_dirs: list[str], base: str, version: int | None = None,
                  serving_base_path: str | None = None, labels: dict | None = None) -> dict:
    """Exports every model in `model_dirs` (at most one per retriever) under
    `base` with one shared version; returns the export summary (also
    written to `<base>/export.json`)."""
    import tensorflow as tf

    from trainer.config import load_config
    from trainer.model_io import write_json

    started = time.time()
    tf.io.gfile.makedirs(base)
    version = int(version or next_version(base))
    kinds = [retriever_of(load_config(contract.join(d, "config.yaml")).model.kind) for d in model_dirs]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"one model per retriever expected, got {kinds} from {model_dirs}")
    results = [export_retriever(d, base, version) for d in model_dirs]
    models = write_serving_files(base, serving_base_path, {"stable": version} if labels is None else labels)
    summary = {"base": base, "version": version, "models": models, "exports": results,
               "seconds": round(time.time() - started, 1)}
    write_json(contract.join(base, "export.json"), summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="mer export", description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="a trained model (`mer train` output)")
    p.add_argument("--explicit_model_dir", default=None, help="a second model (the CR model) to export with it")
    p.add_argument("--export_dir", required=True, help="TF Serving base directory (local or gs://)")
    p.add_argument("--version", type=int, default=None, help="default: 1 + the largest version present")
    p.add_argument("--serving_base_path", default=None,
                   help="base path written into models.config (default: the export dir's absolute path; "
                        "`/models` for the tensorflow/serving container)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    from common.logs import setup_logging

    setup_logging(args.verbose)
    dirs = [args.model_dir] + ([args.explicit_model_dir] if args.explicit_model_dir else [])
    try:
        summary = export_models(dirs, args.export_dir, args.version, args.serving_base_path)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        log.error("mer export: %s", err)
        return 2
    print(json.dumps({"export_dir": summary["base"], "version": summary["version"], "models": summary["models"],
                      "seconds": summary["seconds"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
