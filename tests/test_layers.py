"""The layers, as the imports show them: the core imports no plugin and no command; plugins import no command."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level packages of this repository it must never import
FORBIDDEN = {
    "runpod_model_manager": {"downloaders", "projects", "cli", "download_models", "inference", "handler"},
    "downloaders": {"projects", "cli", "download_models", "inference", "handler"},
    "projects": {"downloaders", "cli", "download_models", "inference", "handler"},
}


def imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package):
    wrong = {
        str(path.relative_to(REPO)): sorted(imported_top_levels(path) & FORBIDDEN[package])
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert not {k: v for k, v in wrong.items() if v}
