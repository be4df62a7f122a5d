"""The one Keras import for the layers (legacy Keras 2 via tf.keras)."""

import trainer  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

keras = tf.keras
register = keras.utils.register_keras_serializable(package="mer")
NEG_INF = -1e9
