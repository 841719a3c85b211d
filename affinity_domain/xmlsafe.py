"""The one way to parse XML that came from outside: no DTD, no entities, no network, bounded size."""
from __future__ import annotations

from lxml import etree

from .exceptions import XdsiError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024


class UnsafeXml(ValueError, XdsiError):
    """The input is not well-formed XML we are willing to read (DTD, entity, too large, broken)."""

    permanent = True


def _parser() -> etree.XMLParser:
    # resolve_entities=False keeps entity references unexpanded; load_dtd/no_network stop
    # any external fetch; huge_tree=False keeps libxml2's depth and text-size limits.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True,
                           remove_pis=True, collect_ids=False)


def parse(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    if len(data) > max_bytes:
        raise UnsafeXml(f"XML document larger than {max_bytes} bytes")
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise UnsafeXml("DOCTYPE and entity declarations are not accepted")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise UnsafeXml(f"malformed XML: {e}") from None
    # Catches DTDs hidden from the byte check by another encoding (UTF-16, …).
    if root.getroottree().docinfo.doctype:
        raise UnsafeXml("DOCTYPE and entity declarations are not accepted")
    return root
