"""Small filesystem primitives that keep a shared cache consistent: atomic writes, links, safe paths."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class UnsafePathError(ValueError):
    """A path from outside (a hub, a lock file, a user) that would land outside the directory it belongs to."""


def inside(root: Path, path: Path) -> Path:
    """`path`, absolute and with every folder above it resolved, if that lies strictly inside `root`.

    The one containment check for every write, rename, link and delete under a cache root. The last part is
    not followed: a symlink there is written, replaced or removed itself, never its target. Raises
    UnsafePathError otherwise.
    """
    root = Path(root).resolve()
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise UnsafePathError(f"refused the path {str(path)!r}: it does not name a file inside {root}")
    candidate = path.absolute().parent.resolve() / path.name
    if candidate == root or not candidate.is_relative_to(root):
        raise UnsafePathError(f"refused the path {str(path)!r}: it is outside {root}")
    return candidate


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write a small file so that readers see the old or the new content, never a partial one.

    `durable=False` skips the fsync, for files whose loss in an OS crash is harmless: an fsync can make the
    filesystem write back every other dirty file too (ext4's ordered journal), which stalls large downloads.
    A file that already holds `text` is left alone: a warm run rewrites no record and waits for no fsync.
    """
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600: other users of a shared volume must read it
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def relative_symlink(target: Path, link: Path) -> None:
    """Point `link` at `target` with a relative symlink, replacing whatever is there atomically."""
    relative = os.path.relpath(target, link.parent)
    try:  # a warm run: the same link already there, in one system call
        if os.readlink(link) == relative:
            return
    except OSError:  # no such file, or not a link
        pass
    try:
        os.symlink(relative, link)
        return
    except FileExistsError:
        pass
    except FileNotFoundError:  # its folder does not exist yet
        link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(relative, tmp)
    os.replace(tmp, link)
