"""The library layer never imports the pipeline layer (DESIGN.md: arrows point down)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "multitask_cnn"
LIBRARY = [
    "tasks.py",
    "registry.py",
    "seeds.py",
    "data",
    "models",
    "training",
    "evaluation",
]
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
    """Every module ``path`` imports, relative imports resolved, and for
    ``from package import name`` also ``package.name`` (it may be a module)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
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


def test_the_check_sees_real_imports(tmp_path, monkeypatch):
    assert "multitask_cnn.registry" in _imports(PACKAGE / "tasks.py")
    assert "multitask_cnn.training.sources" in _imports(
        PACKAGE / "training" / "loop.py"
    )
    assert len(_library_files()) >= 12
    fake = tmp_path / "multitask_cnn" / "training" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "from multitask_cnn import config\nfrom .. import hooks\nfrom ..io import TorchDataset\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "multitask_cnn")
    assert {
        "multitask_cnn.config",
        "multitask_cnn.hooks",
        "multitask_cnn.io",
    } <= _imports(fake)
