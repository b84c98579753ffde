"""One object at a time: skip it when the store already holds the same bytes, else upload it (one PutObject,
or a multipart upload that a later run resumes), then check with HeadObject that the store shows it.

- Same bytes: the same size and our sha256 in the object's metadata (x-amz-meta-sha256). Where a store keeps
  no user metadata, the ETag decides instead: the MD5 of the file, or of its parts for a multipart upload.
- Resume: a multipart upload in progress is recorded in <state>/push/ (upload ID, the file's sha256, part
  size) before its first part; the next run asks the store which parts it holds (ListParts) and sends only
  the others. Uploads in progress for a key that then holds the right object are aborted (the run lists them
  once, with ListMultipartUploads).
- Verified: the local bytes are hashed while they are sent and must match the hub's sha256 before the upload
  is completed; after it, HeadObject must show the object with its size and sha256 (a store may answer
  success and show nothing yet): asked again with growing waits, then uploaded again, then reported.
- Bounded memory: request bodies are read from disk while they are sent (FileRange).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from runpod_model_manager.checksums import BLOCK, file_digest
from runpod_model_manager.errors import TransferError
from runpod_model_manager.layout import atomic_write_text, inside
from runpod_model_manager.reporting import human_bytes
from runpod_model_manager.transfer import Progress

from .plan import PushObject
from .settings import MAX_PARTS, PART_LIMIT, PushSettings
from .store import RemoteObject, Stopped, Store, StoreError, StoreFull

_REPAIR = "run `download-models verify --repair`, then push again"


@dataclass(frozen=True)
class Part:
    number: int  # 1-based, as S3 counts
    offset: int
    length: int


def part_layout(size: int, part_size: int) -> list[Part]:
    """Parts of `part_size` bytes, larger where the file would otherwise need more than 10,000."""
    step = max(part_size, -(-size // MAX_PARTS))
    if step > PART_LIMIT:
        raise TransferError(f"{human_bytes(size)} is more than {MAX_PARTS} parts of {human_bytes(PART_LIMIT)} allow")
    return [Part(n, offset, min(step, size - offset)) for n, offset in enumerate(range(0, size, step), start=1)]


class FileRange:
    """`length` bytes of an open file from `offset`, as a file object: read from disk while the request body
    is sent (memory stays bounded), and rewound by botocore for a retry."""

    def __init__(self, fd: int, offset: int, length: int):
        self.fd, self.offset, self.length, self.position = fd, offset, length, 0

    def read(self, size: int | None = -1) -> bytes:
        left = self.length - self.position
        size = left if size is None or size < 0 else min(size, left)
        data = os.pread(self.fd, size, self.offset + self.position) if size else b""
        if len(data) < size:
            raise OSError(f"the local file ended {size - len(data)} bytes early while it was being uploaded")
        self.position += len(data)
        return data

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.length}[whence]
        self.position = min(max(0, base + position), self.length)
        return self.position

    def tell(self) -> int:
        return self.position


@dataclass
class Outcome:
    sent: int = 0  # body bytes this run uploaded for the object (parts of earlier runs not counted)
    started: bool = False  # its progress was announced (once, whatever the attempts)


class _Cancelled(Exception):
    """Another part of the same file failed, or the run is stopping: this part is not sent."""


class Uploader:
    def __init__(self, store: Store, settings: PushSettings, progress: Progress, state_dir: Path, cache_root: Path):
        self.store, self.settings, self.progress = store, settings, progress
        self.records = Path(state_dir) / "push"
        self.cache_root = cache_root
        self.stale: dict[str, list[str]] = {}  # key -> multipart uploads in progress when the run started
        self._parts = ThreadPoolExecutor(settings.connections, thread_name_prefix="push-part")
        self._hashers = ThreadPoolExecutor(settings.workers, thread_name_prefix="push-hash")

    def close(self) -> None:
        self.stop()
        self._parts.shutdown(wait=True, cancel_futures=True)
        self._hashers.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        """The store's requests in flight end and no new one starts (Ctrl-C, a full volume); multipart uploads
        stay resumable."""
        self.store.stop()

    def list_stale(self, prefix: str) -> None:
        self.stale = self.store.uploads(prefix)

    # -- one object -----------------------------------------------------------------------------------
    def holds(self, obj: PushObject) -> tuple[bool, str]:
        """(whether the store already holds `obj`, the sha256 of its bytes)."""
        sha256 = obj.sha256 or _sha256(obj.path)
        return self._same(self.store.head(obj.key), obj, sha256), sha256

    def skip(self, obj: PushObject) -> None:
        """The store holds `obj` already: multipart uploads of it that earlier runs left are no longer needed."""
        self._abort_stale(obj.key)

    def send(self, obj: PushObject, sha256: str) -> Outcome:
        """Make the object at `obj.key` hold the bytes of `obj.path` (whose sha256 `holds` gave)."""
        outcome = Outcome()
        problem = ""
        for attempt in range(self.settings.file_attempts):
            if attempt:
                self._pause(attempt)
                if self._same(self.store.head(obj.key), obj, sha256):  # a lost answer hid a success
                    break
            try:
                self._upload(obj, sha256, outcome)
            except StoreError as exc:
                if isinstance(exc, StoreFull) or not exc.retryable:
                    raise
                problem = str(exc)
                self.progress.note(f"{obj.label}: {problem}; trying again")
                continue
            problem = self._verify(obj, sha256)
            if not problem:
                break
            self.progress.note(f"{obj.label}: {problem}; uploading it again")
        else:
            raise TransferError(f"{obj.label}: {problem} (gave up after {self.settings.file_attempts} attempts)")
        self._abort_stale(obj.key)
        self.progress.file_done(obj.label, outcome.sent)
        return outcome

    def _same(self, remote: RemoteObject | None, obj: PushObject, sha256: str) -> bool:
        if remote is None or remote.size != obj.size:
            return False
        if remote.sha256 is not None:
            return remote.sha256 == sha256
        return remote.etag in _etags(obj.path, obj.size, self.settings.put_max, self.settings.part_size)

    def _verify(self, obj: PushObject, sha256: str) -> str:
        """'' when HeadObject shows the object as uploaded, else what it shows instead."""
        wait = self.settings.verify_wait
        for check in range(self.settings.verify_checks):
            remote = self.store.head(obj.key)
            if self._same(remote, obj, sha256):
                return ""
            if check + 1 < self.settings.verify_checks:
                self.store.stopping.wait(wait)
                wait *= 2
        if remote is None:
            return "the store accepted it, but HeadObject does not show it"
        return f"the store accepted it, but HeadObject shows {remote.size} bytes with sha256 {remote.sha256}"

    def _upload(self, obj: PushObject, sha256: str, outcome: Outcome) -> None:
        if obj.size >= self.settings.put_max:
            self._multipart(obj, sha256, outcome, checked=obj.sha256 is None)
            return
        if obj.sha256 is not None:  # the local bytes must be what the hub published before they are sent
            _check_local(obj, _sha256(obj.path))
        self._started(obj, outcome, 0)
        with _opened(obj.path) as fd:
            try:
                self.store.put(obj.key, FileRange(fd, 0, obj.size), obj.size, sha256)
            except StoreError as exc:
                if exc.code != "EntityTooLarge":
                    raise
                self.progress.note(f"{obj.label}: the store refused {human_bytes(obj.size)} in one request; in parts")
                self._multipart(obj, sha256, outcome, checked=True)
                return
        self.progress.advance(obj.label, obj.size)
        outcome.sent += obj.size

    def _started(self, obj: PushObject, outcome: Outcome, already: int) -> None:
        if not outcome.started:
            outcome.started = True
            self.progress.file_started(obj.label, obj.size, already)

    # -- multipart ------------------------------------------------------------------------------------
    def _multipart(self, obj: PushObject, sha256: str, outcome: Outcome, checked: bool) -> None:
        layout = part_layout(obj.size, self.settings.part_size)
        record = self._record_path(obj.key)
        upload_id, done = self._resume(record, obj, sha256, layout)
        if upload_id is None:
            upload_id = self.store.create(obj.key, sha256)
            record_text = json.dumps(self._record(obj, sha256, layout) | {"upload_id": upload_id})
            atomic_write_text(record, record_text, durable=False)
        self._started(obj, outcome, sum(p.length for p in layout if p.number in done))
        hashing = None if checked else self._hashers.submit(_sha256, obj.path)
        try:
            etags = dict(done) | self._send_parts(obj, upload_id, [p for p in layout if p.number not in done], outcome)
            if hashing is not None:
                _check_local(obj, hashing.result())
        except TransferError:  # the local file is not what the hub published: this upload must never complete
            self._forget(record, obj.key, upload_id)
            raise
        finally:
            if hashing is not None:
                hashing.cancel()
        self._complete(obj, sha256, upload_id, etags, record)

    def _send_parts(self, obj: PushObject, upload_id: str, parts: list[Part], outcome: Outcome) -> dict[int, str]:
        """Send `parts` in parallel (the shared part pool); the first failure stops the parts not started."""
        cancel = threading.Event()
        etags: dict[int, str] = {}
        failure: BaseException | None = None
        with _opened(obj.path) as fd:
            futures: dict[Future, Part] = {
                self._parts.submit(self._send_part, obj, upload_id, fd, part, cancel): part for part in parts
            }
            for future in as_completed(futures):  # every one, so that none still reads `fd` when it closes
                part = futures[future]
                try:
                    etags[part.number] = future.result()
                    outcome.sent += part.length
                except BaseException as exc:
                    cancel.set()
                    if failure is None or isinstance(failure, _Cancelled):
                        failure = exc
        if failure is not None:
            raise Stopped() if isinstance(failure, _Cancelled) else failure
        return etags

    def _send_part(self, obj: PushObject, upload_id: str, fd: int, part: Part, cancel: threading.Event) -> str:
        if cancel.is_set() or self.store.stopping.is_set():
            raise _Cancelled()
        etag = self.store.upload_part(
            obj.key, upload_id, part.number, FileRange(fd, part.offset, part.length), part.length
        )
        self.progress.advance(obj.label, part.length)
        return etag

    def _complete(self, obj: PushObject, sha256: str, upload_id: str, etags: dict[int, str], record: Path) -> None:
        try:
            self.store.complete(obj.key, upload_id, etags)
        except StoreError as exc:
            gone = exc.status == 404 or exc.code == "NoSuchUpload"
            # The answer can be lost while the store still assembles the file (a timeout, a 502), and the retry
            # of an upload that did complete answers NoSuchUpload: what HeadObject shows decides.
            if (exc.retryable or gone) and not self._verify(obj, sha256):
                record.unlink(missing_ok=True)
                return
            if not gone and exc.retryable:
                raise  # the next attempt completes the same upload
            self._forget(record, obj.key, upload_id)  # refused or gone: the next attempt starts a new upload
            raise StoreError(str(exc), exc.status, exc.code, retryable=True) from None
        record.unlink(missing_ok=True)

    def _resume(self, record: Path, obj: PushObject, sha256: str, layout: list[Part]) -> tuple[str | None, dict]:
        """(upload ID, {part number: ETag} the store holds) of this file's upload in progress, if any."""
        try:
            data = json.loads(record.read_text())
            upload_id = data.pop("upload_id")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, {}
        if data != self._record(obj, sha256, layout) or not isinstance(upload_id, str):
            record.unlink(missing_ok=True)  # another version of the file: its upload is aborted once this one is done
            return None, {}
        held = self.store.parts(obj.key, upload_id)
        if held is None:
            record.unlink(missing_ok=True)
            return None, {}
        sizes = {p.number: p.length for p in layout}
        return upload_id, {n: etag for n, (size, etag) in held.items() if sizes.get(n) == size}

    def _record(self, obj: PushObject, sha256: str, layout: list[Part]) -> dict:
        return {
            "endpoint": self.store.endpoint,
            "bucket": self.store.bucket,
            "key": obj.key,
            "size": obj.size,
            "sha256": sha256,
            "part_size": layout[0].length,
        }

    def _record_path(self, key: str) -> Path:
        name = hashlib.sha256(f"{self.store.endpoint}\n{self.store.bucket}\n{key}".encode()).hexdigest()[:40]
        return inside(self.cache_root, self.records / f"{name}.json")

    def _forget(self, record: Path, key: str, upload_id: str) -> None:
        record.unlink(missing_ok=True)
        with contextlib.suppress(StoreError):
            self.store.abort(key, upload_id)

    def _abort_stale(self, key: str) -> None:
        for upload_id in self.stale.pop(key, []):
            try:
                self.store.abort(key, upload_id)
            except StoreError as exc:
                self.progress.note(f"{key}: could not abort an old multipart upload ({exc})")

    def _pause(self, attempt: int) -> None:
        if self.store.stopping.wait(self.settings.verify_wait * 2**attempt):
            raise Stopped()


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256:").partition(":")[2]


def _check_local(obj: PushObject, actual: str) -> None:
    if obj.sha256 is not None and actual != obj.sha256:
        raise TransferError(f"{obj.label}: the local file does not match the hub's sha256 {obj.sha256}; {_REPAIR}")


@contextlib.contextmanager
def _opened(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=256)
def _etags(path: Path, size: int, put_max: int, part_size: int) -> frozenset[str]:
    """The ETags a store may show for this file: the MD5 of its bytes, and for a file uploaded in parts the
    MD5 of the parts' MD5s with their count (as S3 computes it). Only read where a store keeps no metadata."""
    whole, digests = hashlib.md5(usedforsecurity=False), []
    layout = part_layout(size, part_size) if size >= put_max else [Part(1, 0, size)]
    with open(path, "rb") as f:
        for part in layout:
            h, left = hashlib.md5(usedforsecurity=False), part.length
            while left and (chunk := f.read(min(BLOCK, left))):
                h.update(chunk)
                whole.update(chunk)
                left -= len(chunk)
            digests.append(h.digest())
    found = {whole.hexdigest()}
    if size >= put_max:
        found.add(f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}")
    return frozenset(found)
