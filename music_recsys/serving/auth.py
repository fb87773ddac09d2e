"""An optional bearer token in front of the API, as a pure ASGI middleware.

With a token configured (``RECSYS_API_TOKEN`` or ``music-recsys serve --token-file``), every request but
``GET /healthz`` (what a load balancer or orchestrator probes) needs ``Authorization: Bearer <token>``;
others get 401 with ``WWW-Authenticate: Bearer``. The comparison is constant-time (``hmac.compare_digest``)
and the token is never logged or echoed. Without a token the API is open, and the server says so at start.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "RECSYS_API_TOKEN"
OPEN_PATHS = frozenset({"/healthz"})
REALM = "music-recsys"


def read_token(token_file: str | Path | None = None, environ: dict[str, str] | None = None) -> tuple[str | None, str]:
    """(token, where it came from): ``token_file`` when given, else ``$RECSYS_API_TOKEN``, else (None, "none").

    Surrounding whitespace (the newline an editor leaves) is dropped. An empty token file is an error, not
    an open API, since whoever named the file meant to close it; an empty variable counts as unset
    (``(None, "RECSYS_API_TOKEN is empty")``), as compose passes ``${RECSYS_API_TOKEN:-}`` when ``.env`` has
    none, and the server's start-up warning says it is open."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(token_file)
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"token file {path}: cannot be read ({exc.strerror}); give a readable file") from None
        if not token:
            raise ValueError(f"token file {path} is empty; write the token in it, or drop --token-file to serve open")
        return token, f"--token-file {path}"
    raw = environ.get(TOKEN_ENV)
    if raw is None:
        return None, "none"
    token = raw.strip()
    if not token:
        return None, f"{TOKEN_ENV} is empty"
    return token, TOKEN_ENV


class BearerAuth:
    """401 for any request but ``OPEN_PATHS`` without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str):
        if not token:
            raise ValueError("BearerAuth needs a non-empty token")
        self.app = app
        self._token = token.encode()

    def __repr__(self) -> str:  # never the token
        return "BearerAuth(token=<hidden>)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        if given is None:
            await _unauthorized(send, "this API needs 'Authorization: Bearer <token>'", None)
            return
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            await _unauthorized(send, "the Authorization header must be 'Bearer <token>'", "invalid_request")
            return
        if not hmac.compare_digest(credentials.strip(), self._token):
            await _unauthorized(send, "the bearer token is not valid for this server", "invalid_token")
            return
        await self.app(scope, receive, send)


async def _unauthorized(send: Send, detail: str, error: str | None) -> None:
    body = json.dumps({"detail": detail}).encode()
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
