"""`python -m mer.kubeflow --image IMAGE --output mer-pipeline.yaml`: compiles the pipeline."""
from mer.kubeflow.pipeline import main

raise SystemExit(main())
