"""The root of every exception xdsi raises, so that retry policies read an attribute instead of
listing exception types."""
from __future__ import annotations


class XdsiError(Exception):
    """``retryable``: the same call may succeed later (a peer or the database was unavailable).
    ``permanent``: it never will (the input itself is wrong), so nothing retries it.
    Neither set: a policy decides (for instance, retry a bounded number of times)."""

    retryable = False
    permanent = False
