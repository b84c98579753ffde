"""Registered projects: modules of this package and the `runpod_model_manager.projects` entry points.

`python -m projects.loader` prints a summary of every project and its models.
"""

from __future__ import annotations

import sys

from projects.base import BaseProject
from runpod_model_manager.plugins import discover

ENTRY_POINT_GROUP = "runpod_model_manager.projects"


def _warn(message: str) -> None:
    print(f"warning: project {message}", file=sys.stderr)


def load_projects(warn=_warn) -> dict[str, BaseProject]:
    """Every registered project, instantiated, by name (sorted)."""
    projects: dict[str, BaseProject] = {}
    for cls in discover("projects", BaseProject, ENTRY_POINT_GROUP, warn):
        name = getattr(cls, "name", None)
        if not name:
            warn(f"{cls.__module__}.{cls.__qualname__} skipped: it sets no `name`")
            continue
        if name in projects and type(projects[name]) is not cls:
            warn(
                f"'{name}' is defined twice ({cls.__module__} and {type(projects[name]).__module__}); keeping the first"
            )
            continue
        projects[name] = cls()
    return dict(sorted(projects.items()))


def print_summary(projects: dict[str, BaseProject]) -> None:
    print(f"{len(projects)} project(s):")
    for project in projects.values():
        specs = project.model_specs()
        print(f"- {project.name}: {len(specs)} model(s){' - ' + project.description if project.description else ''}")
        for spec in specs:
            print(f"    {spec}")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(
        prog="python -m projects.loader", description="Print every registered project and its models."
    ).parse_args()
    print_summary(load_projects())
