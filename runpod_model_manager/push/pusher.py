"""Push models: download what is not complete locally (with `download`'s engine), then make the store hold
every object of each model, through one pool of workers for all of them. A model is announced (its refs
and completion record uploaded) only once all its files are there, so that a consumer never finds a
revision whose files are still on their way.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from runpod_model_manager.errors import ModelError, TransferError, UserError
from runpod_model_manager.manager import ModelManager
from runpod_model_manager.reporting import Reporter
from runpod_model_manager.specs import ModelSpec
from runpod_model_manager.transfer import Progress

from .plan import ModelObjects, PushObject, model_objects
from .settings import PushSettings
from .store import Store, StoreError, StoreFull
from .target import Target
from .uploader import Outcome, Uploader


@dataclass
class PushResult:
    spec: ModelSpec
    status: str  # "pushed" (objects sent) | "unchanged" (the store held them all) | "planned" (dry run) | "failed"
    commit: str | None = None
    url: str | None = None  # the model's folder in the store
    objects: int = 0
    sent_objects: int = 0
    sent_bytes: int = 0  # bytes this run uploaded (parts sent by an interrupted run are not counted again)
    skipped_objects: int = 0
    skipped_bytes: int = 0
    downloaded_bytes: int = 0  # fetched from the hub first, because the model was not complete locally
    to_send: list[str] = field(default_factory=list)  # dry run: keys it would upload
    to_send_bytes: int = 0
    to_download_bytes: int = 0  # dry run: the model is not complete locally
    error: str | None = None

    def as_json(self) -> dict:
        spec = {"model": self.spec.repo_id, "source": self.spec.source, "revision": self.spec.revision}
        return spec | {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spec"}

    def fail(self, reason: str) -> None:
        self.status = "failed"
        self.error = self.error or reason


@dataclass
class _StoreLacks:
    """A model's objects the store lacks, each with its sha256, and those it holds."""

    files: list[tuple[PushObject, str]] = field(default_factory=list)
    announce: list[tuple[PushObject, str]] = field(default_factory=list)  # after the files
    held: list[PushObject] = field(default_factory=list)


@dataclass
class PushJob:
    result: PushResult
    objects: ModelObjects | None  # None: a dry run of a model that is not complete locally
    store_lacks: _StoreLacks | None = None  # what the store lacks of the model, once asked
    pending: int = 0
    announced: bool = False


