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


class _At(NamedTuple):
    """A JSON value and the line it starts on; an object's or list's members are _At too."""

    value: object
    line: int


def _parse_with_lines(text: str) -> _At:
    """json.loads that also tells the line of every value (the pure-Python scanner, with a hook per value)."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    decoder = json.JSONDecoder()

    def located(s: str, index: int) -> tuple[_At, int]:
        value, end = scan(s, index)
        return _At(value, bisect.bisect_left(newlines, index) + 1), end

    decoder.parse_object = lambda s_end, strict, _, *hooks: json.decoder.JSONObject(s_end, strict, located, *hooks)
    decoder.parse_array = lambda s_end, _: json.decoder.JSONArray(s_end, located)
    scan = json.scanner.py_make_scanner(decoder)
    decoder.scan_once = located
    return decoder.decode(text)


class _Reader:
    """Checks the parsed lock file, raising a UserError that names the line of the first bad value."""

    KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number"}

    def __init__(self, path: Path):
        self.path = path

    def refuse(self, at: _At, problem: str):
        raise UserError(f"{self.path} line {at.line}: {problem}; fix it or recreate it with `download-models lock`.")

    def member(self, obj: _At, key: str, kind: type, optional: bool = False) -> _At | None:
        item = obj.value.get(key)
        if item is None or item.value is None:
            if optional:
                return None
            self.refuse(item or obj, f'"{key}" is missing')
        if not isinstance(item.value, kind) or isinstance(item.value, bool):
            shown = self.KINDS.get(type(item.value)) if isinstance(item.value, dict | list) else None
            self.refuse(item, f'"{key}" is {shown or validate.show(item.value)}, not {self.KINDS[kind]}')
        return item

    def check(self, at: _At, check, *args):
        try:
            return check(at.value, *args)
        except (validate.InvalidValue, UserError) as exc:
            self.refuse(at, str(exc).rstrip("."))

    def entries(self, root: _At) -> dict[tuple[str, str, str | None], dict]:
        if not isinstance(root.value, dict):
            self.refuse(root, "the file is not a JSON object")
        version = self.member(root, "version", int)
        if version.value != FORMAT_VERSION:
            self.refuse(version, f"unsupported version {version.value} (this tool writes {FORMAT_VERSION})")
        entries = {}
        for model in self.member(root, "models", list).value:
            entry = self.model(model)
            key = (entry["source"], entry["id"], entry["revision"])
            if key in entries:
                self.refuse(model, f"{entry['source']}:{entry['id']} is locked twice")
            entries[key] = entry
        return entries

    def model(self, model: _At) -> dict:
        if not isinstance(model.value, dict):
            self.refuse(model, "a model entry is not an object")
        source = self.member(model, "source", str)
        if not _SOURCE.match(source.value):
            self.refuse(source, f"the source {validate.show(source.value)} is not a source name")
        repo_id = self.member(model, "id", str)
        self.check(repo_id, validate_repo_id)
        revision = self.member(model, "revision", str, optional=True)
        if revision is not None:
            self.check(revision, validate.revision)
        commit = self.member(model, "commit", str)
        self.check(commit, validate.commit)
        files, paths = [], set()
        for item in self.member(model, "files", list).value:
            file = self.file(item)
            if file["path"] in paths:
                self.refuse(item, f"the file {validate.show(file['path'])} is listed twice")
            paths.add(file["path"])
            files.append(file)
        return {
            "source": source.value,
            "id": repo_id.value,
            "revision": revision.value if revision else None,
            "commit": commit.value,
            "files": files,
        }

    def file(self, item: _At) -> dict:
        if not isinstance(item.value, dict):
            self.refuse(item, "a file entry is not an object")
        path = self.member(item, "path", str)
        self.check(path, validate.repo_path)
        size = self.member(item, "size", int)
        self.check(size, validate.size)
        checksum = self.member(item, "checksum", str, optional=True)
        if checksum is not None:
            self.check(checksum, validate.checksum)
        return {"path": path.value, "size": size.value, "checksum": checksum.value if checksum else None}


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
            root = _parse_with_lines(text)
        except json.JSONDecodeError as exc:
            _Reader(path).refuse(_At(None, exc.lineno), f"not valid JSON ({exc.msg})")
        except RecursionError:
            raise UserError(f"{path} is not a valid lock file (nested too deep); recreate it.") from None
        return cls(path, _Reader(path).entries(root))

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
