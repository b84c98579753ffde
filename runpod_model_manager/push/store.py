"""The S3 client `push` talks through: boto3 set up for S3-compatible stores, errors turned into ours.

What RunPod's S3 API (https://docs.runpod.io/storage/s3-api) asks for, and what is done here:
- path-style addressing, the datacenter as region, credentials from the standard AWS chain (never printed:
  every message passes through `redact`);
- no CRC checksums on requests or responses unless an operation requires them: recent boto3 sends them by
  default and several S3-compatible stores refuse them;
- standard retries with 10 attempts (RunPod answers 502 at times), and a long read timeout for
  CompleteMultipartUpload, which assembles the file on the volume and can take minutes for large files;
  botocore stops retrying once its retry quota is spent (many errors in a row): a request that fails for
  a reason that may pass is then tried again here, a few times, with growing waits;
- only the operations RunPod implements: HeadBucket, HeadObject, PutObject, the multipart operations;
  never DeleteObjects or presigned URLs.

`stop()` (Ctrl-C, a full volume) ends the requests in flight at once: their sockets are shut down
(connections.py), botocore is kept from retrying them, and no request starts after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runpod_model_manager.cancel import Cancel
from runpod_model_manager.deadline import Deadline, cancelled_by
from runpod_model_manager.errors import UserError

from .settings import PushSettings
from .target import Target

INSTALL_HINT = 'push needs boto3, which is not installed: pip install ".[s3]"'
_RETRYABLE_CODES = {"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeTooSkewed"}
_FULL_CODES = {"InsufficientStorage", "QuotaExceeded", "StorageFull"}
ATTEMPTS = 5  # of a request that still failed after botocore's retries


class StoreError(Exception):
    """A request failed after botocore's retries. `retryable`: another attempt later may succeed."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.status, self.code, self.retryable = status, code, retryable


class Stopped(StoreError):
    """The push is stopping: the request was not sent, or its wait was ended."""

    def __init__(self) -> None:
        super().__init__("stopped")


class StoreFull(StoreError):
    """The volume has no space left (HTTP 507): every other upload would fail too, so the run stops."""


@dataclass(frozen=True)
class RemoteObject:
    size: int
    sha256: str | None  # our x-amz-meta-sha256; None where the store keeps no user metadata
    etag: str  # without quotes