class Pusher:
    def __init__(self, manager: ModelManager, store: Store, target: Target, settings: PushSettings):
        self.manager, self.store, self.target, self.settings = manager, store, target, settings

    def prepare(self, specs: list[ModelSpec], dry_run: bool = False) -> list[PushJob]:
        """Download what is missing (a dry run only plans it), and plan every model's objects."""
        jobs = []
        for download in self.manager.download(specs, dry_run=dry_run):
            status = "planned" if dry_run else "pushed"
            result = PushResult(download.spec, status, download.commit, downloaded_bytes=download.transferred_bytes)
            job = PushJob(result, None)
            jobs.append(job)
            if download.status == "failed":
                result.fail(download.error or "download failed")
            elif download.status == "planned":
                result.to_download_bytes = download.missing_bytes
                result.to_send_bytes = download.total_bytes
            else:
                try:
                    job.objects = self._objects(download.spec)
                except ModelError as exc:
                    result.fail(exc.reason)
                    continue
                result.url = self.target.url(job.objects.folder)
        return jobs

    def _objects(self, spec: ModelSpec) -> ModelObjects:
        model, missing, _ = self.manager.local_state(spec)
        if model is None or missing:
            raise ModelError(str(spec), "is not complete in the local cache; run `download-models` for it first.")
        downloader = self.manager.downloader(spec.source)
        return model_objects(model, downloader, self.manager.records, self.manager.cache.path, self.target)

    def _ask_store(self, job: PushJob, uploader: Uploader, pool: ThreadPoolExecutor) -> None:
        """job.store_lacks: what the store lacks of the model (HeadObject, and the sha256 of files the hub gave none
        for); left None when the model is not to be pushed or the store could not be asked (it has failed)."""
        if job.objects is None or job.result.status == "failed":
            return
        objects = [*job.objects.files, *job.objects.announce]
        try:
            held = list(pool.map(uploader.holds, objects))
        except (StoreError, OSError) as exc:
            job.result.fail(str(exc))
            return
        job.result.objects = len(objects)
        files = set(map(id, job.objects.files))
        lacks = _StoreLacks()
        for obj, (same, sha256) in zip(objects, held, strict=True):
            if same:
                job.result.skipped_objects += 1
                job.result.skipped_bytes += obj.size
                lacks.held.append(obj)
            else:
                (lacks.files if id(obj) in files else lacks.announce).append((obj, sha256))
        job.store_lacks = lacks

    # -- dry run --------------------------------------------------------------------------------------
    def plan(self, jobs: list[PushJob]) -> list[PushResult]:
        """What a push would send: every object the store does not hold (HeadObject only)."""
        with self._uploading(Progress()) as (uploader, pool):
            for job in jobs:
                self._ask_store(job, uploader, pool)
                if (lacks := job.store_lacks) is not None:
                    missing = [obj for obj, _ in lacks.files + lacks.announce]
                    job.result.to_send = [obj.key for obj in missing]
                    job.result.to_send_bytes = sum(obj.size for obj in missing)
        return [job.result for job in jobs]

    # -- push -----------------------------------------------------------------------------------------
    def run(self, jobs: list[PushJob], progress: Reporter) -> list[PushResult]:
        owner: dict[Future, tuple[PushJob, PushObject]] = {}
        finished: queue.SimpleQueue[Future] = queue.SimpleQueue()  # each future once, when done
        with self._uploading(progress) as (uploader, pool):
            try:
                uploader.list_stale(self.target.prefix + "/")
            except StoreError as exc:
                progress.warn(f"could not list the multipart uploads in progress ({exc}); old ones are not aborted")
            for job in jobs:
                self._ask_store(job, uploader, pool)
            lacking = [job.store_lacks for job in jobs if job.store_lacks is not None]
            sending = [sent for lacks in lacking for sent in lacks.files + lacks.announce]
            progress.planned(len(sending), sum(obj.size for obj, _ in sending))
            for obj in (obj for lacks in lacking for obj in lacks.held):
                uploader.skip(obj)

            def submit(job: PushJob, objects: list[tuple[PushObject, str]]) -> None:
                job.pending = len(objects)
                for obj, sha256 in objects:
                    future = pool.submit(uploader.send, obj, sha256)
                    owner[future] = (job, obj)
                    future.add_done_callback(finished.put)

            def advance(job: PushJob) -> None:
                """After the model's files: its announcement; after that, nothing."""
                while job.pending == 0 and not job.announced and job.result.status != "failed":
                    job.announced = True
                    submit(job, job.store_lacks.announce)

            for job in jobs:
                if job.store_lacks is not None and job.result.status != "failed":
                    submit(job, job.store_lacks.files)
                    advance(job)
            while owner:
                # a queue, not concurrent.futures.wait: a Ctrl-C inside wait() can leave futures' locks held, and
                # the workers then hang; waiting on all the futures in flight each time also costs O(objects^2)
                future = finished.get()
                job, obj = owner.pop(future)
                self._account(job.result, obj, future)
                job.pending -= 1
                advance(job)
        for job in jobs:
            if job.result.status != "failed":
                job.result.status = "pushed" if job.result.sent_objects else "unchanged"
        return [job.result for job in jobs]

    def _account(self, result: PushResult, obj: PushObject, future: Future) -> None:
        try:
            outcome: Outcome = future.result()
        except StoreFull as exc:
            raise UserError(
                f"the volume is full ({exc}): make it larger in the RunPod console, then run the same command "
                "again (objects already there are kept, partial uploads resume)."
            ) from None
        except (TransferError, StoreError, OSError) as exc:
            result.fail(str(exc) if obj.label in str(exc) else f"{obj.label}: {exc}")
            return
        except Exception as exc:  # a bug must fail this model, not the whole run
            result.fail(f"{obj.label}: unexpected {type(exc).__name__}: {exc}")
            return
        result.sent_objects += 1
        result.sent_bytes += outcome.sent

    @contextlib.contextmanager
    def _uploading(self, progress: Progress) -> Iterator[tuple[Uploader, ThreadPoolExecutor]]:
        """An uploader, and workers for objects. Whatever ends the block (Ctrl-C too), the store's requests in
        flight are ended before the workers are waited for."""
        cache = self.manager.cache
        uploader = Uploader(self.store, self.settings, progress, cache.state, cache.path)
        pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="push")
        try:
            yield uploader, pool
        except BaseException:
            uploader.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            uploader.close()
