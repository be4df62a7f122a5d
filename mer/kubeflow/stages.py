"""The pipeline's stages as functions of KFP lightweight Python components.

Why lightweight components and not container components: KFP's local
`SubprocessRunner` (how the pipeline is tested) runs only lightweight
ones. Each function is still a thin shell around the real CLI — it runs
`python -m mer <stage> ...` in the training image and returns the directory
the stage wrote — so what a pod runs is what a laptop runs.

KFP ships each function's source on its own into the container, so every
function is self-contained: imports inside, no helpers, no module globals.
Every stage writes under `run_dir` (a `gs://` URI or a volume every pod
mounts) and passes the directory it wrote on as a string: `mer embed-items`
and `mer build-index` add to the export directory in place, which KFP
artifacts (read-only inputs, copied per pod) cannot express.

No `from __future__ import annotations`: KFP reads the parameter types
(`Output[Metrics]`) from the evaluated annotations.
"""

from kfp.dsl import Metrics, Output


def prepare(run_dir: str, config: str, overrides: list, beam_options: list) -> str:
    """`mer prepare`: raw logs -> TFRecords, item table, vocabularies (Beam).

    Returns:
      The prepared data directory, `<run_dir>/data`.
    """
    import subprocess
    import sys

    data_dir = run_dir.rstrip("/") + "/data"
    sets = [a for o in overrides for a in ("--set", o)]
    beam = ["--", *beam_options] if beam_options else []
    subprocess.run([sys.executable, "-m", "mer", "prepare", "--config", config, "--output_dir", data_dir,
                    *sets, *beam], check=True)
    return data_dir


def train(data_dir: str, run_dir: str, name: str, kind: str, config: str, overrides: list, seed: int) -> str:
    """`mer train` (`python -m trainer.task`): one model on the prepared data.

    Args:
      name: the model directory's name under `run_dir`.
      kind: `model.kind`; applied after `overrides`, so it wins.
      seed: `train.seed` (weights, shuffling, sampling).

    Returns:
      The model directory, `<run_dir>/<name>`.
    """
    import subprocess
    import sys

    model_dir = run_dir.rstrip("/") + "/" + name
    sets = [a for o in [*overrides, f"model.kind={kind}", f"train.seed={seed}"] for a in ("--set", o)]
    subprocess.run([sys.executable, "-m", "mer", "train", "--config", config, "--data_dir", data_dir,
                    "--model_dir", model_dir, *sets], check=True)
    return model_dir


def evaluate(implicit_model_dir: str, explicit_model_dir: str, max_records: int, seed: int,
             metrics: Output[Metrics]) -> str:
    """`mer evaluate`: SPEC §6 HR@K, served HR@K and the implicit/explicit overlap.

    The headline numbers are also logged as KFP metrics (shown in the run's
    UI); the full report stays in the model directory.

    Args:
      max_records: eval records to score (0 = all).
      seed: the bootstrap seed of the confidence intervals.

    Returns:
      The report's path, `<implicit_model_dir>/evaluation.json`.
    """
    import json
    import subprocess
    import sys

    report_path = implicit_model_dir.rstrip("/") + "/evaluation.json"
    subprocess.run([sys.executable, "-m", "mer", "evaluate", "--model_dir", implicit_model_dir,
                    "--explicit_model_dir", explicit_model_dir, "--served", "--max_records", str(max_records),
                    "--bootstrap_seed", str(seed), "--output", report_path], check=True)
    import tensorflow as tf  # gs:// as well as local paths

    with tf.io.gfile.GFile(report_path) as f:
        report = json.load(f)
    for block in ("hr", "served_hr"):
        for k, value in report.get(block, {}).items():
            metrics.log_metric(f"{block}@{k}", value["mean"])
    if "overlap" in report:
        metrics.log_metric(f"overlap@{report['overlap_k']}", report["overlap"])
    metrics.log_metric("records", report["records"])
    return report_path


def export(implicit_model_dir: str, explicit_model_dir: str, run_dir: str, serving_base_path: str) -> str:
    """`mer export`: both models -> TF Serving SavedModels (four towers).

    Args:
      serving_base_path: the base path models.config names (`/models` for
        the tensorflow/serving container); empty = the export's own path.

    Returns:
      The export directory, `<run_dir>/export`.
    """
    import subprocess
    import sys

    export_dir = run_dir.rstrip("/") + "/export"
    base = ["--serving_base_path", serving_base_path] if serving_base_path else []
    subprocess.run([sys.executable, "-m", "mer", "export", "--model_dir", implicit_model_dir,
                    "--explicit_model_dir", explicit_model_dir, "--export_dir", export_dir, *base], check=True)
    return export_dir


def embed_items(export_dir: str, beam_options: list) -> str:
    """`mer embed-items`: every corpus item through both item towers (Beam RunInference).

    Returns:
      `export_dir`, now with `embeddings/<retriever>/<version>/`.
    """
    import subprocess
    import sys

    beam = ["--", *beam_options] if beam_options else []
    subprocess.run([sys.executable, "-m", "mer", "embed-items", "--export_dir", export_dir, "--retriever", "all",
                    *beam], check=True)
    return export_dir


def build_index(export_dir: str, data_dir: str) -> str:
    """`mer build-index`: a ScaNN index per retriever, with its recall against exact search.

    Returns:
      `export_dir`, now with `index/<retriever>/<version>/`: what `mer serve` loads.
    """
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "mer", "build-index", "--export_dir", export_dir, "--retriever", "all",
                    "--data_dir", data_dir], check=True)
    return export_dir
