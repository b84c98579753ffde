"""The subset of the ModelScope HTTP protocol that modelscope 1.40 / modelscope_hub 0.5 uses to download.

Routes (``{seg}`` is ``models`` or ``datasets``; both map to the model store):

* ``GET /api/v1/{seg}/{owner}/{name}/repo/files?Revision=&Recursive=&Root=``  -> ``ms.files``
* ``GET|HEAD /api/v1/{seg}/{owner}/{name}/repo?Revision=&FilePath=``          -> ``ms.download``
* ``GET /api/v1/{seg}/{owner}/{name}/revisions``                              -> ``ms.revisions``
* ``GET /api/v1/{seg}/{owner}/{name}``                                        -> ``ms.info``
* ``GET /openapi/v1/models/{owner}/{name}``                                   -> ``ms.openapi_info``
* ``GET /api/v1/repos/internalAccelerationInfo``                              -> ``ms.accel``
"""

from __future__ import annotations

import uuid
import zlib
from urllib.parse import quote_plus, unquote

from .http_types import Request, Response, Route, file_response, json_response
from .store import MS, Commit, Repo


def ms_error(status: int, message: str, extra: dict[str, str] | None = None) -> Response:
    payload = {
        "Code": status,
        "Message": message,
        "RequestId": uuid.uuid4().hex,
        "Success": False,
    }
    return json_response(status, payload, list((extra or {}).items()))


def openapi_error(status: int, message: str, extra: dict[str, str] | None = None) -> Response:
    code = {404: "ResourceNotFound", 401: "InvalidAuthentication", 403: "OperationNotAllowed"}.get(status, "Error")
    payload = {"success": False, "code": code, "message": message, "request_id": uuid.uuid4().hex}
    return json_response(status, payload, list((extra or {}).items()))


def _ok(data) -> Response:
    return json_response(
        200, {"Code": 200, "Data": data, "Message": "success", "RequestId": uuid.uuid4().hex, "Success": True}
    )


def route(req: Request) -> Route | None:
    segs = [unquote(s) for s in req.raw_path.split("/")[1:]]
    if segs[:2] == ["openapi", "v1"] and len(segs) == 5 and segs[2] in ("models", "datasets"):
        repo_id = f"{segs[3]}/{segs[4]}"
        if req.method == "GET":
            return Route("ms.openapi_info", lambda: _openapi_info(req, repo_id), openapi_error)
        return None
    if segs[:2] != ["api", "v1"] or len(segs) < 3:
        return None
    if segs[2:] == ["repos", "internalAccelerationInfo"]:
        return Route("ms.accel", lambda: _ok({"InternalRegionQueryAddress": ""}), ms_error)
    if segs[2] not in ("models", "datasets") or len(segs) < 5:
        return None
    repo_id = f"{segs[3]}/{segs[4]}"
    rest = segs[5:]
    if not rest and req.method == "GET":
        return Route("ms.info", lambda: _info(req, repo_id), ms_error)
    if rest == ["repo", "files"] and req.method == "GET":
        return Route("ms.files", lambda: _files(req, repo_id), ms_error)
    if rest == ["repo", "tree"] and req.method == "GET":  # dataset-style listing, same payload
        return Route("ms.files", lambda: _files(req, repo_id), ms_error)
    if rest == ["repo"] and req.method in ("GET", "HEAD"):
        return Route("ms.download", lambda: _download(req, repo_id), ms_error)
    if rest == ["revisions"] and req.method == "GET":
        return Route("ms.revisions", lambda: _revisions(req, repo_id), ms_error)
    return None


# ------------------------------------------------------------------------------------------------
def _repo_or_error(req: Request, repo_id: str, *, content: bool) -> tuple[Repo | None, Response | None]:
    repo = req.hub.store.get(MS, repo_id)
    if repo is None or (repo.private and not req.authorized):
        return None, ms_error(404, f"Model {repo_id} does not exist")
    if content and repo.gated and not req.authorized:
        return None, ms_error(401, "Unauthorized: please log in (token required for this gated model)")
    return repo, None


def _commit_or_error(repo: Repo, revision: str | None) -> tuple[Commit | None, Response | None]:
    commit = repo.resolve(revision)
    if commit is None:
        return None, ms_error(404, f"Revision {revision} of model {repo.repo_id} does not exist")
    return commit, None


def _requested_commit(req: Request, repo_id: str) -> tuple[Commit | None, Response | None]:
    """The commit a content request's `Revision` names, or the error the hub answers instead."""
    repo, err = _repo_or_error(req, repo_id, content=True)
    if err:
        return None, err
    assert repo is not None
    return _commit_or_error(repo, req.query.get("Revision") or None)


