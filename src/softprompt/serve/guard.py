"""Guards run before a request reaches the API: the Host header and body-size check (ASGI
middleware, before anything is parsed) and the API key check (a FastAPI dependency)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader

from softprompt.serve import API_KEY_HEADER


class BodyAndHostGuard:
    """ASGI middleware run before anything reads a request: the Host header must be one the
    server answers to (421), and the body at most `max_body_bytes` (413), counted as it arrives
    (a Content-Length beyond the cap is refused before any byte is read)."""

    def __init__(self, app, max_body_bytes: int, allowed_hosts: Sequence[str] | None) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.allowed = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.allowed is not None:
            host = _host_name(headers.get("host", ""))
            if host not in self.allowed:
                return await _reply(
                    send,
                    421,
                    f"Host header {host!r} is not a name this server answers to "
                    f"({', '.join(sorted(self.allowed))}); DNS-rebinding protection",
                )
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await _reply(send, 400, "Content-Length is not a number")
            if int(length) > self.max_body_bytes:
                return await _reply(send, 413, f"request body of {int(length)} bytes; at most {self.max_body_bytes}")
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _host_name(host: str) -> str:
    """The name of a Host header, without its port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def api_key_check(key: str | None):
    """A dependency that refuses a request without `key` in the X-API-Key header (no check when key is None)."""
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    async def check(given: str | None = Security(header)) -> None:
        # compare_digest: constant time, so the key cannot be guessed byte by byte from timings.
        if key is not None and (given is None or not secrets.compare_digest(given.encode(), key.encode())):
            raise HTTPException(
                401, f"missing or wrong API key (header {API_KEY_HEADER})", headers={"WWW-Authenticate": "ApiKey"}
            )

    return check
