"""What a source resolves a model to: an exact commit and the files it holds, as the core uses them; and the
checks that turn a hub's JSON answer into them (a source parses its hub's format with `member`/`expect`)."""

from __future__ import annotations

from dataclasses import dataclass

from runpod_model_manager import validate
from runpod_model_manager.specs import ModelSpec


@dataclass(frozen=True)
class RemoteFile:
    """One file of a resolved commit."""

    path: str  # POSIX path inside the repo, as the hub lists it
    size: int
    url: str  # GET-able with HTTP Range
    checksum: str | None = None  # "sha256:<hex>" or "git-sha1:<hex>", as published by the hub


@dataclass(frozen=True)
class ResolvedModel:
    """A model pinned to an exact commit, with every file of that commit."""

    spec: ModelSpec
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def selected(self) -> tuple[RemoteFile, ...]:
        """The files that pass the spec's include/exclude patterns."""
        return tuple(f for f in self.files if self.spec.wants(f.path))


class MalformedMetadata(ValueError):
    """A hub answer lacking a field, or with one of the wrong type or value; the message says which."""


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a whole number", bool: "true or false"}


def expect(value, kinds: type | tuple[type, ...], where: str):
    """`value` if it is of one of `kinds` (JSON true/false do not count as numbers)."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        wanted = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        raise MalformedMetadata(f"{where} is {validate.show(value)}, not {wanted}")
    return value


def member(obj: dict, key: str, kinds: type | tuple[type, ...], where: str, optional: bool = False):
    """obj[key] checked by `expect`; a missing or null member is None when `optional`, an error otherwise."""
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise MalformedMetadata(f"{where} is missing")
    return expect(value, kinds, where)


def check(model: ResolvedModel) -> ResolvedModel:
    """Every value of `model` that names a folder or file, or that is trusted, checked (InvalidValue otherwise):
    the commit, and each file's path, size and checksum. Whatever a source or a lock file says."""
    validate.commit(model.commit)
    seen: set[str] = set()
    for file in model.files:
        validate.repo_path(file.path)
        try:
            validate.size(file.size)
            validate.checksum(file.checksum)
        except validate.InvalidValue as exc:
            raise validate.InvalidValue(f"{exc}, for {validate.show(file.path)}") from None
        if file.path in seen:
            raise validate.InvalidValue(f"the file name {validate.show(file.path)} is listed twice")
        seen.add(file.path)
    return model
