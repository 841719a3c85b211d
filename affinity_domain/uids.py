"""Unique identifiers as the profiles define them, checked in one place for every door: DICOM UIDs
(the UI value representation, PS3.5 9.1 and 6.2) and ISO OIDs (XDS metadata, ITI TF-3 4.2.3.1.7).
A value is checked before it is used at all; a value that passes is still never a file name."""
from __future__ import annotations

import re

MAX_LENGTH = 64          # a UI value, and an OID in XDS metadata
# Components of digits, a leading zero only in a component that is "0" (PS3.5 9.1).
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def is_uid(value: object) -> bool:
    """A DICOM UID: digits and dots, no empty component, no leading zero, at most 64 characters.
    The NUL that pads a UI value to even length on the wire is not part of it: strip it first."""
    return isinstance(value, str) and len(value) <= MAX_LENGTH and _UID.fullmatch(value) is not None


def is_oid(value: object) -> bool:
    """An ISO OID as XDS metadata carries one: a root arc 0, 1 or 2, then at least one more."""
    return isinstance(value, str) and len(value) <= MAX_LENGTH and _OID.fullmatch(value) is not None


def uid_problem(value: object, what: str = "UID") -> str | None:
    """Why ``value`` is not a DICOM UID, in words for a refusal (None when it is one)."""
    if is_uid(value):
        return None
    shown = repr(value)[:80]
    if isinstance(value, str) and len(value) > MAX_LENGTH:
        return f"{what} {shown} is longer than {MAX_LENGTH} characters"
    return f"{what} {shown} is not a DICOM UID (digits and dots, no leading zeros)"
