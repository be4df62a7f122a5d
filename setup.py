"""BUILD-free install of the `mer` multi-embedding retrieval framework."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",
    "tensorflow-recommenders==0.7.7",
    # The export's models.config / warmup records and the serving protocol
    # (pure-Python protos; the training job exports on Vertex, so it stays core).
    "tensorflow-serving-api==2.20.*",
    "tensorflow-hub==0.16.1",
    "apache-beam==2.77.*",
    "google-crc32c",
    "grpcio",
    "numpy",
    "pyarrow",
    "pyyaml",
]

BENCH = ["implicit==0.7.2", "scipy"]
# `mer build-index` / `mer serve`: ScaNN, the standard gRPC health service,
# Prometheus metrics (imported lazily through common/extras.py, which names
# this extra when one is missing). 1.80 keeps protobuf < 7, which TensorFlow
# 2.20 and Beam 2.77 need.
SERVING = ["scann==1.4.2", "grpcio-health-checking==1.80.*", "prometheus-client"]
REPORT = ["matplotlib"]
# The Kubeflow Pipelines SDK: compiles `mer.kubeflow`'s pipeline, and is KFP's
# executor inside the training image. 2.16 installs next to TensorFlow 2.20 and
# Beam 2.77 changing nothing they need (protobuf 6 stays); 2.17 pins requests
# and urllib3 to exact versions.
KUBEFLOW = ["kfp==2.16.*"]
EXTRAS = {
    "serving": SERVING,
    # Dataflow runner and GCS/BigQuery IO for `mer prepare` / `mer embed-items`.
    # gs:// paths in TensorFlow need nothing more: TF 2.20 registers the gs
    # filesystem itself (tf.io.gfile.get_registered_schemes()).
    "gcp": ["apache-beam[gcp]==2.77.*"],
    # The Kubeflow pipeline (mer/kubeflow/); the TFJob spec itself needs nothing.
    "kubeflow": KUBEFLOW,
    # bench: reference baselines of benchmarks/quality.py (ALS, co-occurrence).
    "bench": BENCH,
    # `mer report`: the HTML run report's plots.
    "report": REPORT,
    "test": ["pytest", "pytest-timeout", "pytest-xdist", "grpcio-tools==1.80.*", *SERVING, *BENCH, *REPORT,
             *KUBEFLOW],
}

setup(
    name="mer",
    version="0.1.0",
    description="Multi-embedding retrieval (implicit DCM + explicit CR) on TensorFlow, Beam and TF Serving.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["common*", "trainer*", "serving*", "beam*", "export*", "mer*"]),
    install_requires=INSTALL_REQUIRES,
    # The config presets ship with the package (`--config paper` from a wheel).
    package_data={"serving": ["protos/*.proto"], "trainer": ["configs/*.yaml"]},
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mer=mer.cli:main"]},
)
