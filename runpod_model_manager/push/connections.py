"""botocore's connections, with sockets that a Deadline (and so a Ctrl-C, through `deadline.cancelled_by`) can
end: without this, a worker waiting for a store that stalls sees the stop only after botocore's read timeout
(two minutes by default, and CompleteMultipartUpload's is longer).

botocore offers no hook for its connections: `watch_connections` swaps the pool classes of a client's HTTP
session (one dict, shared by its pool managers) for subclasses whose connections are watched. These are
private attributes, unchanged since botocore 1.11; where they are missing, Ctrl-C waits as it did before.
"""

from __future__ import annotations

from botocore.awsrequest import AWSHTTPConnection, AWSHTTPConnectionPool, AWSHTTPSConnection, AWSHTTPSConnectionPool

from runpod_model_manager.deadline import WatchedConnection


class _HTTPConnection(WatchedConnection, AWSHTTPConnection):
    pass


class _HTTPSConnection(WatchedConnection, AWSHTTPSConnection):
    pass


class _HTTPPool(AWSHTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(AWSHTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def watch_connections(client) -> None:
    pools = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_pool_classes_by_scheme", None)
    if isinstance(pools, dict):
        pools.update(http=_HTTPPool, https=_HTTPSPool)
