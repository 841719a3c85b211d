"""Value formats of XDS metadata (ITI TF-3 4.2.3.1.7): DTM, OID, CX, XCN, XON. Pure predicates."""
from __future__ import annotations

import re

from affinity_domain import uids

_DTM = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2})?)?)?)?)?$")
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")


is_oid = uids.is_oid


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


DICOM_UID_REGISTRY = "1.2.840.10008.2.6.1"     # the coding scheme of a formatCode that is a DICOM SOP class
MAX_UNIQUE_ID_BYTES = 128
MAX_EXTENSION = 16


def unique_id_problem(value: str, dicom: bool = False) -> str | None:
    """Why ``value`` is not a DocumentEntry.uniqueId (ITI TF-3 4.2.3.2.26), None when it is one: at
    most 128 bytes, in the form of its document's format; a DICOM document's is its SOP Instance
    UID, any other's an OID or OID^extension, the extension 1 to 16 characters and the '^' only
    there to join them."""
    if len(value.encode()) > MAX_UNIQUE_ID_BYTES:
        return f"is longer than {MAX_UNIQUE_ID_BYTES} bytes"
    if dicom:
        return None if uids.is_uid(value) else "is not a DICOM UID (a DICOM document's is its SOP Instance UID)"
    root, caret, extension = value.partition("^")
    if not is_oid(root):
        return "is not OID[^extension]"
    if caret and (not 0 < len(extension) <= MAX_EXTENSION or "^" in extension):
        return f"has an extension that is not 1 to {MAX_EXTENSION} characters"
    return None


def is_xcn(value: str) -> bool:
    parts = value.split("^")
    return any(p for p in parts[:3])


def is_xon(value: str) -> bool:
    return bool(value.split("^")[0])