class Store:
    def __init__(self, target: Target, settings: PushSettings):
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError

            from .connections import watch_connections
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        self.stopping = Cancel()
        self.bucket = target.bucket
        session = boto3.session.Session()
        try:
            credentials = session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials else None
        except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
            raise UserError(f"cannot read the S3 credentials: {exc}") from None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise UserError(
                "no S3 credentials: set AWS_ACCESS_KEY_ID (the RunPod S3 API key's access key, user_...) and "
                "AWS_SECRET_ACCESS_KEY (its secret, rps_...), or AWS_PROFILE; see DEPLOYMENT.md."
            )
        self._secrets = tuple(s for s in (frozen.access_key, frozen.secret_key, frozen.token) if s)
        self._backoff = settings.backoff
        config = Config(
            region_name=target.region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": settings.attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=settings.workers + settings.connections + 2,
            tcp_keepalive=True,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client = session.client("s3", endpoint_url=target.endpoint_url, config=config)
        self._completer = session.client(
            "s3", endpoint_url=target.endpoint_url, config=config.merge(Config(read_timeout=settings.complete_timeout))
        )
        for client in (self._client, self._completer):
            watch_connections(client)
            client.meta.events.register_first("needs-retry.s3", self._no_retry_when_stopping)
        self.endpoint = self._client.meta.endpoint_url

    def stop(self) -> None:
        self.stopping.set()

    def _no_retry_when_stopping(self, **_) -> None:
        if self.stopping.is_set():
            raise Stopped()

    # -- errors ---------------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _call(self, operation: str, client=None, **params):
        for attempt in range(ATTEMPTS):
            if "Body" in params:
                params["Body"].seek(0)  # a body the failed attempt read: from its first byte again
            try:
                return self._request(operation, client, params)
            except StoreError as exc:
                if not exc.retryable or attempt + 1 == ATTEMPTS:
                    raise
                if self.stopping.wait(self._backoff * 2**attempt):
                    raise Stopped() from None
        raise AssertionError("unreachable")

    def _request(self, operation: str, client, params: dict):
        from botocore.exceptions import BotoCoreError, ClientError

        if self.stopping.is_set():
            raise Stopped()
        try:
            # no time limit of our own (botocore's timeouts bound each wait), but the waits end with stop()
            with cancelled_by(self.stopping), Deadline(math.inf):
                return getattr(client or self._client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            raise self._error(operation, exc) from None
        except BotoCoreError as exc:  # no answer after every retry: connection refused or dropped, timeout
            raise StoreError(self.redact(f"{operation}: {exc}"), retryable=True) from None

    def _error(self, operation: str, exc) -> StoreError:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or status)
        what = f"HTTP {status}" if code == str(status) else f"HTTP {status} {code}"
        message = self.redact(f"{operation} answered {what}: {error.get('Message') or 'no message'}")
        if status == 507 or code in _FULL_CODES:
            return StoreFull(message, status, code)
        retryable = code in _RETRYABLE_CODES or status in (408, 429) or ((status or 0) >= 500 and status != 501)
        return StoreError(message, status, code, retryable)

    # -- operations -----------------------------------------------------------------------------------
    def check(self) -> None:
        """One request before anything else, so that a wrong volume, endpoint or key is one clear error."""
        try:
            self._call("head_bucket")
        except StoreError as exc:
            if exc.status == 404:
                raise UserError(
                    f"the volume (bucket) '{self.bucket}' does not exist at {self.endpoint}: check the volume ID "
                    "and its datacenter (--datacenter)."
                ) from None
            if exc.status in (401, 403):
                raise UserError(
                    f"{self.endpoint} refused the credentials (HTTP {exc.status}): check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (the RunPod S3 API key, see DEPLOYMENT.md)."
                ) from None
            raise UserError(f"cannot use the store at {self.endpoint}: {exc}") from None

    def head(self, key: str) -> RemoteObject | None:
        try:
            answer = self._call("head_object", Key=key)
        except StoreError as exc:
            if exc.status == 404:
                return None
            raise
        metadata = {k.lower(): v for k, v in (answer.get("Metadata") or {}).items()}
        return RemoteObject(int(answer["ContentLength"]), metadata.get("sha256"), answer.get("ETag", "").strip('"'))

    def put(self, key: str, body, size: int, sha256: str) -> None:
        self._call("put_object", Key=key, Body=body, ContentLength=size, Metadata={"sha256": sha256})

    def create(self, key: str, sha256: str) -> str:
        return self._call("create_multipart_upload", Key=key, Metadata={"sha256": sha256})["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, body, size: int) -> str:
        answer = self._call(
            "upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=body, ContentLength=size
        )
        return answer["ETag"]

    def parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]] | None:
        """{part number: (size, ETag)} of the parts the store holds; None if the upload no longer exists."""
        found: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            try:
                page = self._call("list_parts", Key=key, UploadId=upload_id, PartNumberMarker=marker)
            except StoreError as exc:
                if exc.status == 404 or exc.code == "NoSuchUpload":
                    return None
                raise
            for part in page.get("Parts", []):
                found[int(part["PartNumber"])] = (int(part["Size"]), part["ETag"])
            if not page.get("IsTruncated"):
                return found
            marker = int(page["NextPartNumberMarker"])

    def uploads(self, prefix: str) -> dict[str, list[str]]:
        """{key: [upload IDs]} of the multipart uploads in progress under `prefix`."""
        found: dict[str, list[str]] = {}
        params = {"Prefix": prefix}
        while True:
            page = self._call("list_multipart_uploads", **params)
            for upload in page.get("Uploads", []):
                found.setdefault(upload["Key"], []).append(upload["UploadId"])
            if not page.get("IsTruncated"):
                return found
            params.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page.get("NextUploadIdMarker", ""))

    def complete(self, key: str, upload_id: str, etags: dict[int, str]) -> None:
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
        self._call(
            "complete_multipart_upload",
            client=self._completer,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except StoreError as exc:
            if exc.status != 404 and exc.code != "NoSuchUpload":
                raise
