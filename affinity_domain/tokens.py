"""Bearer tokens for the JSON APIs: ``xdsi token add NAME --role ROLE`` prints one once; only its
SHA-256 is kept, in the shared database's ``access`` schema, so every actor of the domain (one host
or one container each) knows the same tokens.

A token is 32 random bytes, so a plain SHA-256 is enough to keep it (a slow password hash guards
guessable secrets; these are not). A door remembers a lookup for ``CACHE_SECONDS``: a removed token
stops working within that time; at most ``CACHE_ENTRIES`` are remembered (a flood of made-up
tokens empties the memory, it does not grow it)."""
from __future__ import annotations

import hashlib
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass

from . import db
from .access import HTTP_ROLES
from .exceptions import XdsiError

SCHEMA = "access"
PREFIX = "xdsi_"
CACHE_SECONDS = 5.0
CACHE_ENTRIES = 4096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class TokenError(XdsiError):
    permanent = True


@dataclass(frozen=True)
class Identity:
    """Who a request is from (a token's name, or a certificate's), and its role."""

    name: str
    role: str
    by: str = "token"           # token | certificate


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class TokenStore:
    def __init__(self, url: str):
        db.migrate(url, SCHEMA, "affinity_domain")
        self.pool = db.open_pool(url, SCHEMA, max_size=2)
        self._cache: dict[str, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.close()

    def add(self, name: str, role: str) -> str:
        """A new token for ``name`` (returned once, never stored)."""
        if not _NAME.fullmatch(name):
            raise TokenError(f"token name {name!r}: letters, digits and . _ @ -, at most 64")
        if role not in HTTP_ROLES:
            raise TokenError(f"role {role!r}: use one of {', '.join(HTTP_ROLES)}")
        token = PREFIX + secrets.token_urlsafe(32)
        with self.pool.connection() as conn:
            cur = conn.execute("INSERT INTO token (name, role, sha256) VALUES (%s, %s, %s) "
                               "ON CONFLICT (name) DO NOTHING", (name, role, digest(token)))
            if cur.rowcount == 0:
                raise TokenError(f"a token named {name!r} exists; remove it first")
        return token

    def remove(self, name: str) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("DELETE FROM token WHERE name = %s", (name,)).rowcount > 0

    def list(self) -> list[tuple[str, str, str]]:
        with self.pool.connection() as conn:
            return [(n, r, str(c)) for n, r, c in
                    conn.execute("SELECT name, role, created_at FROM token ORDER BY name")]

    def count(self) -> int:
        with self.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM token").fetchone()[0]

    def lookup(self, token: str) -> Identity | None:
        key, now = digest(token), time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.pool.connection() as conn:
            row = conn.execute("SELECT name, role FROM token WHERE sha256 = %s", (key,)).fetchone()
        found = Identity(row[0], row[1]) if row else None
        with self._lock:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = (now + CACHE_SECONDS, found)
        return found


def first_token(url: str) -> str | None:
    """For the quick start: an operator token named ``operator`` when the domain has no token yet."""
    store = TokenStore(url)
    try:
        if store.count():
            return None
        try:
            return store.add("operator", "operator")
        except TokenError:
            return None             # another process made it just now
    finally:
        store.close()


def run(config, args) -> int:
    """``xdsi token add NAME --role ROLE | list | remove NAME``."""
    store = TokenStore(db.database_url(config))
    try:
        if args.token_command == "add":
            print(store.add(args.name, args.role))
            print(f"(token of {args.name}, role {args.role}: shown once, only its hash is kept; "
                  "send it as Authorization: Bearer …, or set XDSI_TOKEN for the xdsi commands)",
                  file=sys.stderr)
        elif args.token_command == "list":
            for name, role, created in store.list():
                print(f"{name:<24} {role:<9} {created}")
        elif not store.remove(args.name):
            print(f"xdsi: no token named {args.name!r}", file=sys.stderr)
            return 1
        return 0
    except TokenError as e:
        print(f"xdsi: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
        if not config.database_url:
            db.stop_embedded(config.data_dir)
