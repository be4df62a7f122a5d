"""Thin runners: pipeline options + the synthetic and prepare pipelines.

Any standard Beam option passes through (`--runner=DataflowRunner
--project=... --region=... --temp_location=gs://... --setup_file=./setup.py`,
or `--runner=FlinkRunner` / `SparkRunner`). Without `--runner` the local
default is Beam's FnApiRunner (the engine of DirectRunner; `LocalRunner`) in
multi-process mode with one worker per core: `--runner=DirectRunner` in Beam 2.77 first
tries the Prism runner, a Go binary it downloads from GitHub, and runs the
pipeline there whenever the download works, so where a machine could reach
GitHub decided which engine (and which memory and process model) ran.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineState

from beam import prepare, synthetic
from beam.readers import METRICS_NAMESPACE
from beam.shard_writer import write_text
from common.progress import Progress
from trainer import features
from trainer.config import MerConfig, dump_config

log = logging.getLogger(__name__)


class LocalRunner(FnApiRunner):
    """Beam's FnApiRunner (what DirectRunner runs on when it does not switch
    to Prism), with the pipeline options handed to its worker processes.

    A bare `--runner=FnApiRunner` starts its multi-process workers with no
    options at all: no `--default_sdk_harness_log_level`, and no file-system
    options (`--hdfs_host`, `--s3_endpoint_url`, ...), so `hdfs://` or a
    custom S3 endpoint would resolve in the launcher and fail in the workers.
    DirectRunner passes them as provision info; so does this.
    """

    def run_pipeline(self, pipeline, options):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        self._provision_info = ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return super().run_pipeline(pipeline, options)


LOCAL_RUNNER = f"{__name__}.{LocalRunner.__name__}"  # the default `--runner` (a dotted path Beam imports)
# Beam options of a local run in this process (tests, demos, benchmarks): the
# default runner, one in-process worker.
IN_MEMORY = (f"--runner={LOCAL_RUNNER}", "--direct_running_mode=in_memory")

# What each stage writes at the top of its output directory: names (files or
# directories; `<name>.tmp-*` are interrupted writes) and, ending in `-`, prefixes.
STAGE_OUTPUTS = {
    "synthesize": ("events-", "follows-", "items-", "truth-", "world.json"),
    "prepare": tuple(sorted({name.split("/")[0] for name in (
        *features.EXAMPLE_OUTPUTS, features.ITEM_TABLE, features.ITEM_COUNTS, features.VOCAB_ITEMS,
        features.CORPUS, features.DEAD_LETTER_DIR, features.MANIFEST, features.RESOLVED_CONFIG, "raw")})),
}


def previous_outputs(output_dir: str, stage: str, keep: str | None = None) -> list[str]:
    """Files an earlier run of `stage` left in `output_dir` (any Beam filesystem).

    Why: a second run into the same directory with another shard count leaves
    the first run's shards next to its own, and readers would take both.
    Files of anything else (another run nested below, the user's raw input)
    are not the stage's and are never listed.

    Args:
      keep: a directory inside `output_dir` that is input, not output
        (`mer prepare --raw_dir`); its files are never listed.
    """
    def local(path: str) -> str:
        return path if "://" in path else os.path.abspath(path)

    def owned(head: str) -> bool:
        return any(head == name or head.startswith(name if name.endswith("-") else f"{name}.tmp-")
                   for name in STAGE_OUTPUTS[stage])

    base = local(output_dir).rstrip("/") + "/"
    keep = local(keep).rstrip("/") + "/" if keep else None
    found = FileSystems.match([base + "**"])[0].metadata_list
    return sorted(m.path for m in found
                  if owned(m.path[len(base):].split("/")[0]) and not (keep and m.path.startswith(keep)))


class PrepareFailed(RuntimeError):
    """The run finished but its outputs cannot be used (e.g. no training example)."""


def check_writable(output_dir: str) -> None:
    """Writes and deletes a probe file so an unwritable directory fails before the run.

    Why: otherwise the first write fails deep inside a Beam worker, after
    reading every input, with a long traceback.

    Raises:
      PermissionError: `output directory <dir> is not writable: <reason>`.
    """
    probe = FileSystems.join(output_dir, ".mer-write-probe")
    try:
        if "://" not in output_dir:
            os.makedirs(output_dir, exist_ok=True)
        with FileSystems.create(probe) as handle:
            handle.write(b"")
        FileSystems.delete([probe])
    except Exception as err:  # OSError locally; BeamIOError / auth errors on object stores
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise PermissionError(f"output directory {output_dir} is not writable: {reason}") from None


def check_examples(manifest: dict, output_dir: str) -> None:
    """A run that produced no training example fails instead of surfacing at `mer train`.

    Raises:
      PrepareFailed: one line: rows in and kept, the cutoff, the top dead-letter reasons.
    """
    counts = manifest["counts"]
    if counts.get("examples/train/implicit", 0) > 0:
        return
    events = manifest["balance"]["events"]
    dead = sorted(manifest["dead_letter"].items(), key=lambda kv: (-kv[1], kv[0]))
    reasons = ", ".join(f"{k} {v}" for k, v in dead[:3]) or "none"
    examples = sum(v for k, v in counts.items() if k.startswith("examples/"))
    raise PrepareFailed(
        f"no training examples ({examples} examples in all): {events['in']} event rows in, {events['kept']} kept, "
        f"{_split_text(manifest)}; dead letters: {reasons} (see {FileSystems.join(output_dir, 'dead_letter')})")


def _split_text(manifest: dict) -> str:
    """`cutoff T`, or what the per-user split held out (it has no T)."""
    split = manifest.get("config", {}).get("data", {}).get("split", {})
    if split.get("mode") == "per_user":
        return f"per-user split (each user's last {split.get('per_user_eval')} event(s) are eval)"
    return f"cutoff {manifest['cutoff']}"


def pipeline_options(beam_args: list[str] | None) -> PipelineOptions:
    """Standard Beam options; the local multi-process FnApiRunner by default
    (workers log warnings and up; see the module docstring for why not
    `DirectRunner`)."""
    args = list(beam_args or [])
    if not any(a.startswith("--runner") for a in args):
        args += [f"--runner={LOCAL_RUNNER}", "--direct_running_mode=multi_processing"]
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
        # The local workers' INFO lines would bury prepare's one-line errors.
        if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
            args.append("--default_sdk_harness_log_level=WARNING")
    return PipelineOptions(args)


POLL_S = 15  # a remote runner's live counters are read this often


def run_pipeline(p: beam.Pipeline, bar: Progress, namespace: str | None = None,
                 key_of: Callable[[str], str | None] = lambda name: None):
    """`p.run()` to the end, feeding `bar` with the runner's live counters where it has them.

    Why: DirectRunner's `run()` returns when the pipeline is done (its
    DoFns feed the bar through `common.progress.report` when they run in
    this process); Dataflow's returns at once, and its counters (namespace
    `namespace`, counter `name` counted under `key_of(name)`, None = not
    shown) can be read while it runs.

    Returns:
      The finished `PipelineResult`.
    """
    result = p.run()
    while namespace and not PipelineState.is_terminal(result.state):  # `state` asks the service
        time.sleep(POLL_S)
        try:
            counters = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
        except Exception:  # noqa: BLE001 -- live counters are a nicety; a runner without them just waits
            break
        counts = {}
        for counter in counters:
            key = key_of(counter.key.metric.name)
            if key is not None:
                counts[key] = counts.get(key, 0) + int(counter.attempted or 0)
        if counts:
            bar.set(counts=counts)
    result.wait_until_finish()
    return result


def _rows_kind(name: str) -> str | None:
    return name[: -len("_rows_in")] if name.endswith("_rows_in") else None


def generate_synthetic(cfg: MerConfig, raw_dir: str, beam_args: list[str] | None = None) -> float:
    """Writes the synthetic world's raw files; returns seconds taken."""
    check_writable(raw_dir)
    start = time.perf_counter()
    with Progress("synthesize (Beam)", logger=log, tick=True) as bar:
        p = beam.Pipeline(options=pipeline_options(beam_args))
        synthetic.build_pipeline(p, cfg.data.synthetic, raw_dir)
        run_pipeline(p, bar)
        synthetic.write_world_summary(cfg.data.synthetic, raw_dir)
        bar.note = f"raw files in {raw_dir}"
    return time.perf_counter() - start


