"""Value formats of XDS metadata (ITI TF-3 4.2.3.1.7): DTM, OID, CX, XCN, XON. Pure predicates."""
from __future__ import annotations

import re

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_DTM = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2})?)?)?)?)?$")
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")


def is_oid(value: str) -> bool:
    return len(value) <= 64 and bool(_OID.match(value))


def is_dtm(value: str) -> bool:
    if not _DTM.match(value):
        return False
    fields = [int(value[i:i + 2]) for i in range(4, len(value), 2)]
    limits = [(1, 12), (1, 31), (0, 23), (0, 59), (0, 59)]
    return all(lo <= f <= hi for f, (lo, hi) in zip(fields, limits))


def dtm_key(value: str) -> str:
    """A DTM padded to 14 digits, so that string order is time order across precisions."""
    return value.ljust(14, "0")


def is_sha1_hex(value: str) -> bool:
    return bool(_HEX40.match(value))


def cx_problem(value: str) -> str | None:
    """Why ``value`` is not an XDS patient id ``ID^^^&OID&ISO`` (None when it is)."""
    parts = value.split("^")
    if len(parts) != 4:
        return "must have four components: ID^^^&OID&ISO"
    if not parts[0] or parts[1] or parts[2]:
        return "ID must be present and components 2 and 3 empty"
    authority = parts[3].split("&")
    if len(authority) != 3 or authority[0] or authority[2] != "ISO" or not is_oid(authority[1]):
        return "assigning authority must be &OID&ISO"
    return None


def cx_authority(value: str) -> str:
    parts = value.split("^")
    authority = parts[3].split("&") if len(parts) > 3 else []
    return authority[1] if len(authority) > 1 else ""


def is_unique_id(value: str) -> bool:
    """OID, or OID^extension (extension at most 16 characters)."""
    root, _, ext = value.partition("^")
    return is_oid(root) and len(ext) <= 16 and "^" not in ext


def is_xcn(value: str) -> bool:
    parts = value.split("^")
    return any(p for p in parts[:3])


def is_xon(value: str) -> bool:
    return bool(value.split("^")[0])
