"""Checks for values that come from outside: a user, a lock file, a hub, or our own records on a shared volume.

Each is checked before a path is built from it or before it is trusted, by the same function whatever its
origin. Each function returns the value or raises InvalidValue with a clause saying what is wrong; the caller
adds where the value came from ("the hub sent malformed metadata for ...", "models.lock line 12: ...").
"""

from __future__ import annotations

import json
import re

MAX_SIZE = 1 << 50  # 1 PiB: no hub file is larger; a bigger size is a broken or hostile answer
MAX_NAME = 255  # a branch, tag or commit name; also the longest file name most filesystems accept

_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
_CHECKSUM = re.compile(r"^(sha256:[0-9a-f]{64}|git-sha1:[0-9a-f]{40})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")


class InvalidValue(ValueError):
    """A value from outside that must not be used; the message is a clause naming the value and the problem."""


def show(value: object, limit: int = 60) -> str:
    """A value as it can be quoted in one line of an error message: escaped and shortened."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr, ensure_ascii=True)
    return text if len(text) <= limit else text[:limit] + "..."


def _name(value: object, noun: str) -> str:
    """`value` if it can name a folder or file, or nested folders, under its parent ("refs/pr/1")."""
    text = _text(value, noun)
    parts = text.split("/")
    if not text:
        problem = "is empty"
    elif len(text) > MAX_NAME:
        problem = f"is longer than {MAX_NAME} characters"
    elif _CONTROL.search(text):
        problem = "holds a control character"
    elif "\\" in text:
        problem = "holds a backslash"
    elif text.startswith("/"):
        problem = "is an absolute path"
    elif ".." in parts:
        problem = "has a '..' segment"
    elif any(part in ("", ".") for part in parts):
        problem = "has an empty or '.' segment"
    else:
        return text
    raise InvalidValue(f"the {noun} {show(value)} {problem}")


def _text(value: object, noun: str) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"the {noun} {show(value)} is not text")
    return value


def revision(value: object) -> str:
    """A branch, tag or commit name. Hugging Face names may hold '/' ('refs/pr/1'); none may leave its folder."""
    return _name(value, "revision")


def commit(value: object) -> str:
    """A resolved commit: a hash or, for a source that publishes none (ModelScope), the branch or tag name.
    It names folders and files (snapshots/<commit>, manifests/<commit>.json): the rules of a revision."""
    return _name(value, "commit id")


def commit_hash(value: object) -> str:
    """A full git commit hash (40 lowercase hex digits), as the Hugging Face Hub publishes it."""
    if not _COMMIT_HASH.match(_text(value, "commit id")):
        raise InvalidValue(f"the commit id {show(value)} is not a 40-digit commit hash")
    return value


def repo_path(value: object) -> str:
    """A file's path inside its repository: relative, no '..', '.' or empty parts, no backslash or NUL.
    Other control characters are legal file names; output escapes them."""
    path = _text(value, "file name")
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(part in ("..", ".", "") for part in parts)
        or "\\" in path
        or "\0" in path
        or (len(path) > 1 and path[1] == ":")
    ):
        raise InvalidValue(f"the file name {show(path)} would be written outside the model folder")
    return path


def checksum(value: object) -> str | None:
    """None, "sha256:<64 hex>" or "git-sha1:<40 hex>"; HF names blob files after the hex part."""
    if value is not None and not (isinstance(value, str) and _CHECKSUM.match(value)):
        raise InvalidValue(f"the checksum {show(value)} is not 'sha256:<64 hex digits>' or 'git-sha1:<40 hex digits>'")
    return value


def size(value: object) -> int:
    """A file size in bytes: a whole number from 0 to 1 PiB (JSON true/false are not numbers)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise InvalidValue(f"the size {show(value)} is not a number of bytes from 0 to {MAX_SIZE}")
    return value


def token(value: str, name: str) -> str:
    """A hub token goes into an HTTP header: printable ASCII without spaces. The value is never shown."""
    if not _TOKEN.match(value):
        raise InvalidValue(f"{name} is not a valid token (tokens are printable ASCII characters without spaces)")
    return value
