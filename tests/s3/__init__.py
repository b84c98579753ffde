"""A real S3 server on loopback for `push` tests: moto's ThreadedMotoServer behind a RunPodProxy.

    with S3Server() as s3:                          # or the `s3` fixture (tests/test_push.py)
        bucket = s3.new_bucket()                    # a volume
        s3.proxy.reset(Limits(put_limit=1 << 20, fail_every=7))
        env = s3.client_env(base_env)               # credentials + AWS config isolated from the user's
        ... python download_models.py push --to s3://BUCKET --endpoint-url s3.url ...
        s3.objects(bucket)                          # {key: bytes}, read from moto directly (not counted)
        s3.copy_down(bucket, "models", folder)      # the bucket's tree as a volume mount would show it

moto enforces S3's 5 MiB minimum part size; RunPod does not, and the tests use small parts: the minimum is
lowered here, before moto is imported. And moto completes a multipart upload sent without checksums by
copying the whole object twice more in memory, for a CRC64 of it that nobody asked for (RunPod computes
none): three times slower than the same upload sent with CRC32 checksums. `S3Server` skips that work, so that
a benchmark measures the clients and not this quirk of the fake server.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

from .proxy import Call, Limits, RunPodProxy

os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", "1")
os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(16 << 20))

__all__ = ["Call", "Limits", "RunPodProxy", "S3Server", "ACCESS_KEY", "SECRET_KEY"]

# Shaped like a RunPod S3 API key, so that a test can look for them in any output
ACCESS_KEY = "user_2TestAccessKeyShouldNeverBePrinted"
SECRET_KEY = "rps_TestSecretThatMustNeverAppearInOutput0123"
_REGION = "us-east-1"


def _skip_unasked_checksums() -> None:
    import moto.s3.models as models

    if getattr(models.MultipartChecksumBuilder, "skips_unasked", False):
        return
    full = models.MultipartChecksumBuilder

    class NoChecksum:
        def addPart(self, part: bytes) -> None:  # noqa: N802 - moto's name
            pass

        def build(self) -> None:
            return None

    def builder(algorithm: str | None, checksum_type: str | None):
        return full(algorithm, checksum_type) if algorithm else NoChecksum()

    builder.skips_unasked = True  # type: ignore[attr-defined]
    models.MultipartChecksumBuilder = builder


class S3Server:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        _skip_unasked_checksums()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.proxy: RunPodProxy | None = None
        self._names = itertools.count(1)

    def start(self) -> S3Server:
        self._moto.start()
        self.proxy = RunPodProxy(self._moto.get_host_and_port()).start()
        return self

    def stop(self) -> None:
        if self.proxy:
            self.proxy.stop()
        self._moto.stop()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The proxy's URL: what `push --endpoint-url` gets."""
        return self.proxy.url

    @property
    def direct_url(self) -> str:
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    def client(self):
        """A boto3 client to moto itself (not through the proxy: nothing it does is counted or faulted)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.direct_url,
            region_name=_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_bucket(self) -> str:
        name = f"vol{os.getpid()}x{next(self._names)}"
        self.client().create_bucket(Bucket=name)
        return name

    @staticmethod
    def client_env(base: dict[str, str], home: Path) -> dict[str, str]:
        """`base` with the test credentials, and no AWS setting of the user's or of the machine."""
        env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        return env | {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": _REGION,
        }

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def objects(self, bucket: str) -> dict[str, bytes]:
        client = self.client()
        return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in self.keys(bucket)}

    def uploads(self, bucket: str) -> list[dict]:
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def copy_down(self, bucket: str, prefix: str, folder: Path) -> Path:
        """Every object under `prefix/` as a file under `folder`: what a pod sees at /workspace/<prefix>."""
        for key, data in self.objects(bucket).items():
            if key.startswith(prefix + "/"):
                path = folder / key[len(prefix) + 1 :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        return folder
