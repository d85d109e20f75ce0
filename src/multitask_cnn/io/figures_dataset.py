"""Matplotlib figures saved as image files, each file written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import DatasetError
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from .atomic import AtomicFileDataset, atomic_path

_IMAGE_FORMATS = frozenset(FigureCanvasBase.get_supported_filetypes())  # png, svg, ...


def _image_format(name: str) -> str | None:
    """The ``savefig`` format a file name asks for, or None if it names none."""
    suffix = PurePosixPath(name).suffix[1:].lower()
    return suffix if suffix in _IMAGE_FORMATS else None


class FiguresDataset(
    AtomicFileDataset[Figure | Mapping[str, Figure], bytes | dict[str, bytes]]
):
    """Save figures as image files; ``save_args`` go to ``Figure.savefig`` (e.g. dpi).

    ``filepath`` chooses the layout:

    - a folder: save a dict ``{file name: Figure}``, one file per entry in that
      folder (``confusion_matrix_left.png``). Each file is written atomically; the
      set is not (a failure part-way leaves the earlier files new, the later ones
      old). Files of the folder that are not in the dict are left as they are, unless
      ``replace: true``: then the folder's image files that the dict does not name are
      removed once the new ones are written (a figure a run did not make is not
      mistaken for one of its own).
    - an image file (``.png``, ``.svg``, ``.pdf``, ...): save a single Figure.

    The file suffix sets the image format. ``load`` gives the saved images back
    encoded, as their files hold them (a notebook shows them with
    ``IPython.display.Image(data)``): the bytes of the one file, or ``{file name:
    bytes}`` for every image file of the folder, in name order. Figures are not closed
    (the node that makes them does that).
    Wrapped in kedro-mlflow's ``MlflowArtifactDataset``, the folder is logged with
    all its files, under ``{artifact_path}/{folder name}/``.

    Example (``catalog.yml``)::

        confusion_matrices:
          type: multitask_cnn.io.FiguresDataset
          filepath: data/08_reporting/confusion_matrices
          save_args:
            dpi: 100
    """

    def __init__(
        self,
        filepath: str,
        *,
        save_args: dict[str, Any] | None = None,
        replace: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath, save_args=save_args, metadata=metadata)
        self._replace = replace
        if "format" in self._save_args:
            raise DatasetError(
                f"{filepath}: remove save_args.format; the file suffix "
                "(.png, .svg, ...) sets the image format"
            )

    @property
    def _single_file(self) -> bool:
        return _image_format(self._filepath.name) is not None

    def save(self, data: Figure | Mapping[str, Figure]) -> None:
        files = self._files(data)
        if not self._single_file:  # an empty dict still makes the (empty) folder
            Path(self._filepath).mkdir(parents=True, exist_ok=True)
        for target, figure in files:
            with atomic_path(target) as temp:
                figure.savefig(
                    temp, format=_image_format(target.name), **self._save_args
                )
        if self._replace and not self._single_file:
            kept = {target.name for target, _ in files}
            for stale in set(self._read(Path(self._filepath))) - kept:
                (Path(self._filepath) / stale).unlink()

    def _files(self, data: Figure | Mapping[str, Figure]) -> list[tuple[Path, Figure]]:
        """Check all the data before any file is written; pair figures with paths."""
        path = Path(self._filepath)
        if self._single_file:
            if not isinstance(data, Figure):
                raise DatasetError(
                    f"{path} is one image file: save a matplotlib Figure, "
                    f"not {type(data).__name__}"
                )
            return [(path, data)]
        if not isinstance(data, Mapping):
            raise DatasetError(
                f"{path} is a folder: save a dict {{file name: Figure}}, not "
                f"{type(data).__name__} (or give a filepath ending in .png)"
            )
        files = []
        for name, figure in data.items():
            if not isinstance(name, str) or PurePosixPath(name).name != name:
                raise DatasetError(f"{path}: {name!r} is not a plain file name")
            if _image_format(name) is None:
                raise DatasetError(
                    f"{path}: {name!r} needs an image suffix, one of "
                    f"{', '.join(sorted(_IMAGE_FORMATS))}"
                )
            if not isinstance(figure, Figure):
                raise DatasetError(
                    f"{path}: {name!r} is a {type(figure).__name__}, not a Figure"
                )
            files.append((path / name, figure))
        return files

    def _read(self, path: Path) -> bytes | dict[str, bytes]:
        if self._single_file:
            return path.read_bytes()
        return {file.name: file.read_bytes() for file in sorted(path.iterdir())
                if file.is_file() and _image_format(file.name) is not None
                and not file.name.startswith(".")}  # fmt: skip

    def _exists(self) -> bool:
        path = Path(self._filepath)
        return path.is_file() if self._single_file else path.is_dir()
