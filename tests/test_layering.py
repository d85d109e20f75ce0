"""The library layer never imports the pipeline layer (DESIGN.md: arrows point down)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "multitask_cnn"
LIBRARY = ["tasks.py", "registry.py", "seeds.py", "data", "models", "training"]
FORBIDDEN = (
    "multitask_cnn.config", "multitask_cnn.pipelines", "multitask_cnn.hooks",
    "multitask_cnn.settings", "multitask_cnn.io", "multitask_cnn.provenance",
    "multitask_cnn.tracking", "kedro", "mlflow",
)  # fmt: skip


def _library_files() -> list[Path]:
    files = []
    for entry in LIBRARY:
        path = PACKAGE / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", _library_files(), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_library_module_imports_nothing_above_it(path):
    bad = {
        n
        for n in _imports(path)
        if n.split(".")[0] in ("kedro", "mlflow") or n.startswith(FORBIDDEN)
    }
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_check_sees_real_imports():
    assert "multitask_cnn.registry" in _imports(PACKAGE / "tasks.py")
    assert len(_library_files()) >= 12
