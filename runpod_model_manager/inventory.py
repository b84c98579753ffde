"""What a source finds of a model in the cache, whoever downloaded it (this tool, `hf download`, `modelscope
download`, an older library version): its folders, revisions, content files, the hub library's partial
downloads and lock files. Sources fill these in from their native layout (Downloader.cached); volume.py
measures and removes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_COMMIT_PREFIX = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class CachedRevision:
    name: str  # the folder under snapshots/: a commit (Hugging Face) or the revision asked for (ModelScope)
    path: Path  # that folder
    refs: tuple[str, ...] = ()  # branches and tags that point at it; none: "detached"
    ref_files: tuple[Path, ...] = ()  # the files that say so (Hugging Face refs/...), removed with it
    blobs: frozenset[Path] = frozenset()  # content files outside its folder that it uses (Hugging Face blobs/)
    own_dirs: tuple[Path, ...] = ()  # other folders of this revision alone, removed with it (.no_exist/<commit>)


@dataclass(frozen=True)
class HubPartial:
    """A partial download the hub library left, and the lock its writer holds while writing it."""

    path: Path
    lock: Path | None = None  # None: the library takes no lock for it (then only its age protects it)


@dataclass(frozen=True)
class CachedModel:
    source: str
    repo_id: str
    dirs: tuple[Path, ...]  # the folders that hold it (existing ones): removing them removes the model
    revisions: tuple[CachedRevision, ...] = ()
    blobs: frozenset[Path] = frozenset()  # the shared content store of its revisions (Hugging Face blobs/)
    partials: tuple[HubPartial, ...] = ()
    locks: tuple[Path, ...] = ()  # the hub library's lock files for its files

    def revision(self, name: str) -> CachedRevision | None:
        """The revision called `name`: its folder name, a ref pointing at it, or a commit prefix (7+ digits)."""
        for revision in self.revisions:
            if name == revision.name or name in revision.refs:
                return revision
        if _COMMIT_PREFIX.match(name):
            matches = [r for r in self.revisions if r.name.startswith(name)]
            if len(matches) == 1:
                return matches[0]
        return None


def entries(folder: Path) -> list[Path]:
    """The entries of `folder`, sorted; none when it does not exist or cannot be read."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []
