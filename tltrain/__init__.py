"""tltrain: high-throughput transfer-learning trainer for image classification on TensorFlow."""

__version__ = "0.1.0"
