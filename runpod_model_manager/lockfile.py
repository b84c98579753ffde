"""models.lock: every project model pinned to an exact commit with each file's path, size and checksum.

JSON with one key per line, sorted, so that `git diff` shows what an upgrade changed. With a lock present a
download uses the locked commits and needs no resolution request; a frozen run refuses a missing or stale lock.

A lock file comes from outside (a repository, a Docker build context): every value in it passes the checks a
hub's answer passes, when it is read, for every command. One bad value refuses the whole file, naming its line.
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import json.scanner
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from runpod_model_manager import validate
from runpod_model_manager.errors import UserError
from runpod_model_manager.layout import atomic_write_text
from runpod_model_manager.remote import RemoteFile, ResolvedModel
from runpod_model_manager.specs import ModelSpec, validate_repo_id

FORMAT_VERSION = 1
DEFAULT_NAME = "models.lock"
_SOURCE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def _key(spec: ModelSpec) -> tuple[str, str, str | None]:
    return spec.source, spec.repo_id, spec.revision


class _Bad(Exception):
    """A bad value: where it is (keys and indexes from the top of the file) and what is wrong with it."""

    def __init__(self, where: tuple, problem: str):
        super().__init__(problem)
        self.where, self.problem = where, problem


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number"}


def _member(obj: dict, where: tuple, key: str, kind: type, optional: bool = False):
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise _Bad(where, f'"{key}" is missing')
    if not isinstance(value, kind) or isinstance(value, bool):
        shown = _KINDS.get(type(value)) if isinstance(value, dict | list) else validate.show(value)
        raise _Bad((*where, key), f'"{key}" is {shown}, not {_KINDS[kind]}')
    return value


def _checked(value, where: tuple, check):
    try:
        return check(value)
    except (validate.InvalidValue, UserError) as exc:
        raise _Bad(where, str(exc).rstrip(".")) from None


def _entries(data) -> dict[tuple[str, str, str | None], dict]:
    if not isinstance(data, dict):
        raise _Bad((), "the file is not a JSON object")
    version = _member(data, (), "version", int)
    if version != FORMAT_VERSION:
        raise _Bad(("version",), f"unsupported version {version} (this tool writes {FORMAT_VERSION})")
    entries = {}
    for i, model in enumerate(_member(data, (), "models", list)):
        entry = _model(model, ("models", i))
        key = (entry["source"], entry["id"], entry["revision"])
        if key in entries:
            raise _Bad(("models", i), f"{entry['source']}:{entry['id']} is locked twice")
        entries[key] = entry
    return entries


def _model(model, where: tuple) -> dict:
    if not isinstance(model, dict):
        raise _Bad(where, "a model entry is not an object")
    source = _member(model, where, "source", str)
    if not _SOURCE.match(source):
        raise _Bad((*where, "source"), f"the source {validate.show(source)} is not a source name")
    repo_id = _member(model, where, "id", str)
    _checked(repo_id, (*where, "id"), validate_repo_id)
    revision = _member(model, where, "revision", str, optional=True)
    if revision is not None:
        _checked(revision, (*where, "revision"), validate.revision)
    commit = _checked(_member(model, where, "commit", str), (*where, "commit"), validate.commit)
    files, paths = [], set()
    for i, item in enumerate(_member(model, where, "files", list)):
        file = _file(item, (*where, "files", i))
        if file["path"] in paths:
            raise _Bad((*where, "files", i), f"the file {validate.show(file['path'])} is listed twice")
        paths.add(file["path"])
        files.append(file)
    return {"source": source, "id": repo_id, "revision": revision, "commit": commit, "files": files}


def _file(item, where: tuple) -> dict:
    if not isinstance(item, dict):
        raise _Bad(where, "a file entry is not an object")
    path = _checked(_member(item, where, "path", str), (*where, "path"), validate.repo_path)
    size = _checked(_member(item, where, "size", int), (*where, "size"), validate.size)
    checksum = _checked(_member(item, where, "checksum", str, optional=True), (*where, "checksum"), validate.checksum)
    return {"path": path, "size": size, "checksum": checksum}


class _At(NamedTuple):
    """A JSON value and the line it starts on; an object's or list's members are _At too."""

    value: object
    line: int


def _line_of(text: str, where: tuple) -> int:
    """The line of the value at `where` (or of the nearest value around it that exists): the text is parsed
    again with the pure-Python scanner and a hook per value, only to report a bad lock file."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    decoder = json.JSONDecoder()

    def located(s: str, index: int) -> tuple[_At, int]:
        value, end = scan(s, index)
        return _At(value, bisect.bisect_left(newlines, index) + 1), end

    decoder.parse_object = lambda s_end, strict, _, *hooks: json.decoder.JSONObject(s_end, strict, located, *hooks)
    decoder.parse_array = lambda s_end, _: json.decoder.JSONArray(s_end, located)
    scan = json.scanner.py_make_scanner(decoder)
    decoder.scan_once = located
    node = decoder.decode(text)
    for key in where:
        children = node.value
        if isinstance(children, dict) and key in children or isinstance(children, list) and key < len(children):
            node = children[key]
    return node.line


