"""Execute a notebook top to bottom in its own folder, as a reader would (``make
notebook``); fails, naming the cell, if any cell raises. ``--output`` keeps the
executed copy, outputs included.

    KEDRO_ENV=smoke .venv/bin/python scripts/run_notebook.py notebooks/finished_run.ipynb \\
        --output data/smoke/08_reporting/finished_run.ipynb
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

logger = logging.getLogger("run_notebook")


def run(notebook: Path, output: Path | None = None, timeout: int = 600) -> None:
    """Execute ``notebook`` (kernel ``python3``: this interpreter's ipykernel) with its
    folder as the working directory; write the executed copy to ``output``."""
    document = nbformat.read(notebook, as_version=4)
    client = NotebookClient(document, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})  # fmt: skip
    try:
        client.execute()
    finally:
        if output is not None:  # also when a cell failed: its traceback is in the copy
            output.parent.mkdir(parents=True, exist_ok=True)
            temp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
            nbformat.write(document, temp)
            os.replace(temp, output)
    logger.info("Executed %s (%d cells)%s", notebook, len(document.cells),
                f", saved to {output}" if output else "")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.notebook.is_file():
        sys.exit(f"{args.notebook}: no such notebook")
    try:
        run(args.notebook, args.output, args.timeout)
    except CellExecutionError as error:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the traceback, uncoloured
        sys.exit(f"{args.notebook}: a cell failed\n{plain}")


if __name__ == "__main__":
    main()
