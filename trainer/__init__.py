"""The model stage of `mer`, and the shared contract (features, config).

`tensorflow-recommenders` needs Keras 2, so the legacy-Keras switch is set
here, before TensorFlow is first imported. Every stage imports
`trainer.features`, so this is the one place the switch lives.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (rendezvous notices at every end of input) bury
# the job's own output; warnings and errors still print (0 shows all).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
