"""A small stand-in for the Hugging Face Hub HTTP API, for tests (standard library only).

It serves on 127.0.0.1 and answers the routes the real ``huggingface_hub`` client uses to
create a repo and branch, upload a folder and download a snapshot (see
``/work/shared/notes/hub-testing.md``):

* ``POST /api/repos/create`` (409 for an existing repo, 403 for a forbidden namespace)
* ``POST /api/validate-yaml``
* ``POST /api/models/{ns}/{name}/preupload/{rev}`` (every file "regular", ``oid`` = git blob sha1)
* ``POST /api/models/{ns}/{name}/commit/{rev}`` (ndjson, base64 file contents)
* ``POST /api/models/{ns}/{name}/branch/{branch}``
* ``GET  /api/models/{ns}/{name}[/revision/{rev}]``, ``GET /api/models/{ns}/{name}/tree/{rev}``
* ``HEAD``/``GET /{ns}/{name}/resolve/{rev}/{path}``

Every request is recorded (method, path, headers, body) and committed files are stored per
commit, so a test can compare them byte for byte with the folder that was pushed. Missing
repos answer 404 with ``X-Error-Code: RepoNotFound`` (private repos of others look the same,
as on the real Hub), missing revisions ``RevisionNotFound``, missing files ``EntryNotFound``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: what the Hub reports as a regular file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


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
    ):
        """``forbidden_namespaces``: creating a repo there is refused (403) and its repos are
        invisible (404); ``hidden_repos``: repos that exist (create answers 409) but that this
        token cannot see (404), like another user's private repo; ``valid_tokens``: when set,
        any other token gets 401."""
        self.repos: dict[str, Repo] = {}
        self.requests: list[Recorded] = []
        self.forbidden_namespaces = set(forbidden_namespaces or ())
        self.hidden_repos = set(hidden_repos or ())
        self.valid_tokens = valid_tokens
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

    def add_repo(self, repo_id: str, *, private: bool = False) -> Repo:
        """A repo with an initial commit holding ``.gitattributes``, as the Hub creates them."""
        repo = Repo(repo_id=repo_id, private=private)
        files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        sha = self._new_sha(None, files, "initial commit")
        repo.commits[sha] = Commit(sha, None, "initial commit", files)
        repo.branches["main"] = sha
        self.repos[repo_id] = repo
        return repo

    def commit_files(self, repo_id: str, branch: str, files: dict[str, bytes], message: str) -> Commit:
        repo = self.repos[repo_id]
        parent = repo.commits[repo.branches[branch]]
        merged = {**parent.files, **files}
        sha = self._new_sha(parent.sha, merged, message)
        commit = Commit(sha, parent.sha, message, merged)
        repo.commits[sha] = commit
        repo.branches[branch] = sha
        return commit

    def head(self, repo_id: str, revision: str = "main") -> Commit:
        commit = self.repos[repo_id].resolve(revision)
        assert commit is not None, f"{repo_id} has no revision {revision}"
        return commit

    def requests_to(self, method: str, fragment: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and fragment in r.path]


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
        body = self._read_body() if method in ("POST", "PUT") else b""
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

    # --- routes ---------------------------------------------------------------------------------
    def _token_ok(self, head_only: bool = False) -> bool:
        if self.hub.valid_tokens is None:
            return True
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        if token in self.hub.valid_tokens:
            return True
        self._error(401, None, "Invalid credentials in Authorization header", head_only)
        return False

    def _repo(self, repo_id: str, head_only: bool = False) -> Repo | None:
        """The repo, or a 404 RepoNotFound answer (missing, or private and the namespace's)."""
        repo = self.hub.repos.get(repo_id)
        hidden = repo_id in self.hub.hidden_repos or repo_id.split("/")[0] in self.hub.forbidden_namespaces
        if repo is None or hidden:
            self._error(404, "RepoNotFound", "Repository not found", head_only)
            return None
        return repo

    def _route(self, method: str, req: Recorded) -> None:
        head_only = method == "HEAD"
        if not self._token_ok(head_only):
            return
        segs = [unquote(s) for s in req.path.split("/")[1:]]
        if method == "POST" and req.path == "/api/repos/create":
            return self._create_repo(req.json())
        if method == "POST" and req.path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if len(segs) >= 4 and segs[:2] == ["api", "models"]:
            repo_id, rest = f"{segs[2]}/{segs[3]}", segs[4:]
            repo = self._repo(repo_id)
            if repo is None:
                return None
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
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._repo(f"{segs[0]}/{segs[1]}", head_only)
            if repo is None:
                return None
            return self._resolve(repo, segs[3], "/".join(segs[4:]), head_only)
        return self._error(404, None, f"no such route in the fake hub: {method} {req.path}", head_only)

    def _create_repo(self, payload: dict[str, Any]) -> None:
        namespace, name = payload.get("organization"), payload["name"]
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        if namespace in self.hub.forbidden_namespaces:
            return self._error(403, None, "You don't have the rights to create a model under this namespace")
        if repo_id in self.hub.repos or repo_id in self.hub.hidden_repos:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self.hub.add_repo(repo_id, private=payload.get("visibility") == "private")
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
        self._send(
            200,
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit.sha,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            },
        )

    def _tree(self, repo: Repo, revision: str) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        entries = [
            {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            for path, data in sorted(commit.files.items())
        ]
        self._send(200, entries)

    def _preupload(self, repo: Repo, revision: str, payload: dict[str, Any]) -> None:
        commit = self._commit_or_404(repo, revision)
        if commit is None:
            return
        files = []
        for f in payload.get("files", []):
            stored = commit.files.get(f["path"])
            files.append(
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(stored) if stored is not None else None,
                }
            )
        self._send(200, {"files": files, "commitOid": commit.sha})

    def _commit(self, repo: Repo, revision: str, lines: list[dict[str, Any]]) -> None:
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        header = next((line["value"] for line in lines if line.get("key") == "header"), {})
        files: dict[str, bytes] = {}
        for line in lines:
            if line.get("key") != "file":
                continue
            value = line["value"]
            if value.get("encoding") != "base64":
                return self._error(400, None, f"unsupported encoding {value.get('encoding')!r}")
            files[value["path"]] = base64.b64decode(value["content"])
        commit = self.hub.commit_files(repo.repo_id, revision, files, header.get("summary", ""))
        return self._send(
            200,
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{commit.sha}",
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

    def _resolve(self, repo: Repo, revision: str, path: str, head_only: bool) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head_only)
        data = commit.files.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", head_only)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"'}
        return self._send(200, raw=data, headers=headers, head_only=head_only)
