"""The notebook, executed on a finished smoke run as a reader would; the pipeline
pictured by kedro-viz and headless Chromium (``make notebook``, ``make dag``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import PROJECT_ROOT, copy_project
from PIL import Image

from multitask_cnn import pipeline_registry

pytestmark = pytest.mark.slow

NOTEBOOK = PROJECT_ROOT / "notebooks" / "finished_run.ipynb"


def _outputs(notebook: nbformat.NotebookNode, kind: str) -> list:
    return [output.get("data", {}).get(kind) for cell in notebook.cells
            for output in cell.get("outputs", []) if kind in output.get("data", {})]  # fmt: skip


def test_the_notebook_shows_a_finished_run_through_the_catalog(
    smoke_run, tmp_path, monkeypatch
):
    project_copy = smoke_run
    (project_copy / "notebooks").mkdir(exist_ok=True)
    shutil.copy2(NOTEBOOK, project_copy / "notebooks" / NOTEBOOK.name)
    executed = tmp_path / "executed.ipynb"
    monkeypatch.chdir(project_copy)
    monkeypatch.setenv("KEDRO_ENV", "smoke")
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "run_notebook.py"),
         f"notebooks/{NOTEBOOK.name}", "--output", str(executed)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    notebook = nbformat.read(executed, as_version=4)
    errors = [
        o
        for c in notebook.cells
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    # read from this project copy's smoke run, not from the repository's data
    printed = "".join(
        o.get("text", "") for c in notebook.cells for o in c.get("outputs", [])
    )
    assert f"project {project_copy.resolve()}, environment smoke" in printed
    table = (project_copy / "data/smoke/08_reporting/efficiency.md").read_text()
    assert table in _outputs(
        notebook, "text/markdown"
    )  # the efficiency table, as written
    plots = sorted(
        p.name for p in (project_copy / "data/smoke/08_reporting").glob("*/*.png")
    )
    assert (
        len(_outputs(notebook, "image/png")) == len(plots) >= 4
    )  # curves, bars, confusion


def test_a_failing_cell_fails_the_run_and_names_it(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x = 1"),
                      nbformat.v4.new_code_cell("raise ValueError('no such run')")]  # fmt: skip
    nbformat.write(notebook, tmp_path / "bad.ipynb")
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "run_notebook.py"),
                           str(tmp_path / "bad.ipynb")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert "a cell failed" in done.stderr and "ValueError: no such run" in done.stderr


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Chromium (CI installs it)"
)
def test_the_pipeline_picture_is_drawn_from_kedro_viz(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    copy_project(project, mlflow_store=False)
    kedro = Path(sys.executable).parent / "kedro"
    built = subprocess.run([str(kedro), "viz", "build"], cwd=project, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert (
        project / "build" / "api" / "main"
    ).is_file()  # the pipeline as kedro-viz read it
    output = tmp_path / "pipeline.png"
    drawn = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "pipeline_image.py"),
                            str(output), "--site", str(project / "build")],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    image = Image.open(output).convert("L")
    assert image.size == (1400, 1800)
    # a light page with the graph drawn on it: some dark ink (labels, edges, icons)
    assert sum(image.histogram()[:200]) / (1400 * 1800) > 0.003
    # every task and dataset of the default pipeline is a node of the picture
    pipeline = pipeline_registry.register_pipelines()["__default__"]
    datasets = {
        d
        for d in pipeline.datasets()
        if not d.startswith("params:") and d != "parameters"
    }
    assert f"{len(pipeline.nodes) + len(datasets)} nodes drawn" in drawn.stderr
