"""RAD-69 Retrieve Imaging Document Set, without I/O: read the study → series → document
requests and the TransferSyntaxUIDList, decide what is served how, and write the
RetrieveDocumentSetResponse whose DocumentResponses reference one MTOM part per instance.

An instance goes out byte for byte when its stored transfer syntax is asked for; an uncompressed
one may be re-encoded into another uncompressed syntax asked for; anything else, or an unknown
uid, gets its own RegistryError located at that uid (PartialSuccess when others are served)."""
from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from affinity_domain.errors import DOCUMENT_UNIQUE_ID_ERROR, REPOSITORY_ERROR, UNKNOWN_REPOSITORY_ID, XdsError
from affinity_domain.ns import IHERAD, XDSB
from affinity_domain.retrieve import DocumentResponse, retrieve_document_set_response
from affinity_domain.transfer_syntax import UNCOMPRESSED


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
    return retrieve_document_set_response(errors, [DocumentResponse(
        s.request.home_community_id, s.request.repository_unique_id, s.request.document_unique_id,
        "application/dicom", s.content_id) for s in served])