def _info_payload(repo: Repo) -> dict:
    owner, name = repo.repo_id.split("/")
    head = repo.commits[repo.branches[repo.default_branch]] if repo.default_branch in repo.branches else None
    return {
        "Id": zlib.crc32(repo.repo_id.encode()) % 10_000_000,
        "Name": name,
        "Path": owner,
        "ChineseName": "",
        "Visibility": 1 if repo.private else 5,
        "IsGated": repo.gated,
        "CreatedTime": min(c.timestamp for c in repo.commits.values()),
        "LastUpdatedTime": max(c.timestamp for c in repo.commits.values()),
        "Revision": head.sha if head else "",
        "Downloads": 0,
        "Stars": 0,
    }


def _info(req: Request, repo_id: str) -> Response:
    repo, err = _repo_or_error(req, repo_id, content=False)
    if err:
        return err
    assert repo is not None
    return _ok(_info_payload(repo))


def _openapi_info(req: Request, repo_id: str) -> Response:
    repo = req.hub.store.get(MS, repo_id)
    if repo is None or (repo.private and not req.authorized):
        return openapi_error(404, f"Model {repo_id} not found")
    owner, name = repo_id.split("/")
    data = {
        "id": repo_id,
        "owner": owner,
        "name": name,
        "private": repo.private,
        "gated": repo.gated,
        "downloads": 0,
        "likes": 0,
    }
    return json_response(200, {"success": True, "data": data, "request_id": uuid.uuid4().hex})


def _file_entries(commit: Commit, root: str, recursive: bool) -> list[dict]:
    prefix = f"{root}/" if root else ""

    def wanted(p: str) -> bool:
        return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

    out = []
    common = {
        "Revision": commit.sha,
        "CommitId": commit.sha,
        "CommitMessage": commit.message,
        "CommittedDate": commit.timestamp,
        "CommitterName": "localhub",
        "InCheck": False,
    }
    for folder in commit.folders():
        if wanted(folder):
            out.append(
                {
                    "Id": commit.tree_id(folder),
                    "Name": folder.rsplit("/", 1)[-1],
                    "Path": folder,
                    "Type": "tree",
                    "Size": 0,
                    "Sha256": "",
                    "IsLFS": False,
                    "Mode": "40000",
                    **common,
                }
            )
    for path, e in commit.files.items():
        if wanted(path):
            out.append(
                {
                    "Id": e.git_sha1,
                    "Name": path.rsplit("/", 1)[-1],
                    "Path": path,
                    "Type": "blob",
                    "Size": e.size,
                    "Sha256": e.sha256,
                    "IsLFS": e.lfs,
                    "Mode": "100644",
                    **common,
                }
            )
    return out


def _files(req: Request, repo_id: str) -> Response:
    commit, err = _requested_commit(req, repo_id)
    if err:
        return err
    assert commit is not None
    root = (req.query.get("Root") or "").strip("/")
    if root and root not in commit.folders():
        return ms_error(404, f"Path {root} does not exist")
    recursive = (req.query.get("Recursive") or "false").lower() in ("true", "1")
    entries = _file_entries(commit, root, recursive)
    limit = req.hub.ms_files_limit
    if limit is not None:
        entries = entries[:limit]
    return _ok({"Files": entries, "IsTruncated": False})


def _revisions(req: Request, repo_id: str) -> Response:
    repo, err = _repo_or_error(req, repo_id, content=False)
    if err:
        return err
    assert repo is not None

    def item(name: str, sha: str) -> dict:
        return {"Revision": name, "CommitId": sha, "CreatedAt": repo.commits[sha].timestamp, "Message": ""}

    return _ok(
        {
            "RevisionMap": {
                "Branches": [item(n, s) for n, s in repo.branches.items()],
                "Tags": [item(n, s) for n, s in repo.tags.items()],
            }
        }
    )


def _download(req: Request, repo_id: str) -> Response:
    commit, err = _requested_commit(req, repo_id)
    if err:
        return err
    assert commit is not None
    path = (req.query.get("FilePath") or "").lstrip("/")
    entry = commit.files.get(path)
    if entry is None:
        return ms_error(404, f"File {path} does not exist")
    if entry.lfs and req.hub.ms_lfs_redirect:
        location = req.hub.cdn_location(MS, repo_id, entry)
        return Response(302, [("Location", location), ("Content-Type", "text/plain")], b"Found")
    headers = [("ETag", f'"{entry.git_sha1}"'), ("X-Repo-Commit", commit.sha)]
    return file_response(req, entry, headers, (repo_id, entry.path), ms_error)


def download_url(base: str, repo_id: str, revision: str, path: str) -> str:
    """The URL modelscope_hub builds (``LegacyClient.get_download_url``)."""
    return f"{base}/api/v1/models/{repo_id}/repo?Revision={quote_plus(revision)}&FilePath={quote_plus(path)}"
