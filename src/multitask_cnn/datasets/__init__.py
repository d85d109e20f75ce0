"""Kedro catalog datasets of this project (one class per file)."""

from .fashion_mnist_dataset import FashionMNISTDataset
from .torch_dataset import TorchDataset

__all__ = ["FashionMNISTDataset", "TorchDataset"]