def run_prepare(cfg: MerConfig, output_dir: str, beam_args: list[str] | None = None,
                raw_dir: str | None = None) -> dict:
    """Runs the prepare pipeline (generating the synthetic world first if needed).

    Returns:
      The manifest dict.

    Raises:
      RuntimeError: rows in != kept + dead letter for some input (a bug).
      PrepareFailed: no training example (nothing for `mer train`).
      PermissionError: `output_dir` is not writable.
      FileNotFoundError, ValueError: a missing input, a header without a
        required column (found before the pipeline runs).
    """
    check_writable(output_dir)
    if cfg.data.source.format == "synthetic" and raw_dir is None:
        raw_dir = FileSystems.join(output_dir, "raw")
        generate_synthetic(cfg, raw_dir, beam_args)
    # Rows read per input kind while it runs (in-process DirectRunner, or a
    # remote runner's live counters); the final line has the manifest's counts.
    with Progress("prepare (Beam)", unit="rows", logger=log, tick=True, channel=METRICS_NAMESPACE) as bar:
        p = beam.Pipeline(options=pipeline_options(beam_args))
        prepare.build_pipeline(p, cfg, output_dir, raw_dir)
        run_pipeline(p, bar, METRICS_NAMESPACE, _rows_kind)
        manifest = read_manifest(output_dir)
        broken = {k: v for k, v in manifest["balance"].items() if not v["ok"]}
        if broken:
            raise RuntimeError(f"prepare: rows in != kept + dead letter: {broken}")
        check_examples(manifest, output_dir)
        # Last: a config.yaml only ever sits next to the outputs it produced.
        write_text(FileSystems.join(output_dir, features.RESOLVED_CONFIG), dump_config(cfg))
        counts = manifest["counts"]
        bar.set(counts={kind: counts[f"{kind}_rows_in"] for kind in ("events", "items", "follows")
                        if f"{kind}_rows_in" in counts})
        bar.note = (f"{counts.get('examples/train/implicit', 0):,} training / {counts.get('examples/eval/implicit', 0):,} "
                    f"eval examples in {output_dir}")
    return manifest


def read_manifest(output_dir: str) -> dict:
    with FileSystems.open(FileSystems.join(output_dir, features.MANIFEST)) as handle:
        return json.loads(handle.read().decode("utf-8"))
