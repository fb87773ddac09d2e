"""A request body limit enforced while the body is read, as a pure ASGI middleware.

FastAPI reads and parses a JSON body on the event loop before any pydantic length limit applies, so a
75 MB history stalled every other client for the seconds it took to parse. ``BodyLimit`` answers 413
before the app sees a byte: at once when ``Content-Length`` says too much, and as soon as the bytes
received pass the limit otherwise (chunked bodies have no ``Content-Length``). Reading is asynchronous,
so a slow or oversized upload holds only its own connection. An accepted body is handed to the app in
one piece; ``Connection: close`` on the 413 makes the server drop the rest of an oversized upload
instead of reading it to discard it. A body that does not arrive in full within ``timeout_seconds``
(a client trickling bytes under the limit) is answered 408 the same way, so no upload holds a connection
and its buffer for ever.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0


def too_large_detail(limit: int) -> str:
    return f"request body over the limit of {limit:,} bytes (music-recsys serve --max-body-bytes)"


def too_slow_detail(seconds: float) -> str:
    return f"request body not received within {seconds:g} s (music-recsys serve --body-timeout-seconds)"


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 ``{"detail": ...}`` naming the limit, and bodies
    not received in full within ``timeout_seconds`` with 408."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS,
    ):
        if max_bytes < 1:
            raise ValueError(f"max body bytes {max_bytes!r}: must be a positive number of bytes")
        if not timeout_seconds > 0:
            raise ValueError(
                f"body timeout {timeout_seconds!r} s: must be > 0 (default {DEFAULT_BODY_TIMEOUT_SECONDS:g})"
            )
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self._too_large = json.dumps({"detail": too_large_detail(max_bytes)}).encode()
        self._too_slow = json.dumps({"detail": too_slow_detail(timeout_seconds)}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None  # the HTTP server refuses a malformed length before we get here
            elif name == b"transfer-encoding":
                chunked = True
        if length is None and not chunked:
            # No Content-Length and not chunked: HTTP/1.1 says there is no body; nothing to bound.
            await self.app(scope, receive, send)
            return
        if length is not None and length > self.max_bytes:
            await self._refuse(send, 413, self._too_large)
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout_seconds)
        except BodyTooLarge:
            await self._refuse(send, 413, self._too_large)
            return
        except TimeoutError:
            await self._refuse(send, 408, self._too_slow)
            return
        except _Disconnected:
            return  # the client went away mid-body: nobody to answer
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, send: Send, status: int, answer: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    def __repr__(self) -> str:
        return f"BodyLimit(max_bytes={self.max_bytes}, timeout_seconds={self.timeout_seconds:g})"


class _Disconnected(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the whole body at once, then the connection's later messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
