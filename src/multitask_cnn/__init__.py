"""multitask-cnn: one convolutional network for several image tasks at once."""

__version__ = "0.1.0"