def _refused(path: Path, line: int | None, problem: str) -> UserError:
    at = f" line {line}" if line else ""
    return UserError(f"{path}{at}: {problem}; fix it or recreate it with `download-models lock`.")


@dataclass
class LockFile:
    path: Path
    entries: dict[tuple[str, str, str | None], dict]

    @classmethod
    def load(cls, path: Path) -> LockFile | None:
        if not path.exists():
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read the lock file {path} ({exc.strerror}).") from None
        except ValueError:
            raise UserError(f"{path} is not a valid lock file (it is not UTF-8 text); recreate it.") from None
        try:
            return cls(path, _entries(json.loads(text)))
        except json.JSONDecodeError as exc:
            raise _refused(path, exc.lineno, f"not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise _refused(path, None, "nested too deep to be a lock file") from None
        except _Bad as bad:
            try:
                line = _line_of(text, bad.where)
            except RecursionError:
                line = None
            raise _refused(path, line, bad.problem) from None

    @classmethod
    def empty(cls, path: Path) -> LockFile:
        return cls(path, {})

    def pinned(self, spec: ModelSpec, file_url) -> ResolvedModel | None:
        """The locked commit of `spec`, with URLs built by `file_url(repo_id, commit, path)`."""
        entry = self.entries.get(_key(spec))
        if entry is None:
            return None
        files = tuple(
            RemoteFile(f["path"], f["size"], file_url(spec.repo_id, entry["commit"], f["path"]), f["checksum"])
            for f in entry["files"]
        )
        return ResolvedModel(spec, entry["commit"], files)

    def commits(self) -> set[tuple[str, str, str]]:
        """(source, repo_id, commit) of every locked model."""
        return {(e["source"], e["id"], e["commit"]) for e in self.entries.values()}

    def missing(self, specs) -> list[ModelSpec]:
        return [spec for spec in specs if _key(spec) not in self.entries]

    def put(self, model: ResolvedModel) -> None:
        spec = model.spec
        self.entries[_key(spec)] = {
            "source": spec.source,
            "id": spec.repo_id,
            "revision": spec.revision,
            "commit": model.commit,
            "files": [{"path": f.path, "size": f.size, "checksum": f.checksum} for f in model.files],
        }

    def save(self) -> None:
        models = [self.entries[k] for k in sorted(self.entries, key=lambda k: (k[0], k[1], k[2] or ""))]
        text = json.dumps({"version": FORMAT_VERSION, "models": models}, indent=2, sort_keys=True, ensure_ascii=False)
        try:
            atomic_write_text(self.path, text + "\n")
        except OSError as exc:
            raise UserError(
                f"cannot write the lock file {self.path} ({exc.strerror}); choose another path with --lock-file."
            ) from None
