"""What the JSON doors share: a capped body read, typed fields and parameters, JSON errors, and a router
that answers 404 for an unknown path and 405 (with Allow) for a known path's wrong method.

A handler is ``handler(environ, *path_groups) -> (status, body)``; it raises ``HttpError`` for what the
client got wrong, which becomes ``{"error": "..."}`` with that status. Bad input is never a 500.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Callable
from urllib.parse import parse_qs

from . import metrics

log = logging.getLogger("xdsi.http")

# The WSGI environ key the HTTP server sets when it refused a body before reading it (its value: the limit).
BODY_REFUSED = "xdsi.body_refused"
JSON_TYPE = "application/json"
BIGINT = 2 ** 63 - 1          # the largest id PostgreSQL's bigint holds
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class HttpError(Exception):
    """What the client got wrong: answered ``{"error": message}`` with ``status``."""

    def __init__(self, status: str, message: str, headers: list[tuple[str, str]] = ()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, list(headers)


def bad(message: str) -> HttpError:
    return HttpError("400 Bad Request", message)


def respond(start_response, status: str, body: Any, headers: list[tuple[str, str]] = ()) -> list[bytes]:
    data = json.dumps(body, default=str, indent=1).encode()
    start_response(status, [("Content-Type", JSON_TYPE), ("Content-Length", str(len(data))), *headers])
    return [data]


def content_length(environ) -> int:
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        raise bad("Content-Length is not a number") from None


def too_large(limit: int) -> HttpError:
    return HttpError("413 Payload Too Large", f"the body is larger than {limit} bytes")


def read_json(environ, max_bytes: int, empty: Any = None) -> Any:
    """The request's JSON body, read only when its length is within ``max_bytes``; ``empty`` for no body."""
    length = content_length(environ)
    if environ.get(BODY_REFUSED) or length > max_bytes:
        raise too_large(max_bytes)
    data = environ["wsgi.input"].read(length) if length else b""
    if not data.strip():
        if empty is None:
            raise bad("send a JSON object")
        return empty
    try:
        return json.loads(data.decode("utf-8"))     # RFC 8259: UTF-8 (json.loads would guess UTF-16 too)
    except UnicodeDecodeError:
        raise bad("the body is not UTF-8") from None
    except ValueError as e:
        raise bad(f"the body is not JSON: {e}") from None


def json_object(environ, max_bytes: int, empty: dict | None = None) -> dict:
    body = read_json(environ, max_bytes, empty)
    if not isinstance(body, dict):
        raise bad(f"the body must be a JSON object, not {kind(body)}")
    return body


_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a number",
          float: "a number", type(None): "null"}


def kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def checked_text(value: str, name: str, max_length: int = 1024) -> str:
    """Text a store may hold: no control characters (PostgreSQL refuses NUL), bounded."""
    if _CONTROL.search(value):
        raise bad(f"{name} must not contain control characters")
    if len(value) > max_length:
        raise bad(f"{name} is longer than {max_length} characters")
    return value


def text(body: dict, name: str, required: bool = False, default: str = "") -> str:
    value = body.get(name)
    if value is None or (required and value == ""):
        if required:
            raise bad(f"{name} is required")
        return default
    if not isinstance(value, str):
        raise bad(f"{name} must be a string, not {kind(value)}")
    return checked_text(value, name)


def texts(body: dict, name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"{name} must be a list of strings")
    return [checked_text(v, f"{name}[{i}]") for i, v in enumerate(value)]


def query(environ) -> dict[str, str]:
    """The query string's parameters (the first of repeated ones)."""
    try:
        parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise bad("the query string is not UTF-8") from None
    return {k: checked_text(v[0], k) for k, v in parsed.items()}


def identifier(value: str, name: str) -> int:
    """A row id as a path segment or parameter gives it."""
    if not value.isascii() or not value.isdigit() or int(value) > BIGINT:
        raise bad(f"{name} must be a whole number, not {value!r}")
    return int(value)


Handler = Callable[..., tuple[str, Any]]


class Router:
    """``add(pattern, method, handler)``: ``pattern`` matches the whole path and its groups are the
    handler's arguments; each route is counted in the metrics as ``METHOD pattern`` (groups as <id>)."""

    def __init__(self, guide: str = ""):
        self.guide = guide
        self.routes: list[tuple[re.Pattern, dict[str, tuple[Handler, str]]]] = []

    def add(self, pattern: str, method: str, handler: Handler) -> None:
        name = f"{method} {re.sub(r'[(][^)]*[)]', '<id>', pattern)}"
        for regex, methods in self.routes:
            if regex.pattern == pattern:
                methods[method] = (handler, name)
                return
        self.routes.append((re.compile(pattern), {method: (handler, name)}))

    def __call__(self, environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        started = time.perf_counter()
        name, headers = "", []
        try:
            match, methods = self._find(path)
            if method not in methods:
                allowed = ", ".join(sorted(methods))
                raise HttpError("405 Method Not Allowed", f"{method} is not allowed on {path}; use {allowed}",
                                [("Allow", allowed)])
            handler, name = methods[method]
            if environ.get(BODY_REFUSED):
                raise too_large(environ[BODY_REFUSED])
            status, body = handler(environ, *match.groups())
        except HttpError as e:
            status, body, headers = e.status, {"error": e.message}, e.headers
            if e.status.startswith("404") and not name:
                body["see"] = self.guide
        except Exception:
            log.exception("HTTP handler failed", extra={"path": path, "method": method})
            status, body = "500 Internal Server Error", {"error": "the service failed to process the request"}
        if name:
            metrics.observe(name, "success" if status[0] in "23" else "failure", status[:3],
                            time.perf_counter() - started)
        return respond(start_response, status, body, headers)

    def _find(self, path: str):
        for regex, methods in self.routes:
            match = regex.fullmatch(path)
            if match:
                return match, methods
        raise HttpError("404 Not Found", f"nothing at {path}")
