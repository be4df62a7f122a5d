"""`mer <stage>`: one command per pipeline stage.

Flags are parsed only here; every stage is a pure factory underneath.
Arguments after `--` go to Apache Beam as pipeline options; any other flag
the stage does not know is an error, so a typo (`--confg`) cannot silently
run the default preset.
"""

from __future__ import annotations

import argparse
import json
import sys

STAGES = ("synthesize", "prepare", "train", "evaluate", "export", "embed-items", "build-index", "serve", "query",
          "demo", "report")
# Stages with their own argument parser (also runnable as `python -m <module>`).
DELEGATED = {"train": "trainer.task", "evaluate": "trainer.evaluate", "export": "export.exporter",
             "embed-items": "beam.embed_items", "build-index": "export.build_index",
             "serve": "serving.main:serve_main", "query": "serving.main:query_main", "demo": "mer.demo",
             "report": "mer.report"}
NOT_YET: dict[str, str] = {}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    synth = sub.add_parser("synthesize", help="Beam: write the synthetic world's raw files")
    prep = sub.add_parser("prepare", help="Beam: raw logs -> TFRecords, item table, vocabularies")
    for command in (synth, prep):
        command.add_argument("--config", default="synthetic-small", help="preset name or YAML/JSON path")
        command.add_argument("--output_dir", required=True, help="artifact directory (local or gs://...)")
        command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="config override, e.g. data.history_length=20 (repeatable)")
        command.add_argument("--overwrite", action="store_true",
                             help="replace an earlier run's outputs in --output_dir (refused otherwise)")
        command.add_argument("-v", "--verbose", action="store_true",
                             help="show Beam's own logs and, on an error, the traceback (by default: one line)")
        command.set_defaults(command=command)
        command.epilog = "Arguments after `--` are Beam pipeline options (e.g. -- --runner=DataflowRunner)."
    prep.add_argument("--raw_dir", default=None,
                      help="synthetic source: use already generated raw files instead of generating")
    for stage, module in DELEGATED.items():
        sub.add_parser(stage, add_help=False, help=f"see `mer {stage} --help`")
    for stage in NOT_YET:
        sub.add_parser(stage, help=f"not available yet: {NOT_YET[stage]}")
    return parser


def _claim_output_dir(args: argparse.Namespace) -> None:
    """Refuses an output directory holding an earlier run; `--overwrite` deletes that run first.

    Raises:
      FileExistsError: earlier outputs and no `--overwrite`.
    """
    from apache_beam.io.filesystems import FileSystems

    from beam.run import previous_outputs

    existing = previous_outputs(args.output_dir, args.stage, keep=getattr(args, "raw_dir", None))
    if existing and not args.overwrite:
        raise FileExistsError(f"output directory {args.output_dir} already holds a `mer {args.stage}` run "
                              f"({len(existing)} files, e.g. {existing[0]}); pass --overwrite to replace it "
                              "or choose another directory")
    if existing:
        FileSystems.delete(existing)


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
    if unknown:
        args.command.error(f"unrecognized arguments: {' '.join(unknown)} (Beam pipeline options go after `--`)")
    from common.logs import setup_logging

    setup_logging(args.verbose)  # progress on stderr; Beam's own INFO lines only with -v
    from beam.run import generate_synthetic, run_prepare
    from trainer.config import load_config

    try:
        cfg = load_config(args.config, args.set)
        _claim_output_dir(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"mer {args.stage}: error: {err}", file=sys.stderr)
        return 2
    try:
        if args.stage == "synthesize":
            seconds = generate_synthetic(cfg, args.output_dir, beam_args)
            print(json.dumps({"raw_dir": args.output_dir, "seconds": round(seconds, 1)}))
            return 0
        manifest = run_prepare(cfg, args.output_dir, beam_args, raw_dir=args.raw_dir)
    except Exception as err:  # noqa: BLE001 -- one line for the user; -v shows the traceback
        if args.verbose:
            import traceback

            traceback.print_exc()
        lines = str(err).strip().splitlines() or [type(err).__name__]
        print(f"mer {args.stage}: error: {lines[0]}", file=sys.stderr)
        # 2: bad input or output found before the run; 1: the run itself failed.
        return 2 if isinstance(err, (ValueError, OSError)) else 1
    implausible = manifest["counts"].get("events_implausible_timestamps", 0)
    if implausible:
        print(f"mer prepare: warning: {implausible} event rows have timestamps outside 1970-01-01..2100-01-01 "
              "(negative, or milliseconds?); kept, as only their order matters "
              "(manifest counts.events_implausible_timestamps)", file=sys.stderr)
    summary = {k: manifest["counts"].get(f"examples/{k}", 0) for k in
               ("train/implicit", "train/explicit", "eval/implicit", "eval/explicit")}
    print(json.dumps({"output_dir": args.output_dir, "cutoff": manifest["cutoff"],
                      "examples": summary, "dead_letter": manifest["dead_letter"],
                      "balance": manifest["balance"]}, indent=2))
    return 0
