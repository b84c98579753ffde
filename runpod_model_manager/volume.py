"""Looking after a cache that lives for months: what each model takes, and removing models, revisions and what
crashed downloads leave behind, in both hubs' native layouts, whoever filled them.

Safe while other processes download into the same cache: a model is changed only under its model lock,
taken alone (our downloads share it), and with every lock the hub library holds for its files free; a partial
file is removed only while its writer's lock is free (or, where a library takes none, when it is old).
Every deletion goes through layout.inside: nothing outside the cache root is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .cache import CacheRoot
from .errors import ModelError
from .inventory import CachedModel, CachedRevision, entries
from .layout import UnsafePathError, inside
from .locks import Lock, LockBusy, remove_if_free
from .records import Records
from .remote import ResolvedModel
from .source import Downloader
from .specs import ModelSpec
from .transfer import TransferEngine

# what prune removes, in the order it reports them
DETACHED, UNREFERENCED, PARTIAL, LOCKS, RECORDS = (
    "detached revisions",
    "unreferenced blobs",
    "partial files",
    "stale lock files",
    "records",
)
KINDS = (DETACHED, UNREFERENCED, PARTIAL, LOCKS, RECORDS)
UNLOCKED_PARTIAL_MIN_AGE = 3600.0  # a partial file no lock protects counts as abandoned after this long


@dataclass
class Freed:
    """What a removal freed (or, in a dry run, would free) by kind: how many (revisions, files) and bytes on disk."""

    count: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # one sentence each: what was left alone, and why

    def add(self, kind: str, size: int, count: int = 1) -> None:
        self.count[kind] = self.count.get(kind, 0) + count
        self.bytes[kind] = self.bytes.get(kind, 0) + size

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def disk_usage(paths: Iterable[Path], seen: set | None = None) -> int:
    """Bytes the files under `paths` use on disk (as du counts them), each file once; links are not followed."""
    seen = set() if seen is None else seen
    total = 0
    for path in paths:
        for file in _files(path):
            with contextlib.suppress(FileNotFoundError):
                st = file.lstat()
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def _files(path: Path) -> Iterator[Path]:
    if path.is_symlink() or not path.is_dir():
        if path.exists() or path.is_symlink():
            yield path
        return
    for folder, dirs, names in os.walk(path):
        base = Path(folder)
        yield from (base / name for name in names)
        yield from (base / d for d in dirs if (base / d).is_symlink())


class Volume:
    def __init__(self, cache: CacheRoot, downloaders: Iterable[Downloader], records: Records, engine: TransferEngine):
        self.cache = cache
        self.root = cache.path
        self.downloaders = {d.source: d for d in downloaders}
        self.records = records
        self.engine = engine

    # -- reading ------------------------------------------------------------------------------------
    def models(self) -> list[CachedModel]:
        return [m for d in self.downloaders.values() for m in d.cached()]

    def model(self, source: str, repo_id: str) -> CachedModel | None:
        found = self.downloaders[source].cached(repo_id)
        return found[0] if found else None

    def size(self, model: CachedModel) -> int:
        return disk_usage(model.dirs)

    def partial_bytes(self) -> int:
        """Bytes of partial downloads: ours and the hub libraries'."""
        ours = sum(leftover.size for leftover in self.engine.leftovers())
        return ours + disk_usage(p.path for m in self.models() for p in m.partials)

    # -- rm -----------------------------------------------------------------------------------------
    def rm(self, source: str, repo_id: str, revision: str | None = None, dry_run: bool = False) -> int:
        """Remove a model (or one revision and the blobs no other revision uses). Returns the bytes freed.
        Raises ModelError when it is not in the cache or another process is downloading it."""
        label = f"{source}:{repo_id}" + (f"@{revision}" if revision else "")
        model = self.model(source, repo_id)
        if model is None and not self.records.refs(source, repo_id):
            raise ModelError(label, f"not in the cache {self.root}.")
        with contextlib.ExitStack() as held:
            if not dry_run:
                self._take(held, source, repo_id, model, label)
                model = self.model(source, repo_id)  # as it is now that nobody else may change it
            if revision is None or model is None:
                return self._rm_model(source, repo_id, model, dry_run)
            target = model.revision(revision)
            if target is None:
                names = ", ".join(_describe(r) for r in model.revisions) or "none"
                raise ModelError(label, f"no such revision in the cache (it has: {names}).")
            others = [r for r in model.revisions if r is not target]
            if not others:
                return self._rm_model(source, repo_id, model, dry_run)
            return self._rm_revisions(model, [target], others, dry_run)

    def _take(self, held: contextlib.ExitStack, source: str, repo_id: str, model: CachedModel | None, label: str):
        """Take the model's lock and every lock of the hub library for it, all without waiting."""
        paths = [self.cache.model_lock(source, repo_id)]
        if model is not None:
            paths += [*model.locks, *(p.lock for p in model.partials if p.lock)]
            now = time.time()
            unlocked = [
                p.path for p in model.partials if p.lock is None and _age(p.path, now) < UNLOCKED_PARTIAL_MIN_AGE
            ]
            if unlocked:
                raise ModelError(label, f"a download may be writing {unlocked[0].name} (modified recently); try later.")
        for i, path in enumerate(dict.fromkeys(paths)):
            lock = Lock(self._inside(path), keep_file=i > 0)  # the hub libraries' lock files stay (prune's job)
            try:
                lock.acquire(blocking=False)
            except LockBusy:
                raise ModelError(
                    label, "another process is downloading it (its lock is held); try again once it is done."
                ) from None
            held.callback(lock.release)

    def _rm_model(self, source: str, repo_id: str, model: CachedModel | None, dry_run: bool) -> int:
        dirs = list(model.dirs) if model else []
        seen: set = set()
        freed = disk_usage([*dirs, self.records.model_dir(source, repo_id)], seen)
        leftovers = [lo for lo in self.engine.leftovers() if lo.dest and any(_under(lo.dest, d) for d in dirs)]
        freed += sum(lo.size for lo in leftovers)
        if not dry_run:
            for leftover in leftovers:
                self.engine.discard(leftover)
            for folder in [*dirs, self.records.model_dir(source, repo_id)]:
                self._remove_tree(folder)
            self._remove_empty_parents(self.records.model_dir(source, repo_id), self.records.dir / "models")
        return freed

    def _rm_revisions(
        self, model: CachedModel, gone: list[CachedRevision], kept: list[CachedRevision], dry_run: bool
    ) -> int:
        used = set().union(*(r.blobs for r in kept))
        blobs = set().union(*(r.blobs for r in gone)) - used
        commits = {r.name for r in gone}
        records = self._records_of(model.source, model.repo_id, commits, {n for r in gone for n in r.refs})
        seen: set = set()
        folders = [path for r in gone for path in (r.path, *r.own_dirs)]
        freed = disk_usage([*folders, *(f for r in gone for f in r.ref_files), *blobs, *records], seen)
        if not dry_run:
            for revision in gone:
                for ref in revision.ref_files:
                    self._unlink(ref)
            for folder in folders:
                self._remove_tree(folder)
            for path in [*blobs, *records]:
                self._unlink(path)
        return freed

    def _records_of(self, source: str, repo_id: str, commits: set[str], names: set[str]) -> list[Path]:
        """Our record files of these revisions: refs named so or pointing at them, and their manifests."""
        refs = self.records.refs(source, repo_id)
        gone = {name for name, (commit, _) in refs.items() if name in names or commit in commits}
        targets = {refs[name][0] for name in gone} | commits
        still = {commit for name, (commit, _) in refs.items() if name not in gone}
        manifests = self.records.manifests(source, repo_id)
        return [refs[name][1] for name in sorted(gone)] + [
            manifests[c] for c in sorted(targets - still) if c in manifests
        ]

    # -- prune --------------------------------------------------------------------------------------
    def prune(self, older_than: float, keep: set[tuple[str, str, str]], dry_run: bool = False) -> Freed:
        """Remove detached Hugging Face revisions (no ref, not in `keep`: (source, repo_id, commit) pinned by a
        lock file or a project), blobs no revision uses, partial files and lock files untouched for
        `older_than` seconds, and our records of what is gone."""
        freed = Freed()
        cutoff = time.time() - older_than
        for model in self.models():
            self._prune_model(model, cutoff, keep, dry_run, freed)
        for leftover in self.engine.leftovers():
            if leftover.touched < cutoff and (dry_run or self.engine.discard(leftover) is not None):
                freed.add(PARTIAL, leftover.size, len(leftover.files))
        self._prune_records(dry_run, freed)
        for folder in (self.cache.state / "locks", *(f for d in self.downloaders.values() for f in d.lock_folders())):
            self._prune_locks(folder, older_than, dry_run, freed)
        return freed

    def _prune_model(
        self, model: CachedModel, cutoff: float, keep: set[tuple[str, str, str]], dry_run: bool, freed: Freed
    ) -> None:
        label = f"{model.source}:{model.repo_id}"
        with contextlib.ExitStack() as held:
            if not dry_run:
                try:
                    self._take(held, model.source, model.repo_id, model, label)
                except ModelError as exc:
                    freed.skipped.append(str(exc))
                    return
                model = self.model(model.source, model.repo_id)
                if model is None:
                    return
            detached = [r for r in model.revisions if not r.refs and (model.source, model.repo_id, r.name) not in keep]
            kept = [r for r in model.revisions if r not in detached]
            if detached:
                freed.add(DETACHED, self._rm_revisions(model, detached, kept, dry_run), len(detached))
            used = set().union(*(r.blobs for r in model.revisions))
            for blob in sorted(model.blobs - used):
                self._remove_old(blob, cutoff, UNREFERENCED, dry_run, freed)
            for partial in model.partials:
                self._remove_old(partial.path, cutoff, PARTIAL, dry_run, freed)

    def _remove_old(self, path: Path, cutoff: float, kind: str, dry_run: bool, freed: Freed) -> None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if st.st_mtime < cutoff:
            if not dry_run:
                self._unlink(path)
            freed.add(kind, st.st_blocks * 512)

    def _prune_records(self, dry_run: bool, freed: Freed) -> None:
        """Our records of revisions whose folder is gone, and of models no longer present."""
        for source, repo_id in self.records.known():
            downloader = self.downloaders.get(source)
            if downloader is None:
                continue

            with contextlib.ExitStack() as held:
                if not dry_run:
                    try:
                        self._take(held, source, repo_id, None, f"{source}:{repo_id}")
                    except ModelError:
                        continue  # being downloaded: its records are about to change anyway
                refs = self.records.refs(source, repo_id)
                present = {commit for name, (commit, _) in refs.items() if _on_disk(downloader, repo_id, name, commit)}
                stale = [
                    path for name, (commit, path) in refs.items() if not _on_disk(downloader, repo_id, name, commit)
                ]
                stale += [
                    path
                    for commit, path in self.records.manifests(source, repo_id).items()
                    if commit not in present and not _on_disk(downloader, repo_id, None, commit)
                ]
                for path in stale:
                    freed.add(RECORDS, disk_usage([path]))
                    if not dry_run:
                        self._unlink(path)
                if not dry_run:
                    self._remove_empty(self.records.model_dir(source, repo_id))
                    self._remove_empty_parents(self.records.model_dir(source, repo_id), self.records.dir / "models")

    def _prune_locks(self, folder: Path, older_than: float, dry_run: bool, freed: Freed) -> None:
        for path in sorted(_files(folder)) if folder.is_dir() else ():
            if path.is_symlink():
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if dry_run:
                if time.time() - st.st_mtime >= older_than:
                    freed.add(LOCKS, st.st_blocks * 512)
            elif remove_if_free(self._inside(path), older_than):
                freed.add(LOCKS, st.st_blocks * 512)
        if not dry_run:
            self._remove_empty(folder, keep_top=True)

    # -- deleting, only inside the cache ------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        return inside(self.root, path)

    def _unlink(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._inside(path).unlink()

    def _remove_tree(self, folder: Path) -> None:
        """Remove `folder` and what it holds, never following a link (a link is removed, not its target)."""
        try:
            folder = self._inside(folder)
        except UnsafePathError:
            return
        if folder.is_symlink() or not folder.is_dir():
            self._unlink(folder)
            return
        for base, dirs, names in os.walk(folder, topdown=False):
            for name in names:
                self._unlink(Path(base) / name)
            for name in dirs:
                path = Path(base) / name
                if path.is_symlink():
                    self._unlink(path)
                else:
                    with contextlib.suppress(OSError):  # not empty: something new appeared; left in place
                        self._inside(path).rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()

    def _remove_empty(self, folder: Path, keep_top: bool = False) -> None:
        if not folder.is_dir() or folder.is_symlink():
            return
        for base, dirs, _ in os.walk(folder, topdown=False):
            for name in dirs:
                with contextlib.suppress(OSError):
                    self._inside(Path(base) / name).rmdir()
        if not keep_top:
            with contextlib.suppress(OSError):
                self._inside(folder).rmdir()

    def _remove_empty_parents(self, folder: Path, stop: Path) -> None:
        for parent in folder.parents:
            if parent == stop or not _under(parent, stop):
                return
            if entries(parent):
                return
            with contextlib.suppress(OSError):
                self._inside(parent).rmdir()


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _age(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _on_disk(downloader: Downloader, repo_id: str, revision: str | None, commit: str) -> bool:
    spec = ModelSpec(downloader.source, repo_id, revision)
    return downloader.model_path(ResolvedModel(spec, commit, ())).is_dir()


def _describe(revision: CachedRevision) -> str:
    refs = [r for r in revision.refs if r != revision.name]
    return revision.name + (f" ({', '.join(refs)})" if refs else "")
