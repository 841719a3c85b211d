"""ITI-43 Retrieve Document Set, without I/O: read the DocumentRequests, decide which are served,
and write the RetrieveDocumentSetResponse that references each document's MTOM part."""
from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from affinity_domain.errors import DOCUMENT_UNIQUE_ID_ERROR, REPOSITORY_ERROR, UNKNOWN_REPOSITORY_ID, XdsError
from affinity_domain.ns import XDSB
from affinity_domain.retrieve import DocumentResponse, retrieve_document_set_response


@dataclass
class DocumentRequest:
    home_community_id: str
    repository_unique_id: str
    document_unique_id: str


@dataclass
class Served:
    request: DocumentRequest
    mime_type: str
    content_id: str


def read_request(request: etree._Element) -> list[DocumentRequest]:
    def text(el, name):
        return (el.findtext(f"{{{XDSB}}}{name}") or "").strip()
    return [DocumentRequest(text(r, "HomeCommunityId"), text(r, "RepositoryUniqueId"), text(r, "DocumentUniqueId"))
            for r in request.iterfind(f"{{{XDSB}}}DocumentRequest")]


def plan(requests: list[DocumentRequest], repository_unique_id: str,
         stored: dict[str, str]) -> tuple[list[XdsError], list[Served]]:
    """``stored``: uniqueId -> mimeType of the registered documents asked for. Each document
    is sent once even if asked for twice; content ids are ``doc<n>@xdsi``."""
    errors, served, sent = [], [], set()
    if not requests:
        errors.append(XdsError(REPOSITORY_ERROR, "RetrieveDocumentSetRequest has no DocumentRequest"))
    for r in requests:
        if r.repository_unique_id != repository_unique_id:
            errors.append(XdsError(UNKNOWN_REPOSITORY_ID,
                                   f"repositoryUniqueId {r.repository_unique_id!r} is not this repository's "
                                   f"({repository_unique_id})", r.repository_unique_id))
        elif r.document_unique_id not in stored:
            errors.append(XdsError(DOCUMENT_UNIQUE_ID_ERROR,
                                   f"no document {r.document_unique_id!r} in repository {repository_unique_id}",
                                   r.document_unique_id))
        elif r.document_unique_id not in sent:
            sent.add(r.document_unique_id)
            served.append(Served(r, stored[r.document_unique_id], f"doc{len(served)}@xdsi"))
    return errors, served


def response(errors: list[XdsError], served: list[Served]) -> etree._Element:
    return retrieve_document_set_response(errors, [DocumentResponse(
        s.request.home_community_id, s.request.repository_unique_id, s.request.document_unique_id, s.mime_type,
        s.content_id) for s in served])
