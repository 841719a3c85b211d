"""A hostile or broken HTTP peer on bare sockets (none of the project's HTTP code): heads whose body
never comes, chunked bodies that run past a limit, floods of idle connections, a client that hangs
up mid-body. And curl, as the ordinary client that must still be answered."""
from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        return json.loads(self.body)


def where(url: str) -> tuple[str, int, str]:
    u = urlsplit(url)
    return u.hostname, u.port, u.path or "/"


def read_answer(sock: socket.socket) -> Answer:
    """One HTTP answer (its Content-Length's worth of body); raises TimeoutError if none comes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(lines[0].split()[1]), headers, body)


def _authorized(head: str) -> str:
    """``head`` with the test operator's bearer token, unless it has an Authorization header (the JSON
    doors authenticate before anything else)."""
    from tests.services import TEST_TOKEN
    return head if "\nauthorization:" in head.lower() else f"{head}\r\nAuthorization: Bearer {TEST_TOKEN}"


def request(url: str, head: str, body: bytes = b"", timeout: float = 5.0) -> Answer:
    """Send ``head`` (the request line and headers, without the blank line) and ``body``; the answer.
    The head gets the test operator's token unless it has an Authorization header."""
    head = _authorized(head)
    host, port, _ = where(url)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        return read_answer(s)


def head_only(url: str, method: str, length: int, content_type: str = "application/json",
              timeout: float = 5.0) -> Answer:
    """A request whose Content-Length says ``length`` and whose body never comes: only a door that
    refuses it from its headers answers within ``timeout``."""
    host, port, path = where(url)
    return request(url, f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                        f"Content-Length: {length}", timeout=timeout)


def chunked_past(url: str, limit: int, content_type: str, timeout: float = 10.0) -> tuple[Answer, int]:
    """A chunked body sent until it is refused (never terminated): the answer and the bytes sent by then."""
    host, port, path = where(url)
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(_authorized(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                              f"Transfer-Encoding: chunked").encode() + b"\r\n\r\n")
        deadline = time.monotonic() + timeout
        # Send until the answer is there to read (or sending stops): ``sent`` is what it took.
        while sent < limit * 4 and time.monotonic() < deadline and not select.select([s], [], [], 0)[0]:
            if not select.select([], [s], [], 0.05)[1]:
                continue
            try:
                sent += s.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except OSError:
                break
        return read_answer(s), sent


def flood(url: str, count: int) -> list[socket.socket]:
    """``count`` connections that do nothing: half send nothing at all, half half a request line."""
    host, port, _ = where(url)
    opened = []
    for n in range(count):
        s = socket.create_connection((host, port), timeout=5)
        if n % 2:
            s.sendall(b"GET /hea")
        opened.append(s)
    return opened


def close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


def curl(url: str, *args: str, max_time: float = 10.0, stdin: bytes | None = None,
         token: str | None = None) -> tuple[int, bytes]:
    """(HTTP status, body) as curl gets them; status 0 when curl got no answer within ``max_time``.
    ``stdin`` is what ``--data-binary @-`` sends. It sends the test operator's bearer token, or ``token``
    ("" for none)."""
    from tests.services import TEST_TOKEN
    token = TEST_TOKEN if token is None else token
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    done = subprocess.run(["curl", "-s", "-m", str(max_time), "-o", "-", "-w", "\n%{http_code}", *auth, *args, url],
                          input=stdin, capture_output=True, timeout=max_time + 10)
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status or 0), body


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """The server closed the connection (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total
