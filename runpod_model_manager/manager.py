"""Download orchestration: resolve specs to commits, plan the missing files, fetch them all through one
worker pool, then expose each model in its native layout and record it as complete."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runpod_model_manager import remote, validate
from runpod_model_manager.cache import CacheRoot
from runpod_model_manager.cancel import Cancel
from runpod_model_manager.checksums import file_digest
from runpod_model_manager.deadline import cancelled_by
from runpod_model_manager.errors import ModelError, TransferError, UserError
from runpod_model_manager.layout import UnsafePathError, inside
from runpod_model_manager.lockfile import LockFile
from runpod_model_manager.locks import Lock, stale_after
from runpod_model_manager.records import Records
from runpod_model_manager.remote import MalformedMetadata, RemoteFile, ResolvedModel
from runpod_model_manager.reporting import human_bytes
from runpod_model_manager.settings import MetadataLimits
from runpod_model_manager.source import Downloader
from runpod_model_manager.specs import ModelSpec
from runpod_model_manager.timings import PhaseTimes
from runpod_model_manager.transfer import DiskFullError, EngineSettings, FileBusy, Progress, Transfer, TransferEngine

RESOLVE_WORKERS = 8
# requests at once across all files when the worker count adapts: each request of a small file mostly waits
# for the hub's latency, so many in flight pay off; a large file already opens several connections
MAX_IN_FLIGHT = 64


@dataclass
class ModelResult:
    spec: ModelSpec
    status: str  # "complete" (nothing to do) | "downloaded" | "planned" (dry run) | "failed"
    commit: str | None = None
    files: int = 0
    total_bytes: int = 0
    transferred_bytes: int = 0
    missing_files: list[str] = field(default_factory=list)  # to download (dry run), else not there after the run
    missing_bytes: int = 0
    downloaded_files: list[str] = field(default_factory=list)
    path: str | None = None
    error: str | None = None

    def as_json(self) -> dict:
        return {
            "model": self.spec.repo_id,
            "source": self.spec.source,
            "revision": self.spec.revision,
            "commit": self.commit,
            "status": self.status,
            "files": self.files,
            "total_bytes": self.total_bytes,
            "transferred_bytes": self.transferred_bytes,
            "missing_files": self.missing_files,
            "missing_bytes": self.missing_bytes,
            "downloaded_files": self.downloaded_files,
            "path": self.path,
            "error": self.error,
        }


@dataclass
class _Job:
    model: ResolvedModel
    downloader: Downloader
    result: ModelResult
    pending: int = 0
    paths: dict[int, str] = field(default_factory=dict)  # id(transfer) -> repo path of the file
    failed: set[str] = field(default_factory=set)  # repo paths whose transfer failed


class ModelManager:
    def __init__(
        self,
        cache: CacheRoot,
        sources: Callable[[str], type[Downloader]],
        *,
        token: str | None = None,
        lock: LockFile | None = None,
        frozen: bool = False,
        settings: EngineSettings | None = None,
        progress: Progress | None = None,
        workers: int | None = None,  # files at once; None: adapt to the files (adaptive_workers)
    ):
        self.cache = cache
        self.sources = sources  # source name -> Downloader class (downloaders.factory.get_downloader_class)
        self.token = _checked_token(token, "--token") if token else None
        self.lock = lock
        self.frozen = frozen
        self.settings = settings or EngineSettings()
        self.progress = progress or Progress()
        self.workers = workers
        self.limits = MetadataLimits()
        self.records = Records(cache.state)
        stale_after()  # a bad RPMM_LOCK_STALE stops the run here, not in a worker
        self.times = PhaseTimes()  # where the time per file went (-v)
        self._downloaders: dict[str, Downloader] = {}
        self._replace: set = set()  # files present but outdated: fetched again and swapped atomically

    # -- sources ------------------------------------------------------------------------------------
    def downloader(self, source: str) -> Downloader:
        if source not in self._downloaders:
            cls = self.sources(source)
            token = self.token or _token_from_env(cls)
            self._downloaders[source] = cls(self.cache.path, token, self.limits)
        return self._downloaders[source]

    def resolve(self, spec: ModelSpec, exact: bool = False) -> ResolvedModel:
        """The commit to fetch: from the lock file when it pins the spec, else from the hub."""
        downloader = self.downloader(spec.source)
        model = self.lock.pinned(spec, downloader.file_url) if self.lock else None
        if model is None and self.frozen:
            raise ModelError(str(spec), "not in the lock file; run `download-models lock` (--frozen resolves nothing).")
        if model is not None:
            return model  # checked, with the line of any bad value, when the lock file was read
        try:
            return remote.check(downloader.resolve(spec, exact))
        except (MalformedMetadata, validate.InvalidValue) as exc:
            raise ModelError(str(spec), f"the hub sent malformed metadata for {spec.repo_id} ({exc}).") from None

    def resolve_all(self, specs: list[ModelSpec], exact: bool = False) -> list[ResolvedModel | ModelError]:
        cancel = Cancel()

        def one(spec: ModelSpec) -> ResolvedModel | ModelError:
            try:
                with cancelled_by(cancel):
                    return self.resolve(spec, exact)
            except ModelError as exc:
                return exc
            except UserError as exc:
                return ModelError(str(spec), str(exc))
            except Exception as exc:  # a bug must fail this model, not the whole run
                return ModelError(str(spec), f"unexpected {type(exc).__name__}: {exc}")

        pool = ThreadPoolExecutor(max_workers=RESOLVE_WORKERS)
        try:
            return list(pool.map(one, specs))
        except BaseException:  # Ctrl-C: the requests in flight end now, the models not yet started never start
            cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- status, offline ----------------------------------------------------------------------------
    def local_state(self, spec: ModelSpec) -> tuple[ResolvedModel | None, list[str], int]:
        """(known revision, missing files, bytes on disk) from the lock file or our records, no network."""
        downloader = self.downloader(spec.source)
        model = self.lock.pinned(spec, downloader.file_url) if self.lock else None
        if model is None:
            commit = self.records.commit_for(spec, downloader.default_revision)
            model = self.records.manifest(spec, commit) if commit else None
        if model is None:
            return None, [], 0
        missing, present = self._missing(downloader, model)
        return model, [f.path for f in missing], present

    def _corrupt(self, downloader: Downloader, model: ResolvedModel, skip: set[str]) -> list[RemoteFile]:
        """Selected files outside `skip` whose bytes on disk do not match the hub's checksum."""
        found = []
        for file in model.selected:
            if file.checksum and file.path not in skip:
                try:
                    blob = inside(self.cache.path, downloader.blob_path(model, file))
                except UnsafePathError:  # never read through; the engine refuses to write there too
                    continue
                try:
                    good = file_digest(blob, file.checksum) == file.checksum
                except OSError:  # gone or unreadable: fetched again
                    good = False
                if not good:
                    found.append(file)
        return found

    def _missing(self, downloader: Downloader, model: ResolvedModel):
        missing, present_bytes = [], 0
        root = downloader.model_path(model)
        for file in model.selected:
            try:
                ok = (root / file.path).stat().st_size == file.size
            except OSError:
                ok = False
            if ok:
                present_bytes += file.size
            else:
                missing.append(file)
        return missing, present_bytes

    # -- download -----------------------------------------------------------------------------------
    def download(
        self, specs: Iterable[ModelSpec], *, dry_run: bool = False, force: bool = False, verify: bool = False
    ) -> list[ModelResult]:
        """Fetch what is missing. `verify` re-hashes the files already on disk first and fetches again those
        whose bytes do not match the hub's checksum."""
        specs = list(dict.fromkeys(specs))
        results: list[ModelResult] = []
        jobs: list[_Job] = []
        for spec, resolved in zip(specs, self.resolve_all(specs), strict=True):
            if isinstance(resolved, ModelError):
                results.append(ModelResult(spec, "failed", error=resolved.reason))
                continue
            downloader = self.downloader(spec.source)
            selected = resolved.selected
            result = ModelResult(
                spec,
                "complete",
                commit=resolved.commit,
                files=len(selected),
                total_bytes=sum(f.size for f in selected),
                path=str(downloader.model_path(resolved)),
            )
            if not selected:
                result.status, result.error = "failed", "no file of this revision matches the include/exclude patterns."
            results.append(result)
            if result.status != "failed":
                jobs.append(_Job(resolved, downloader, result))

        engine = TransferEngine(self.cache.state, self.settings, self.progress, times=self.times)
        if dry_run:
            plans = {id(job): self._plan(job, engine, force, verify) for job in jobs}
            for job in jobs:
                job.result.status = "planned" if plans[id(job)] else "complete"
            return results
        with self._shared_model_locks(jobs):  # `rm` and `prune` wait until this run is done with them
            plans = {id(job): self._plan(job, engine, force, verify) for job in jobs}
            self._check_space(engine, [t for ts in plans.values() for t in ts])
            self.progress.planned(sum(map(len, plans.values())), sum(job.result.missing_bytes for job in jobs))
            self._run(jobs, plans, engine, force)
            for job in jobs:
                self._settle(job)
        self._clean_up(engine, jobs)
        return results

    @contextlib.contextmanager
    def _shared_model_locks(self, jobs: list[_Job]):
        with contextlib.ExitStack() as held:
            for source, repo_id in sorted({(job.model.spec.source, job.model.spec.repo_id) for job in jobs}):
                lock = Lock(self.cache.model_lock(source, repo_id), shared=True)
                lock.acquire()
                held.callback(lock.release)
            yield

    def _plan(self, job: _Job, engine: TransferEngine, force: bool, verify: bool) -> list[Transfer]:
        if force:
            missing = list(job.model.selected)
        else:
            missing = self._missing(job.downloader, job.model)[0]
            absent = {f.path for f in missing}
            changed = self._changed_in_place(job, absent)
            if verify:
                changed += self._corrupt(job.downloader, job.model, absent | {f.path for f in changed})
            self._replace |= {job.downloader.blob_path(job.model, f) for f in changed}
            missing += changed
        headers = job.downloader.request_headers()
        transfers, planned = [], set()
        for file in missing:
            dest = job.downloader.blob_path(job.model, file)
            if dest in planned:  # the same content under two names (one Hugging Face blob): fetched once
                continue
            planned.add(dest)
            transfers.append(
                Transfer(file.url, dest, file.size, file.checksum, f"{job.model.spec.repo_id}: {file.path}", headers)
            )
            job.paths[id(transfers[-1])] = file.path
        job.result.missing_files = [f.path for f in missing]
        job.result.missing_bytes = sum(t.size for t in transfers) - engine.resumable_bytes(transfers)
        return transfers

    def _changed_in_place(self, job: _Job, already: set[str]) -> list[RemoteFile]:
        """Files whose content changed since this revision was last recorded, at the same path.

        Only possible where a layout is keyed by revision name (ModelScope's snapshots/master): a branch
        that moved on can change a file and keep its size, so size alone would call the old one complete.
        The record is compared even under the same "commit", which for such a source may be the branch name.
        """
        spec, downloader = job.model.spec, job.downloader
        previous_commit = self.records.commit_for(spec, downloader.default_revision)
        if previous_commit is None:
            return []
        previous = self.records.manifest(spec, previous_commit)
        if previous is None:
            return []
        before = {f.path: f.checksum for f in previous.files}
        return [
            f
            for f in job.model.selected
            if f.path in before
            and before[f.path] != f.checksum
            and f.path not in already
            and downloader.blob_path(job.model, f) == downloader.blob_path(previous, f)
        ]

    def _check_space(self, engine: TransferEngine, transfers: list[Transfer]) -> None:
        needed = sum(t.size for t in transfers) - engine.reserved_bytes(transfers)
        if not needed:
            return
        free = shutil.disk_usage(self.cache.path).free
        if needed > free:
            raise UserError(
                f"not enough disk space in {self.cache.path}: the download needs {human_bytes(needed)} "
                f"but only {human_bytes(free)} is free; free up space or use a larger volume (nothing was written)."
            )

    def _run(self, jobs: list[_Job], plans: dict[int, list[Transfer]], engine: TransferEngine, force: bool) -> None:
        owner: dict[Future, tuple[Transfer, _Job]] = {}
        finished: queue.SimpleQueue[tuple[Future, float]] = queue.SimpleQueue()  # each future once, when done
        deferred: list[tuple[Transfer, _Job]] = []
        workers = self.workers or adaptive_workers([engine.connections_for(t) for ts in plans.values() for t in ts])
        with ThreadPoolExecutor(max_workers=workers) as pool, engine.stop_on_error():

            def submit(t: Transfer, job: _Job, wait_for_lock: bool) -> None:
                future = pool.submit(self._fetch, engine, t, wait_for_lock, force)
                owner[future] = (t, job)
                future.add_done_callback(lambda f: finished.put((f, time.perf_counter())))

            for job in jobs:
                job.pending = len(plans[id(job)])
                if not job.pending:
                    self._complete(job)
                for t in plans[id(job)]:
                    submit(t, job, False)
            while owner or deferred:
                if not owner:  # what other processes held: wait for their locks now
                    for t, job in deferred:
                        submit(t, job, True)
                    deferred.clear()
                # one hand-off per file: waiting on all the futures in flight each time costs O(files^2)
                future, done_at = finished.get()
                self.times.lap("hand-off", done_at)
                t, job = owner.pop(future)
                try:
                    job.result.transferred_bytes += future.result()
                except FileBusy:
                    self.progress.note(f"{t.label}: another process is downloading it; waiting for it")
                    deferred.append((t, job))
                    continue
                except DiskFullError as exc:
                    for f in owner:
                        f.cancel()
                    raise UserError(
                        f"{exc.strerror}: free up space on {self.cache.path}, then run again "
                        "(finished files are kept and partial ones resume)."
                    ) from None
                except (TransferError, OSError) as exc:
                    job.result.status = "failed"
                    job.result.error = job.result.error or str(exc)
                    job.failed.add(job.paths[id(t)])
                except Exception as exc:  # a bug must fail this model, not the whole run
                    job.result.status = "failed"
                    job.result.error = job.result.error or f"{t.label}: unexpected {type(exc).__name__}: {exc}"
                    job.failed.add(job.paths[id(t)])
                job.pending -= 1
                if job.pending == 0 and job.result.status != "failed":
                    self._complete(job)

    def _settle(self, job: _Job) -> None:
        """After the run: what was fetched, and what is still missing."""
        planned = job.result.missing_files
        still = job.failed | {f.path for f in self._missing(job.downloader, job.model)[0]}
        job.result.downloaded_files = [p for p in planned if p not in still]
        job.result.missing_files = [f.path for f in job.model.selected if f.path in still]

    def _clean_up(self, engine: TransferEngine, jobs: list[_Job]) -> None:
        """Remove partial downloads nobody holds that are too old (RPMM_PARTIAL_MAX_AGE), or that were for a
        model this run completed and no longer match any file the hub publishes for it."""
        leftovers = engine.leftovers()
        if not leftovers:
            return
        oldest = time.time() - self.settings.partial_max_age
        done = [job for job in jobs if job.result.status != "failed"]
        for leftover in leftovers:
            if leftover.touched < oldest or any(self._superseded(job, leftover.dest) for job in done):
                engine.discard(leftover)

    @staticmethod
    def _superseded(job: _Job, dest: Path | None) -> bool:
        """`dest` is a file of this model's layout that its resolved commit does not publish."""
        if dest is None:
            return False
        downloader, model = job.downloader, job.model
        published = {downloader.blob_path(model, f) for f in model.files}
        folders = {p.parent for p in published} | {downloader.model_path(model)}
        return dest not in published and any(f == dest.parent or f in dest.parents for f in folders)

    def _fetch(self, engine: TransferEngine, t: Transfer, wait_for_lock: bool, force: bool) -> int:
        return engine.fetch(t, wait=wait_for_lock, force=force or t.dest in self._replace)

    def _complete(self, job: _Job) -> None:
        try:
            lap = time.perf_counter()
            job.downloader.link(job.model, job.model.selected)
            lap = self.times.lap("link", lap)
            self.records.record(job.model, job.downloader.default_revision)
            self.times.lap("records", lap)
        except (OSError, UnsafePathError) as exc:
            job.result.status, job.result.error = "failed", f"could not write the cache layout: {exc}"
            return
        if job.result.transferred_bytes or job.result.missing_files:
            job.result.status = "downloaded"


def adaptive_workers(connections: list[int]) -> int:
    """Files to fetch at once, given the connections each file to fetch opens: as many as keep about
    MAX_IN_FLIGHT requests in flight (64 small files at once, one or a few large ones)."""
    if not connections:
        return 1
    average = sum(connections) / len(connections)
    return max(1, min(len(connections), round(MAX_IN_FLIGHT / average)))


def _token_from_env(cls: type[Downloader]) -> str | None:
    name = next((v for v in cls.token_env if os.environ.get(v)), None)
    return _checked_token(os.environ[name], name) if name else None


def _checked_token(token: str, name: str) -> str:
    try:
        return validate.token(token, name)
    except validate.InvalidValue as exc:
        raise UserError(f"{exc}; check it.") from None
