"""ITI-41 / RAD-68 rules, without I/O: pair documents with their DocumentEntries, check the
submitter's hash and size, and stamp hash, size and repositoryUniqueId for the registry."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from affinity_domain import ns
from affinity_domain import ebrim as rim
from affinity_domain import mtom
from affinity_domain.errors import MISSING_DOCUMENT, MISSING_DOCUMENT_METADATA, REPOSITORY_METADATA_ERROR, XdsError
from affinity_domain.ns import XDSB


@dataclass
class Content:
    """One document's bytes as received: spooled to ``path``, or why they are unusable."""

    size: int = 0
    sha1: str = ""
    path: Path | None = None
    error: str = ""
    error_code: str = MISSING_DOCUMENT


@dataclass
class DocumentPart:
    """An ``xdsb:Document``: an XOP reference (``cid``) or inline base64 (``text``)."""

    id: str
    cid: str | None = None
    text: str | None = None


@dataclass
class StoredDocument:
    entry_id: str
    unique_id: str
    mime_type: str
    content: Content
    patient_id: str | None = None


def read_request(request: etree._Element) -> tuple[etree._Element | None, list[DocumentPart]]:
    """The SubmitObjectsRequest and the documents of a ProvideAndRegisterDocumentSetRequest."""
    submit = request.find(rim.q(ns.LCM, "SubmitObjectsRequest"))
    parts = []
    for doc in request.iterfind(f"{{{XDSB}}}Document"):
        refs = mtom.include_refs(doc)
        if refs:
            parts.append(DocumentPart(doc.get("id", ""), cid=refs[0][1]))
        else:
            parts.append(DocumentPart(doc.get("id", ""), text=doc.text or ""))
    return submit, parts


def _entries(submit: etree._Element) -> list[etree._Element]:
    container = submit.find(rim.q(ns.RIM, "RegistryObjectList"))
    return [] if container is None else list(container.iterfind(rim.q(ns.RIM, "ExtrinsicObject")))


def slot_values(entry: etree._Element, name: str) -> list[str] | None:
    for slot in entry.iterfind(rim.q(ns.RIM, "Slot")):
        if slot.get("name") == name:
            return [(v.text or "").strip() for v in slot.iterfind(f"{{{ns.RIM}}}ValueList/{{{ns.RIM}}}Value")]
    return None


def entry_unique_id(entry: etree._Element) -> str:
    for ext in entry.iterfind(rim.q(ns.RIM, "ExternalIdentifier")):
        if ext.get("identificationScheme") == rim.DE_UNIQUE_ID:
            return ext.get("value", "").strip()
    return ""


def _patient_id(entry: etree._Element) -> str | None:
    for ext in entry.iterfind(rim.q(ns.RIM, "ExternalIdentifier")):
        if ext.get("identificationScheme") == rim.DE_PATIENT_ID:
            return ext.get("value", "").strip() or None
    return None


def set_slot(entry: etree._Element, name: str, value: str) -> None:
    """Set a one-valued Slot, replacing any the submitter sent; new Slots go after the others
    (rim.xsd puts Slots first)."""
    slots = list(entry.iterfind(rim.q(ns.RIM, "Slot")))
    for slot in slots:
        if slot.get("name") == name:
            entry.remove(slot)
    slots = list(entry.iterfind(rim.q(ns.RIM, "Slot")))
    slot = etree.Element(rim.q(ns.RIM, "Slot"), name=name)
    etree.SubElement(etree.SubElement(slot, rim.q(ns.RIM, "ValueList")), rim.q(ns.RIM, "Value")).text = value
    if slots:
        slots[-1].addnext(slot)
    else:
        entry.insert(0, slot)


def _check_sent(entry_id: str, content: Content, hashes: list[str] | None,
                sizes: list[str] | None) -> list[XdsError]:
    errors = []
    if hashes is not None and (len(hashes) != 1 or hashes[0].lower() != content.sha1):
        errors.append(XdsError(REPOSITORY_METADATA_ERROR,
                               f"DocumentEntry {entry_id}: hash {','.join(hashes)} sent, "
                               f"the document's SHA-1 is {content.sha1}", entry_id))
    if sizes is not None and (len(sizes) != 1 or not sizes[0].isdigit() or int(sizes[0]) != content.size):
        errors.append(XdsError(REPOSITORY_METADATA_ERROR,
                               f"DocumentEntry {entry_id}: size {','.join(sizes)} sent, "
                               f"the document has {content.size} bytes", entry_id))
    return errors


def check_and_stamp(submit: etree._Element, contents: dict[str, Content],
                    repository_unique_id: str) -> tuple[list[XdsError], list[StoredDocument]]:
    """All errors found, or the documents to store; on success the DocumentEntries in ``submit``
    carry hash, size and repositoryUniqueId."""
    entries = {e.get("id", ""): e for e in _entries(submit)}
    errors: list[XdsError] = []
    for doc_id in contents:
        if doc_id not in entries:
            errors.append(XdsError(MISSING_DOCUMENT_METADATA,
                                   f"Document {doc_id} has no DocumentEntry in the metadata", doc_id))
    seen: dict[str, str] = {}
    docs = []
    for entry_id, entry in entries.items():
        content = contents.get(entry_id)
        if content is None:
            errors.append(XdsError(MISSING_DOCUMENT, f"DocumentEntry {entry_id} has no Document", entry_id))
            continue
        if content.error:
            errors.append(XdsError(content.error_code, f"Document {entry_id}: {content.error}", entry_id))
            continue
        errors += _check_sent(entry_id, content, slot_values(entry, "hash"), slot_values(entry, "size"))
        unique_id = entry_unique_id(entry)
        if not unique_id:
            errors.append(XdsError(REPOSITORY_METADATA_ERROR, f"DocumentEntry {entry_id} has no uniqueId", entry_id))
        elif unique_id in seen:
            errors.append(XdsError(REPOSITORY_METADATA_ERROR,
                                   f"DocumentEntries {seen[unique_id]} and {entry_id} share uniqueId {unique_id}",
                                   entry_id))
        seen[unique_id] = entry_id
        docs.append(StoredDocument(entry_id, unique_id, entry.get("mimeType", ""), content, _patient_id(entry)))
    if errors:
        return errors, []
    for doc in docs:
        entry = entries[doc.entry_id]
        set_slot(entry, "hash", doc.content.sha1)
        set_slot(entry, "size", str(doc.content.size))
        set_slot(entry, "repositoryUniqueId", repository_unique_id)
    return [], docs


def stray_parts(parts: list[DocumentPart], attachments) -> list[XdsError]:
    """MIME parts no Document references (ITI TF-3 Table 4.2.4.1-2: XDSMissingDocumentMetadata, "MIME
    package contains MIME part with Content-Id header not found in metadata")."""
    named = {p.cid for p in parts if p.cid is not None}
    return [XdsError(MISSING_DOCUMENT_METADATA, f"MIME part <{cid}> is named by no Document of the request", cid)
            for cid in attachments if cid not in named]


def is_imaging(request: etree._Element) -> bool:
    """A Provide and Register whose documents are DICOM (a KOS manifest): RAD-68 rather than ITI-41."""
    return any(e.get("mimeType") == "application/dicom"
               for e in request.iter(rim.q(ns.RIM, "ExtrinsicObject")))
