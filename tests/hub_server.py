"""A small stand-in for the Hugging Face Hub HTTP API, and the helpers the Hub tests share.

:class:`FakeHub` serves on 127.0.0.1 (standard library only) and answers the routes the real
``huggingface_hub`` client (2.4.0) takes to create model repos and Spaces, upload folders
(regular files inline, large or binary files through the LFS batch API), set Space variables
and download snapshots (see ``/work/shared/notes/hub-testing.md``):

* ``GET  /api/whoami-v2``
* ``POST /api/repos/create`` (409 for an existing repo, 403 for a forbidden namespace)
* ``POST /api/validate-yaml``
* ``GET  /api/{models,spaces}/{ns}/{name}[/revision/{rev}]``, ``.../tree/{rev}``
* ``POST /api/{models,spaces}/{ns}/{name}/preupload/{rev}``: ``"lfs"`` for binary files, files of
  10 MiB or more and ``.gitattributes`` LFS patterns, as the Hub does; ``oid`` = git blob sha1
  (regular) or sha256 (LFS) of the stored file, so an unchanged file is not sent again
* ``POST /[spaces/]{ns}/{name}.git/info/lfs/objects/batch`` and ``PUT /lfs-upload/{oid}``
* ``POST /api/{models,spaces}/{ns}/{name}/commit/{rev}`` (ndjson: ``file``, ``lfsFile``, ``deletedFile``)
* ``POST /api/models/{ns}/{name}/branch/{branch}``
* ``GET/POST/DELETE /api/spaces/{ns}/{name}/variables``
* ``HEAD``/``GET /{ns}/{name}/resolve/{rev}/{path}``

The client uploads LFS files through Xet when ``hf_xet`` is installed; ``tests.hub_helpers``
sets ``HF_HUB_DISABLE_XET`` for a hub with ``large_files=True`` so it takes the LFS batch path,
which the Hub still serves. Every request is recorded and committed files are kept per commit,
so a test can compare them byte for byte with what was pushed.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LARGE_FILE_BYTES = 10 * 2**20
"""From this size on the Hub stores a file in large-file storage whatever its content."""
DEFAULT_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
AGENT_REGISTRY = "/api/agent-harnesses"
"""Fetched by the client once a process to word its user agent: answered, not recorded."""


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: what the Hub reports as a regular file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)
    """The paths stored in large-file storage."""


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    sdk: str | None = None
    hardware: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)

    @property
    def url_prefix(self) -> str:
        return "" if self.repo_type == "model" else f"{self.repo_type}s/"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def ndjson(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


class FakeHub:
    """The server's state and the HTTP server itself; use as a context manager."""

    def __init__(
        self,
        *,
        forbidden_namespaces: set[str] | None = None,
        hidden_repos: set[str] | None = None,
        valid_tokens: set[str] | None = None,
        read_only_tokens: set[str] | None = None,
        large_files: bool = True,
        user: str = "user",
    ):
        """``forbidden_namespaces``: creating a repo there is refused (403) and its repos are
        invisible (404); ``hidden_repos``: repos that exist (create answers 409) but that this
        token cannot see (404), like another user's private repo; ``valid_tokens``: when set,
        any other token gets 401; ``read_only_tokens``: whoami says "read" for these;
        ``large_files=False``: every file is a regular upload (the Xet-installed client path)."""
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[Recorded] = []
        self.forbidden_namespaces = set(forbidden_namespaces or ())
        self.hidden_repos = set(hidden_repos or ())
        self.valid_tokens = valid_tokens
        self.read_only_tokens = set(read_only_tokens or ())
        self.large_files = large_files
        self.user = user
        self.lock = threading.Lock()
        self._counter = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    # --- state helpers used by routes and tests ---------------------------------------------
    def _new_sha(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        self._counter += 1
        h = hashlib.sha1(f"{self._counter}\n{parent}\n{message}\n".encode())
        for path in sorted(files):
            h.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        return h.hexdigest()

    def add_repo(self, repo_id: str, repo_type: str = "model", *, private: bool = False, **space: Any) -> Repo:
        """A repo with an initial commit holding ``.gitattributes``, as the Hub creates them."""
        repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private, **space)
        files = {".gitattributes": DEFAULT_GITATTRIBUTES}
        sha = self._new_sha(None, files, "initial commit")
        repo.commits[sha] = Commit(sha, None, "initial commit", files)
        repo.branches["main"] = sha
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def commit_files(
        self,
        repo_id: str,
        branch: str,
        files: dict[str, bytes],
        message: str,
        *,
        repo_type: str = "model",
        lfs: set[str] | None = None,
        deleted: set[str] | None = None,
    ) -> Commit:
        repo = self.repo(repo_id, repo_type)
        parent = repo.commits[repo.branches[branch]]
        merged = {k: v for k, v in {**parent.files, **files}.items() if k not in (deleted or set())}
        stored_lfs = {p for p in (parent.lfs - set(files)) | (lfs or set()) if p in merged}
        sha = self._new_sha(parent.sha, merged, message)
        commit = Commit(sha, parent.sha, message, merged, stored_lfs)
        repo.commits[sha] = commit
        repo.branches[branch] = sha
        return commit

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> Commit:
        commit = self.repo(repo_id, repo_type).resolve(revision)
        assert commit is not None, f"{repo_id} has no revision {revision}"
        return commit

    def requests_to(self, method: str, fragment: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and fragment in r.path]

    def upload_mode(self, commit: Commit, path: str, sample: bytes, size: int) -> str:
        if not self.large_files or size == 0:
            return "regular"
        patterns = [
            line.split()[0]
            for line in commit.files.get(".gitattributes", b"").decode().splitlines()
            if "filter=lfs" in line
        ]
        matched = any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in patterns)
        return "lfs" if matched or size >= LARGE_FILE_BYTES or b"\0" in sample else "regular"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the client keeps connections alive: always send Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    # --- plumbing -----------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        head_only: bool = False,
    ) -> None:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        if raw is None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, head_only: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers=headers, head_only=head_only)

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
        if parts.path == AGENT_REGISTRY:
            return self._send(200, {})
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = Recorded(method, parts.path, parse_qs(parts.query), headers, body)
        with self.hub.lock:
            self.hub.requests.append(record)
            try:
                self._route(method, record)
            except Exception as exc:  # a bug in the fake must fail the test, not hang the client
                self._error(400, None, f"fake hub error: {type(exc).__name__}: {exc}")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # --- routes ---------------------------------------------------------------------------------
    def _token(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ").strip()

    def _token_ok(self, head_only: bool = False) -> bool:
        if self.hub.valid_tokens is None or self._token() in self.hub.valid_tokens:
            return True
        self._error(401, None, "Invalid credentials in Authorization header", head_only)
        return False

    def _repo(self, repo_type: str, repo_id: str, head_only: bool = False) -> Repo | None:
        """The repo, or a 404 RepoNotFound answer (missing, or private and the namespace's)."""
        repo = self.hub.repos.get((repo_type, repo_id))
        hidden = repo_id in self.hub.hidden_repos or repo_id.split("/")[0] in self.hub.forbidden_namespaces
        if repo is None or hidden:
            self._error(404, "RepoNotFound", "Repository not found", head_only)
            return None
        return repo

    def _route(self, method: str, req: Recorded) -> None:
        head_only = method == "HEAD"
        if method == "PUT" and req.path.startswith("/lfs-upload/"):  # a pre-signed storage URL: no token
            return self._lfs_put(req.path.rsplit("/", 1)[-1], req.body)
        if not self._token_ok(head_only):
            return None
        segs = [unquote(s) for s in req.path.split("/")[1:]]
        if method == "GET" and req.path == "/api/whoami-v2":
            return self._whoami()
        if method == "POST" and req.path == "/api/repos/create":
            return self._create_repo(req.json())
        if method == "POST" and req.path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if len(segs) >= 4 and segs[0] == "api" and segs[1] in ("models", "spaces"):
            repo_type = segs[1][:-1]
            repo = self._repo(repo_type, f"{segs[2]}/{segs[3]}")
            if repo is None:
                return None
            return self._repo_route(method, repo, segs[4:], req)
        if method == "POST" and req.path.endswith(".git/info/lfs/objects/batch"):
            repo_type, rest = ("space", segs[1:]) if segs[0] == "spaces" else ("model", segs)
            repo = self._repo(repo_type, f"{rest[0]}/{rest[1].removesuffix('.git')}")
            if repo is None:
                return None
            return self._lfs_batch(req.json())
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._repo("model", f"{segs[0]}/{segs[1]}", head_only)
            if repo is None:
                return None
            return self._resolve(repo, segs[3], "/".join(segs[4:]), head_only)
        return self._error(404, None, f"no such route in the fake hub: {method} {req.path}", head_only)

    def _repo_route(self, method: str, repo: Repo, rest: list[str], req: Recorded) -> None:
        if method == "GET" and not rest:
            return self._repo_info(repo, "main")
        if method == "GET" and rest[0] == "revision":
            return self._repo_info(repo, "/".join(rest[1:]))
        if method == "GET" and rest[0] == "tree":
            return self._tree(repo, rest[1])
        if method == "POST" and rest[0] == "preupload":
            return self._preupload(repo, "/".join(rest[1:]), req.json())
        if method == "POST" and rest[0] == "commit":
            return self._commit(repo, "/".join(rest[1:]), req.ndjson())
        if method == "POST" and rest[0] == "branch":
            return self._branch(repo, "/".join(rest[1:]), req.json() if req.body else {})
        if rest == ["variables"] and repo.repo_type == "space":
            return self._variables(repo, method, req.json() if req.body else {})
        return self._error(404, None, f"no such route in the fake hub: {method} {req.path}")

    def _whoami(self) -> None:
        role = "read" if self._token() in self.hub.read_only_tokens else "write"
        auth = {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}
        self._send(200, {"type": "user", "name": self.hub.user, "orgs": [], "auth": auth})

    def _create_repo(self, payload: dict[str, Any]) -> None:
        namespace, name = payload.get("organization"), payload["name"]
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        if namespace in self.hub.forbidden_namespaces:
            return self._error(403, None, f"You don't have the rights to create a {repo_type} under this namespace")
        if (repo_type, repo_id) in self.hub.repos or repo_id in self.hub.hidden_repos:
            return self._send(409, {"error": f"You already created this {repo_type} repo", "url": url})
        space: dict[str, Any] = {}
        if repo_type == "space":
            if payload.get("sdk") not in ("gradio", "docker", "static", "streamlit"):
                return self._error(400, None, f"invalid sdk {payload.get('sdk')!r}")
            space = {"sdk": payload["sdk"], "hardware": payload.get("hardware") or "cpu-basic"}
        self.hub.add_repo(repo_id, repo_type, private=payload.get("visibility") == "private", **space)
        return self._send(200, {"url": url, "name": repo_id})

    def _commit_or_404(self, repo: Repo, revision: str) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _repo_info(self, repo: Repo, revision: str) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        info: dict[str, Any] = {
            "id": repo.repo_id,
            "sha": commit.sha,
            "private": repo.private,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        else:
            info["sdk"] = repo.sdk
            info["runtime"] = {"stage": "BUILDING", "hardware": {"current": None, "requested": repo.hardware}}
        self._send(200, info)

    def _tree(self, repo: Repo, revision: str) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        entries = []
        for path, data in sorted(commit.files.items()):
            entry: dict[str, Any] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if path in commit.lfs:
                entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        self._send(200, entries)

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        files = []
        for f in payload.get("files", []):
            mode = self.hub.upload_mode(commit, f["path"], base64.b64decode(f["sample"]), f["size"])
            stored = commit.files.get(f["path"])
            oid = None
            if stored is not None:
                oid = sha256(stored) if f["path"] in commit.lfs else git_blob_sha1(stored)
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, payload: dict[str, Any]) -> None:
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", []):
            return self._error(400, None, f"unsupported LFS batch request {payload}")
        objects = []
        for obj in payload["objects"]:
            answer: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:
                answer["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}"}}
            objects.append(answer)
        return self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str, body: bytes) -> None:
        if sha256(body) != oid:
            return self._error(400, None, f"uploaded content does not hash to {oid}")
        self.hub.lfs_objects[oid] = body
        return self._send(200, raw=b"")

    def _commit(self, repo: Repo, revision: str, lines: list[dict[str, Any]]) -> None:
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        header = next((line["value"] for line in lines if line.get("key") == "header"), {})
        files: dict[str, bytes] = {}
        lfs: set[str] = set()
        deleted: set[str] = set()
        for line in lines:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, None, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None:
                    return self._error(422, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = data
                lfs.add(value["path"])
            elif key == "deletedFile":
                deleted.add(value["path"])
            elif key != "header":
                return self._error(400, None, f"unsupported commit operation {key!r}")
        commit = self.hub.commit_files(
            repo.repo_id, revision, files, header.get("summary", ""), repo_type=repo.repo_type, lfs=lfs, deleted=deleted
        )
        return self._send(
            200,
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self.hub.url}/{repo.url_prefix}{repo.repo_id}/commit/{commit.sha}",
            },
        )

    def _branch(self, repo: Repo, branch: str, payload: dict[str, Any]) -> None:
        if branch in repo.branches:
            return self._error(409, None, f"Reference refs/heads/{branch} already exists")
        start = repo.resolve(payload.get("startingPoint") or "main")
        if start is None:
            return self._error(404, "RevisionNotFound", "Invalid starting point")
        repo.branches[branch] = start.sha
        return self._send(200, {})

    def _variables(self, repo: Repo, method: str, payload: dict[str, Any]) -> None:
        if method == "POST":
            entry = {"value": payload["value"], "updatedAt": "2026-01-01T00:00:00.000Z"}
            if payload.get("description") is not None:
                entry["description"] = payload["description"]
            repo.variables[payload["key"]] = entry
        elif method == "DELETE":
            repo.variables.pop(payload["key"], None)
        elif method != "GET":
            return self._error(405, None, f"{method} not allowed on variables")
        return self._send(200, repo.variables)

    def _resolve(self, repo: Repo, revision: str, path: str, head_only: bool) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head_only)
        data = commit.files.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", head_only)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"'}
        if path in commit.lfs:
            headers.update({"X-Linked-Etag": f'"{sha256(data)}"', "X-Linked-Size": str(len(data))})
        return self._send(200, raw=data, headers=headers, head_only=head_only)
