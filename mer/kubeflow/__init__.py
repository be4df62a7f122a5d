"""The mer flow as a Kubeflow Pipelines v2 pipeline (`pip install 'mer[kubeflow]'`).

`pipeline.py` builds and compiles it; `stages.py` holds the six stages'
component functions (each runs the `mer` CLI). Importing this package
needs no `kfp`; building the pipeline does.
"""

from mer.kubeflow.pipeline import DEFAULT_IMAGE, build_pipeline, compile_pipeline

__all__ = ["DEFAULT_IMAGE", "build_pipeline", "compile_pipeline"]
