"""tltrain: high-throughput transfer-learning trainer for image classification on TensorFlow."""

# First, before any module imports TensorFlow: its environment defaults and a start-up free of C++ log noise.
from tltrain import tf_startup

tf_startup.install()

__version__ = "0.1.0"
