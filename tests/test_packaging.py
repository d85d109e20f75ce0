"""A non-editable install (a wheel) must hold every module of the package."""

from pathlib import Path

from setuptools import find_packages

SRC = Path(__file__).resolve().parents[1] / "src"


def test_every_folder_with_modules_is_a_package_the_wheel_includes():
    # pyproject.toml: [tool.setuptools.packages.find] where = ["src"], namespaces = false
    found = set(find_packages(where=str(SRC)))
    folders = {
        ".".join(path.parent.relative_to(SRC).parts)
        for path in (SRC / "multitask_cnn").rglob("*.py")
    }
    assert folders <= found, f"not packaged (no __init__.py): {sorted(folders - found)}"
