"""Where `push` writes: s3://BUCKET[/PREFIX] at an endpoint, parsed and checked at the edge.

On RunPod the bucket is the network volume's ID, the endpoint https://s3api-<datacenter>.runpod.io/ and the
region the datacenter ID; an object `models/x` is the file /workspace/models/x on a pod and
/runpod-volume/models/x on a Serverless worker, hence the default prefix `models` (the cache root both find).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from runpod_model_manager.errors import UserError

DEFAULT_PREFIX = "models"
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_DATACENTER = re.compile(r"^[A-Za-z]{2,4}-[A-Za-z]{2,4}-[0-9]{1,3}$")
_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # boto3 reads these itself


@dataclass(frozen=True)
class Target:
    bucket: str
    prefix: str  # no leading or trailing slash
    endpoint_url: str | None  # None: boto3 takes it from AWS_ENDPOINT_URL(_S3)
    region: str | None  # None: boto3's own lookup (AWS_REGION, the profile)

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.prefix}"


def runpod_endpoint(datacenter: str) -> str:
    return f"https://s3api-{datacenter.lower()}.runpod.io/"


def parse_target(destination: str, datacenter: str | None, endpoint_url: str | None) -> Target:
    """`--to s3://BUCKET[/PREFIX]` with `--datacenter DC` and/or `--endpoint-url URL` (which wins)."""
    scheme, _, rest = destination.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not _BUCKET.match(bucket):
        raise UserError(f"--to {destination!r} is not s3://VOLUME_ID[/PREFIX] (the network volume's ID as bucket).")
    prefix = prefix.strip("/") or DEFAULT_PREFIX
    if any(part in ("", ".", "..") for part in prefix.split("/")) or any(c in prefix for c in "\\\0"):
        raise UserError(f"--to {destination!r}: the prefix must be a plain folder path like 'models'.")
    if datacenter is not None and not _DATACENTER.match(datacenter):
        raise UserError(f"--datacenter {datacenter!r} is not a RunPod datacenter ID like EU-RO-1.")
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(f"--endpoint-url {endpoint_url!r} is not an http(s) URL.")
    elif datacenter is not None:
        endpoint_url = runpod_endpoint(datacenter)
    elif not any(os.environ.get(name) for name in _ENDPOINT_ENV):
        raise UserError(
            "where is the volume? Give --datacenter (its RunPod datacenter, e.g. EU-RO-1), or --endpoint-url."
        )
    return Target(bucket, prefix, endpoint_url, datacenter.upper() if datacenter else None)
