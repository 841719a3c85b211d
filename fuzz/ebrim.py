"""The ebRIM parser (``affinity_domain.ebrim``) on any XML a peer sends, read as the doors read it
(``xmlsafe.parse``): every ``rim:RegistryObjectList`` parsed, each object's accessors called and
the object written back. Documented error: ``xmlsafe.UnsafeXml``; the parse itself never raises."""
from __future__ import annotations

from fuzz.harness import instrumented, main

with instrumented("affinity_domain.ebrim"):
    from affinity_domain import ebrim, ns, xmlsafe

ALLOWED = (xmlsafe.UnsafeXml,)


def test_one_input(data: bytes) -> None:
    try:
        root = xmlsafe.parse(data, 1 << 20)
    except ALLOWED:
        return
    for container in root.iter(ebrim.q(ns.RIM, "RegistryObjectList")):
        objects = ebrim.parse_object_list(container)
        for obj in objects.objects:
            obj.patient_id, obj.unique_id, obj.slot_value("creationTime")
            for c in obj.classifications:
                ebrim.code_key(c)
            ebrim.to_element(obj)
        for ref in objects.object_refs:
            ebrim.object_ref(ref)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith(f"{{{ns.RIM}}}"):
            ebrim.parse_object(el)


def seeds() -> list[bytes]:
    """The registry tests' submissions (tests/xds.py): documents, folders, associations, and a
    stored query."""
    from tests.xds import FIND_DOCUMENTS, Doc, association, envelope, stored_query, submission
    pid = "P1^^^&1.2.3&ISO"
    return [envelope(ns.REGISTER, submission(pid, [Doc(), Doc()], folders=["F1"])),
            envelope(ns.REGISTER, submission(pid, [Doc()], extra=association("RPLC", "Document01", "urn:uuid:x"))),
            submission(pid).encode(),
            envelope(ns.STORED_QUERY, stored_query(FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"'{pid}'"}))]


if __name__ == "__main__":
    main("ebrim", test_one_input, seeds)
