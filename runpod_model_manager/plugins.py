"""Discovery shared by projects and downloaders: subclasses defined in a package's modules, plus entry points."""

from __future__ import annotations

import importlib
import os
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType


def _subclasses_in(module: ModuleType, base: type) -> list[type]:
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, base)
        and obj is not base
        and obj.__module__ == module.__name__
        and not getattr(obj, "__abstractmethods__", None)
    ]


def discover(package: str, base: type, entry_point_group: str, warn) -> list[type]:
    """Concrete `base` subclasses from every module of `package` and from the entry point group.

    A module or entry point that fails to import is reported through `warn(message)` and skipped.
    """
    found: list[type] = []
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        name = f"{package}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a broken plugin must not take the others down
            warn(f"skipped {_module_file(info)}: {type(exc).__name__}: {exc}")
            continue
        found.extend(_subclasses_in(module, base))
    for ep in entry_points(group=entry_point_group):
        try:
            obj = ep.load()
        except Exception as exc:
            warn(f"skipped entry point '{ep.name}' ({ep.value}): {type(exc).__name__}: {exc}")
            continue
        found.extend(_subclasses_in(obj, base) if isinstance(obj, ModuleType) else [obj])
    return found


def _module_file(info: pkgutil.ModuleInfo) -> str:
    folder = getattr(info.module_finder, "path", "")
    return os.path.join(folder, info.name, "__init__.py") if info.ispkg else os.path.join(folder, f"{info.name}.py")
