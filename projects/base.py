"""What a project is: a name, the models it needs by source, and the inference tasks it serves."""

from __future__ import annotations

from typing import ClassVar

from runpod_model_manager.specs import ModelSpec


def huggingface(repo_id: str, revision: str | None = None, include=(), exclude=()) -> ModelSpec:
    return ModelSpec("huggingface", repo_id, revision, tuple(include), tuple(exclude))


def modelscope(repo_id: str, revision: str | None = None, include=(), exclude=()) -> ModelSpec:
    return ModelSpec("modelscope", repo_id, revision, tuple(include), tuple(exclude))


class BaseProject:
    """Subclass it in a module of `projects/` (or a package's `runpod_model_manager.projects` entry point).

    The common case is declarative: set `name`, `description` and `models`. `tasks` maps a task name
    that handler.py serves to a "module:function" path, imported only by the handler.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    models: ClassVar[tuple[ModelSpec, ...]] = ()
    tasks: ClassVar[dict[str, str]] = {}

    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models to download; override to compute them (e.g. from the environment)."""
        return tuple(self.models)

    def __repr__(self) -> str:
        return f"<project {self.name}: {len(self.model_specs())} models>"
