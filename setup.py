"""BUILD-free install of the `mer` multi-embedding retrieval framework."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",
    "tensorflow-recommenders==0.7.7",
    "tensorflow-serving-api==2.20.*",
    "tensorflow-hub==0.16.1",
    "scann==1.4.2",
    "apache-beam==2.77.*",
    "google-crc32c",
    "grpcio",
    # The retrieval service: the standard health service, Prometheus
    # metrics. 1.80 keeps protobuf < 7, which TensorFlow 2.20 and Beam 2.77 need.
    "grpcio-health-checking==1.80.*",
    "prometheus-client",
    "numpy",
    "pyarrow",
    "pyyaml",
]

BENCH = ["implicit==0.7.2", "scipy"]

setup(
    name="mer",
    version="0.1.0",
    description="Multi-embedding retrieval (implicit DCM + explicit CR) on TensorFlow, Beam and TF Serving.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["common*", "trainer*", "serving*", "beam*", "export*", "mer*"]),
    install_requires=INSTALL_REQUIRES,
    package_data={"serving": ["protos/*.proto"]},
    # bench: reference baselines of benchmarks/quality.py (ALS, co-occurrence).
    extras_require={"bench": BENCH, "test": ["pytest", "pytest-timeout", "grpcio-tools==1.80.*", *BENCH]},
    entry_points={"console_scripts": ["mer=mer.cli:main"]},
)
