"""`mer <stage>`: one command per pipeline stage.

Flags are parsed only here; every stage is a pure factory underneath.
Arguments after `--` (or unknown `--flags`) go to Apache Beam as pipeline
options.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

STAGES = ("synthesize", "prepare", "train", "evaluate", "export", "embed-items", "build-index", "serve", "query",
          "demo")
# Stages with their own argument parser (also runnable as `python -m <module>`).
DELEGATED = {"train": "trainer.task", "evaluate": "trainer.evaluate", "export": "export.exporter",
             "embed-items": "beam.embed_items", "build-index": "export.build_index",
             "serve": "serving.main:serve_main", "query": "serving.main:query_main", "demo": "mer.demo"}
NOT_YET: dict[str, str] = {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    synth = sub.add_parser("synthesize", help="Beam: write the synthetic world's raw files")
    prep = sub.add_parser("prepare", help="Beam: raw logs -> TFRecords, item table, vocabularies")
    for command in (synth, prep):
        command.add_argument("--config", default="synthetic-small", help="preset name or YAML path")
        command.add_argument("--output_dir", required=True, help="artifact directory (local or gs://...)")
        command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="config override, e.g. data.history_length=20 (repeatable)")
    prep.add_argument("--raw_dir", default=None,
                      help="synthetic source: use already generated raw files instead of generating")
    for stage, module in DELEGATED.items():
        sub.add_parser(stage, add_help=False, help=f"see `mer {stage} --help`")
    for stage in NOT_YET:
        sub.add_parser(stage, help=f"not available yet: {NOT_YET[stage]}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        module, _, function = DELEGATED[argv[0]].partition(":")
        return getattr(importlib.import_module(module), function or "main")(argv[1:])
    beam_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, beam_args = argv[:cut], argv[cut + 1 :]
    args, unknown = _parser().parse_known_args(argv)
    if args.stage in NOT_YET:
        print(f"mer {args.stage}: this stage does not exist yet; it arrives with {NOT_YET[args.stage]}.",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    from beam.run import generate_synthetic, run_prepare
    from trainer.config import load_config

    cfg = load_config(args.config, args.set)
    if args.stage == "synthesize":
        seconds = generate_synthetic(cfg, args.output_dir, beam_args + unknown)
        print(json.dumps({"raw_dir": args.output_dir, "seconds": round(seconds, 1)}))
        return 0
    manifest = run_prepare(cfg, args.output_dir, beam_args + unknown, raw_dir=args.raw_dir)
    summary = {k: manifest["counts"].get(f"examples/{k}", 0) for k in
               ("train/implicit", "train/explicit", "eval/implicit", "eval/explicit")}
    print(json.dumps({"output_dir": args.output_dir, "cutoff": manifest["cutoff"],
                      "examples": summary, "dead_letter": manifest["dead_letter"],
                      "balance": manifest["balance"]}, indent=2))
    return 0
