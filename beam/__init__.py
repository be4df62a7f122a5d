"""Apache Beam batch pipelines: readers, synthetic world, prepare."""

import trainer  # noqa: F401  (sets the legacy-Keras switch before TF loads)
