"""The subset of the Hugging Face Hub HTTP protocol that huggingface_hub 2.x uses to download.

Routes (repo type "model"; ``datasets``/``spaces`` prefixes are accepted too and map to the same store):

* ``GET /api/models/{repo_id}`` and ``GET /api/models/{repo_id}/revision/{revision}``  -> ``hf.revision``
* ``GET /api/models/{repo_id}/tree/{revision}[/{path}]?recursive=&expand=``             -> ``hf.tree``
* ``GET /api/models/{repo_id}/refs``                                                   -> ``hf.refs``
* ``HEAD|GET /{repo_id}/resolve/{revision}/{path}`` (also under ``/api/models/``)      -> ``hf.resolve``
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlencode

from .http_types import Request, Response, Route, file_response, header_safe, json_response
from .store import HF, Commit, FileEntry, Repo

_REPO_TYPE_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def hf_error(status: int, message: str, extra: dict[str, str] | None = None) -> Response:
    headers = [("X-Error-Message", header_safe(message))]
    for k, v in (extra or {}).items():
        headers.append((k, v))
    return json_response(status, {"error": message}, headers)


def _err(status: int, code: str | None, message: str, **extra: str) -> Response:
    hdrs = dict(extra)
    if code:
        hdrs["X-Error-Code"] = code
    return hf_error(status, message, hdrs)


def route(req: Request) -> Route | None:
    segs = req.raw_path.split("/")[1:]
    if not segs or segs == [""]:
        return None
    if segs[0] == "api" and len(segs) >= 4 and segs[1] in _REPO_TYPE_PREFIXES:
        repo_id = f"{unquote(segs[2])}/{unquote(segs[3])}"
        rest = segs[4:]
        if not rest or rest == [""]:
            if req.method == "GET":
                return Route("hf.revision", lambda: _info(req, repo_id, None), hf_error)
            return None
        kind = rest[0]
        if kind == "revision" and len(rest) >= 2 and req.method == "GET":
            revision = unquote("/".join(rest[1:]))
            return Route("hf.revision", lambda: _info(req, repo_id, revision), hf_error)
        if kind == "tree" and len(rest) >= 2 and req.method == "GET":
            return Route("hf.tree", lambda: _tree(req, repo_id, rest[1:]), hf_error)
        if kind == "refs" and req.method == "GET":
            return Route("hf.refs", lambda: _refs(req, repo_id), hf_error)
        if kind == "resolve" and len(rest) >= 3 and req.method in ("GET", "HEAD"):
            return Route("hf.resolve", lambda: _resolve(req, repo_id, rest[1:]), hf_error)
        return None
    # /{org}/{name}/resolve/... or /datasets/{org}/{name}/resolve/...
    if segs[0] in ("datasets", "spaces"):
        segs = segs[1:]
    if len(segs) >= 5 and segs[2] == "resolve" and req.method in ("GET", "HEAD"):
        repo_id = f"{unquote(segs[0])}/{unquote(segs[1])}"
        return Route("hf.resolve", lambda: _resolve(req, repo_id, segs[3:]), hf_error)
    return None


# ------------------------------------------------------------------------------------------------
def _repo_or_error(req: Request, repo_id: str, *, files: bool) -> tuple[Repo | None, Response | None]:
    repo = req.hub.store.get(HF, repo_id)
    if repo is None:
        return None, _err(404, "RepoNotFound", "Repository not found")
    if repo.private and not req.authorized:
        # huggingface.co answers 401 + RepoNotFound for private repos without a valid token.
        return None, _err(401, "RepoNotFound", "Repository not found")
    if files and repo.gated and not req.authorized:
        return None, _err(
            401,
            "GatedRepo",
            f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
            "to access it. Please log in.",
        )
    return repo, None


def _sibling(entry: FileEntry, blobs: bool) -> dict:
    out: dict = {"rfilename": entry.path}
    if blobs:
        out["size"] = entry.size
        out["blobId"] = entry.blob_id
        if entry.lfs:
            out["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": len(entry.lfs_pointer)}
    return out


def _info(req: Request, repo_id: str, revision: str | None) -> Response:
    repo, err = _repo_or_error(req, repo_id, files=False)
    if err:
        return err
    assert repo is not None
    commit = repo.resolve(revision)
    if commit is None:
        return _err(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    blobs = req.query.get("blobs", "").lower() in ("1", "true")
    first = min(repo.commits.values(), key=lambda c: c.timestamp)
    payload = {
        "_id": commit.sha[:24],
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/")[0],
        "sha": commit.sha,
        "lastModified": commit.iso_date,
        "createdAt": first.iso_date,
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "library_name": None,
        "siblings": [_sibling(e, blobs) for e in commit.files.values()][: req.hub.hf_siblings_limit],
        "spaces": [],
        "usedStorage": sum(e.size for e in commit.files.values()),
    }
    return json_response(200, payload)


def _tree_entry(commit: Commit, path: str, entry: FileEntry | None) -> dict:
    if entry is None:
        return {"type": "directory", "oid": commit.tree_id(path), "size": 0, "path": path}
    out: dict = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": entry.path}
    if entry.lfs:
        out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(entry.lfs_pointer)}
    return out


def _tree(req: Request, repo_id: str, rest: list[str]) -> Response:
    repo, err = _repo_or_error(req, repo_id, files=False)
    if err:
        return err
    assert repo is not None
    revision = unquote(rest[0])
    commit = repo.resolve(revision)
    if commit is None:
        return _err(404, "RevisionNotFound", f"Invalid rev id: {revision}")
    folder = unquote("/".join(rest[1:])).strip("/")
    folders = commit.folders()
    if folder and folder not in folders:
        if folder in commit.files:
            return _err(404, "EntryNotFound", f"{folder} is a file, not a directory", **{"X-Repo-Commit": commit.sha})
        return _err(404, "EntryNotFound", f"{folder} does not exist", **{"X-Repo-Commit": commit.sha})
    recursive = req.query.get("recursive", "").lower() in ("1", "true")
    prefix = f"{folder}/" if folder else ""

    def wanted(p: str) -> bool:
        if not p.startswith(prefix):
            return False
        return recursive or "/" not in p[len(prefix) :]

    entries = [_tree_entry(commit, d, None) for d in folders if wanted(d)]
    entries += [_tree_entry(commit, p, e) for p, e in commit.files.items() if wanted(p)]
    entries.sort(key=lambda e: (e["path"].count("/"), e["type"] != "directory", e["path"]))

    page_size = max(1, int(req.hub.hf_tree_page_size))
    try:
        cursor = int(req.query.get("cursor", "0"))
    except ValueError:
        cursor = 0
    page = entries[cursor : cursor + page_size]
    headers: list[tuple[str, str]] = [("X-Repo-Commit", commit.sha)]
    if cursor + page_size < len(entries):
        params = {k: v for k, v in req.query.items() if k != "cursor"}
        params["cursor"] = str(cursor + page_size)
        next_url = f"{req.hub.url}{req.raw_path}?{urlencode(params)}"
        headers.append(("Link", f'<{next_url}>; rel="next"'))
    return json_response(200, page, headers)


def _refs(req: Request, repo_id: str) -> Response:
    repo, err = _repo_or_error(req, repo_id, files=False)
    if err:
        return err
    assert repo is not None
    return json_response(
        200,
        {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
            "converts": [],
        },
    )


def _resolve(req: Request, repo_id: str, rest: list[str]) -> Response:
    repo, err = _repo_or_error(req, repo_id, files=True)
    if err:
        return err
    assert repo is not None
    # The client sends the revision with quote(safe=""), but accept "refs/pr/1"-style raw slashes too.
    commit, path = None, None
    for k in range(1, len(rest)):
        candidate = unquote("/".join(rest[:k]))
        commit = repo.resolve(candidate)
        if commit is not None:
            path = unquote("/".join(rest[k:]))
            break
    if commit is None:
        return _err(404, "RevisionNotFound", f"Invalid rev id: {unquote(rest[0])}")
    assert path is not None
    entry = commit.files.get(path)
    if entry is None:
        return _err(404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": commit.sha})

    headers = [("X-Repo-Commit", commit.sha)]
    if entry.lfs:
        headers += [("X-Linked-Etag", f'"{entry.sha256}"'), ("X-Linked-Size", str(entry.size))]
        if req.hub.hf_lfs_redirect:
            location = req.hub.cdn_location(HF, repo_id, entry)
            body = f"Found. Redirecting to {location}".encode()
            headers += [("Location", location), ("Content-Type", "text/plain; charset=utf-8")]
            return Response(302, headers, body)
    headers.append(("ETag", f'"{entry.etag}"'))
    return file_response(req, entry, headers, (repo_id, entry.path), hf_error)


def resolve_url(base: str, repo_id: str, revision: str, path: str) -> str:
    """The URL huggingface_hub builds (``hf_hub_url``)."""
    return f"{base}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"
