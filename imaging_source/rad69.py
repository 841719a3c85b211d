"""RAD-69 Retrieve Imaging Document Set, without I/O: read the study → series → document
requests and the TransferSyntaxUIDList, decide what is served how, and write the
RetrieveDocumentSetResponse whose DocumentResponses reference one MTOM part per instance.

An instance goes out byte for byte when its stored transfer syntax is asked for; an uncompressed
one may be re-encoded into another uncompressed syntax asked for; anything else, or an unknown
uid, gets its own RegistryError located at that uid (PartialSuccess when others are served)."""
from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from affinity_domain import errors as xds
from affinity_domain.errors import XdsError
from affinity_domain.mtom import XOP

XDSB = "urn:ihe:iti:xds-b:2007"
IHERAD = "urn:ihe:rad:xdsi-b:2009"
ACTION = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
RESPONSE_ACTION = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
DOCUMENT_UNIQUE_ID_ERROR = "XDSDocumentUniqueIdError"
UNKNOWN_REPOSITORY_ID = "XDSUnknownRepositoryId"
REPOSITORY_ERROR = "XDSRepositoryError"
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")   # explicit, implicit VR little endian


@dataclass(frozen=True)
class DocumentRequest:
    study_uid: str
    series_uid: str
    home_community_id: str
    repository_unique_id: str
    document_unique_id: str


@dataclass(frozen=True)
class Served:
    request: DocumentRequest
    sha1: str
    transfer_syntax: str        # what goes out
    transcode: bool             # False: the stored bytes as they are
    content_id: str


def read_request(el: etree._Element) -> tuple[list[DocumentRequest], list[str]]:
    def text(e, ns, name):
        return (e.findtext(f"{{{ns}}}{name}") or "").strip()
    requests = []
    for study in el.iterfind(f"{{{IHERAD}}}StudyRequest"):
        for series in study.iterfind(f"{{{IHERAD}}}SeriesRequest"):
            for doc in series.iterfind(f"{{{XDSB}}}DocumentRequest"):
                requests.append(DocumentRequest(
                    study.get("studyInstanceUID", "").strip(), series.get("seriesInstanceUID", "").strip(),
                    text(doc, XDSB, "HomeCommunityId"), text(doc, XDSB, "RepositoryUniqueId"),
                    text(doc, XDSB, "DocumentUniqueId")))
    syntaxes = [(t.text or "").strip()
                for t in el.iterfind(f"{{{IHERAD}}}TransferSyntaxUIDList/{{{IHERAD}}}TransferSyntaxUID")]
    return requests, [s for s in syntaxes if s]


def plan(requests: list[DocumentRequest], syntaxes: list[str], repository_unique_id: str,
         stored: dict[str, dict]) -> tuple[list[XdsError], list[Served]]:
    """``stored``: sop uid -> index row (study_uid, series_uid, transfer_syntax, sha1)."""
    errors, served, sent = [], [], set()
    if not requests:
        errors.append(XdsError(REPOSITORY_ERROR, "RetrieveImagingDocumentSetRequest has no DocumentRequest"))
    if not syntaxes:
        errors.append(XdsError(REPOSITORY_ERROR, "TransferSyntaxUIDList names no transfer syntax"))
        return errors, []
    for r in requests:
        row = stored.get(r.document_unique_id)
        if r.repository_unique_id != repository_unique_id:
            errors.append(XdsError(UNKNOWN_REPOSITORY_ID, f"repositoryUniqueId {r.repository_unique_id!r} is not "
                                   f"this Imaging Document Source's ({repository_unique_id})", r.document_unique_id))
        elif row is None or row["study_uid"] != r.study_uid or row["series_uid"] != r.series_uid:
            errors.append(XdsError(DOCUMENT_UNIQUE_ID_ERROR, f"no instance {r.document_unique_id} in series "
                                   f"{r.series_uid} of study {r.study_uid}", r.document_unique_id))
        elif r.document_unique_id in sent:
            continue
        elif row["transfer_syntax"] in syntaxes:
            sent.add(r.document_unique_id)
            served.append(Served(r, row["sha1"], row["transfer_syntax"], False, f"doc{len(served)}@xdsi"))
        elif row["transfer_syntax"] in UNCOMPRESSED and (
                target := next((s for s in syntaxes if s in UNCOMPRESSED), "")):
            sent.add(r.document_unique_id)
            served.append(Served(r, row["sha1"], target, True, f"doc{len(served)}@xdsi"))
        else:
            errors.append(XdsError(REPOSITORY_ERROR, f"instance {r.document_unique_id} is stored in "
                                   f"{row['transfer_syntax']}, which is not in the TransferSyntaxUIDList and cannot "
                                   f"be converted to one that is", r.document_unique_id))
    return errors, served


def response(errors: list[XdsError], served: list[Served]) -> etree._Element:
    root = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetResponse", nsmap={"xdsb": XDSB})
    root.append(xds.registry_response(errors, partial=bool(served)))
    for s in served:
        doc = etree.SubElement(root, f"{{{XDSB}}}DocumentResponse")
        if s.request.home_community_id:
            etree.SubElement(doc, f"{{{XDSB}}}HomeCommunityId").text = s.request.home_community_id
        etree.SubElement(doc, f"{{{XDSB}}}RepositoryUniqueId").text = s.request.repository_unique_id
        etree.SubElement(doc, f"{{{XDSB}}}DocumentUniqueId").text = s.request.document_unique_id
        etree.SubElement(doc, f"{{{XDSB}}}mimeType").text = "application/dicom"
        content = etree.SubElement(doc, f"{{{XDSB}}}Document")
        etree.SubElement(content, f"{{{XOP}}}Include", nsmap={"xop": XOP}, href=f"cid:{s.content_id}")
    return root
