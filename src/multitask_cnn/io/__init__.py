"""Kedro catalog datasets of this project, one class per file.

Every output file is written atomically (``atomic.atomic_path``): a crash leaves the
previous file, never a half-written one.
"""

from .atomic import AtomicFileDataset, OutputWriteError, atomic_path
from .checkpoint_set_dataset import CheckpointSetDataset
from .csv_dataset import CSVDataset
from .digits_dataset import DigitsDataset
from .fashion_mnist_dataset import FashionMNISTDataset
from .figures_dataset import FiguresDataset
from .image_manifest_dataset import ImageManifest, ImageManifestDataset
from .json_dataset import JSONDataset
from .mlflow_model_dataset import MultiTaskModelDataset
from .progress_dataset import TrainProgress, TrainProgressDataset
from .provenance_dataset import ProvenanceDataset
from .text_dataset import TextDataset
from .torch_dataset import TorchDataset

__all__ = [
    "AtomicFileDataset",
    "CSVDataset",
    "CheckpointSetDataset",
    "DigitsDataset",
    "FashionMNISTDataset",
    "FiguresDataset",
    "ImageManifest",
    "ImageManifestDataset",
    "JSONDataset",
    "MultiTaskModelDataset",
    "OutputWriteError",
    "ProvenanceDataset",
    "TextDataset",
    "TorchDataset",
    "TrainProgress",
    "TrainProgressDataset",
    "atomic_path",
]
