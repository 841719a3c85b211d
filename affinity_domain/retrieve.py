"""The RetrieveDocumentSetResponse (ITI TF-2b 3.43.4.2), written alike by the repository for ITI-43
and by the Imaging Document Source for RAD-69: a RegistryResponse, then one DocumentResponse per
document served, its bytes referenced as an MTOM part."""
from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from . import errors as xds
from .ns import XDSB, XOP


@dataclass(frozen=True)
class DocumentResponse:
    home_community_id: str          # left out when empty
    repository_unique_id: str
    document_unique_id: str
    mime_type: str
    content_id: str                 # the MTOM part's Content-ID, without "cid:"


def retrieve_document_set_response(errors: list[xds.XdsError], documents: list[DocumentResponse]) -> etree._Element:
    """PartialSuccess when some documents are served despite errors."""
    root = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetResponse", nsmap={"xdsb": XDSB})
    root.append(xds.registry_response(errors, partial=bool(documents)))
    for d in documents:
        doc = etree.SubElement(root, f"{{{XDSB}}}DocumentResponse")
        if d.home_community_id:
            etree.SubElement(doc, f"{{{XDSB}}}HomeCommunityId").text = d.home_community_id
        etree.SubElement(doc, f"{{{XDSB}}}RepositoryUniqueId").text = d.repository_unique_id
        etree.SubElement(doc, f"{{{XDSB}}}DocumentUniqueId").text = d.document_unique_id
        etree.SubElement(doc, f"{{{XDSB}}}mimeType").text = d.mime_type
        content = etree.SubElement(doc, f"{{{XDSB}}}Document")
        etree.SubElement(content, f"{{{XOP}}}Include", nsmap={"xop": XOP}, href=f"cid:{d.content_id}")
    return root
