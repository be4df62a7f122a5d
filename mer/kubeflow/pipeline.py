"""The mer flow as a Kubeflow Pipelines (v2) pipeline, and its compiler.

  python -m mer.kubeflow --image REGION-docker.pkg.dev/PROJECT/mer/mer-train:latest \
      --output mer-pipeline.yaml

prepare -> train (implicit, explicit) -> evaluate -> export -> embed items ->
build index, each stage one task running the real `mer` CLI in the training
image (`deploy/Dockerfile.train`, which carries the `serving` and
`kubeflow` extras: ScaNN for the index, KFP's executor for the tasks). The
image is fixed when the pipeline is compiled; the run's parameters are the
config preset, `--set` overrides, the seed and the run directory.

No `from __future__ import annotations`: KFP reads the pipeline's parameter
types from the evaluated annotations.
"""

import argparse
import sys

# deploy/ names the training image this way; push yours and pass it as `image`.
DEFAULT_IMAGE = "REGION-docker.pkg.dev/PROJECT/mer/mer-train:latest"
PIPELINE_NAME = "mer"
EXPLICIT_KIND = "cr"  # the explicit retriever is Conditional Retrieval


def _kfp():
    """`kfp.dsl` and the stage functions, or an ImportError naming the extra."""
    try:
        from kfp import dsl

        from mer.kubeflow import stages
    except ImportError as err:
        raise ImportError(f"the Kubeflow pipeline needs the Kubeflow Pipelines SDK ({err}): "
                          "pip install 'mer[kubeflow]'") from err
    return dsl, stages


def build_pipeline(image: str = DEFAULT_IMAGE):
    """The pipeline function (a `kfp.dsl` pipeline), every task in `image`.

    Why a factory: the image is a compile-time constant of every component,
    and the SDK is optional, so nothing here runs at import time.

    Args:
      image: the training image (`deploy/Dockerfile.train`) with the
        `kubeflow` extra installed: KFP's executor runs inside it without
        installing anything when the pod starts.

    Returns:
      The pipeline; call it under `kfp.local.init(...)` to run it locally,
      or give it to `kfp.compiler.Compiler().compile`.

    Raises:
      ImportError: `kfp` is not installed (the message says how to install it).
      ValueError: an empty image.
    """
    if not image:
        raise ValueError("image='': the training image is needed (deploy/Dockerfile.train)")
    dsl, stages = _kfp()

    def component(fn):
        return dsl.component(fn, base_image=image, install_kfp_package=False)

    prepare, train, evaluate, export, embed_items, build_index = (
        component(fn) for fn in (stages.prepare, stages.train, stages.evaluate, stages.export,
                                 stages.embed_items, stages.build_index))

    @dsl.pipeline(name=PIPELINE_NAME, description="mer: prepare, train, evaluate, export, embed items, "
                                                   "build the ScaNN index")
    def mer_pipeline(run_dir: str, config: str = "synthetic-small", overrides: list = [],
                     seed: int = 0, implicit_kind: str = "dcm", eval_records: int = 0,
                     beam_options: list = [], serving_base_path: str = "") -> str:
        """The whole flow into `run_dir`.

        Args:
          run_dir: every stage writes under it (gs://... or a volume every pod mounts); a fresh
            one per run, as the stages refuse to overwrite an earlier run.
          config: preset name, or a YAML/JSON path inside the image.
          overrides: KEY=VALUE config overrides (`--set`) of prepare and both trainings.
          seed: train.seed of both models and the bootstrap seed of the evaluation.
          implicit_kind: model.kind of the implicit model (dcm, mind, sa, ...).
          eval_records: eval records the evaluation scores (0 = all).
          beam_options: Beam pipeline options of prepare and embed-items (default: the local multi-process runner).
          serving_base_path: base path written into models.config (/models for tensorflow/serving).

        Returns:
          The export directory: TF Serving models, item embeddings, ScaNN indexes (`mer serve`'s input).
        """
        data = prepare(run_dir=run_dir, config=config, overrides=overrides, beam_options=beam_options)
        models = {}
        for role, kind in (("implicit", implicit_kind), ("explicit", EXPLICIT_KIND)):
            models[role] = train(data_dir=data.output, run_dir=run_dir, name=role, kind=kind, config=config,
                                 overrides=overrides, seed=seed).set_display_name(f"train-{role}")
        report = evaluate(implicit_model_dir=models["implicit"].output,
                          explicit_model_dir=models["explicit"].output, max_records=eval_records, seed=seed)
        # After the evaluation: a run whose models cannot be scored exports nothing.
        exported = export(implicit_model_dir=models["implicit"].output,
                          explicit_model_dir=models["explicit"].output, run_dir=run_dir,
                          serving_base_path=serving_base_path).after(report)
        embedded = embed_items(export_dir=exported.output, beam_options=beam_options)
        indexed = build_index(export_dir=embedded.output, data_dir=data.output)
        for task in (data, *models.values(), report, exported, embedded, indexed):
            # The outputs live under run_dir, outside KFP's artifact store: a cache hit would
            # skip a stage on the word of an earlier run, whatever run_dir holds now.
            task.set_caching_options(False)
        return indexed.output

    return mer_pipeline


def compile_pipeline(output: str, image: str = DEFAULT_IMAGE) -> str:
    """Compiles the pipeline to KFP's IR YAML at `output`; returns `output`."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(image), output)
    return output


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mer.kubeflow", description=__doc__.splitlines()[0])
    p.add_argument("--output", default="mer-pipeline.yaml", help="the compiled pipeline (YAML)")
    p.add_argument("--image", required=True,
                   help="the training image every task runs in (deploy/Dockerfile.train, pushed to your "
                        f"registry; deploy/ names it {DEFAULT_IMAGE})")
    args = p.parse_args(argv)
    try:
        print(compile_pipeline(args.output, args.image))
    except (ImportError, ValueError) as err:
        print(f"mer.kubeflow: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
