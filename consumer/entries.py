"""ITI-18 / ITI-43 / RAD-69 requests and answers the consumer needs, pure (lxml in and out)."""
from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from affinity_domain import ebrim as rim
from affinity_domain.ns import IHERAD, XDSB, XOP
from affinity_domain.query_ids import FIND_DOCUMENTS


@dataclass
class ManifestEntry:
    """One registered KOS manifest: what relevancy rules and the job need."""

    unique_id: str
    repository_unique_id: str
    home: str = ""
    service_start: str = ""
    source_patient_id: str = ""
    study_uid: str = ""
    accession: str = ""
    event_codes: list[str] = field(default_factory=list)      # code^^scheme
    format_code: str = ""                                     # code^^scheme
    mime_type: str = ""
    report: "ManifestEntry | None" = None                     # a report registered beside the study

    @property
    def is_manifest(self) -> bool:
        return self.format_code == rim.KOS_FORMAT


def find_documents(patient: str, since: str = "", manifests_only: bool = True) -> etree._Element:
    def slot(name, value):
        return f'<rim:Slot name="{name}"><rim:ValueList><rim:Value>{value}</rim:Value></rim:ValueList></rim:Slot>'
    slots = slot("$XDSDocumentEntryPatientId", f"'{patient}'") + \
        slot("$XDSDocumentEntryStatus", f"('{rim.APPROVED}')")
    if manifests_only:
        slots += slot("$XDSDocumentEntryFormatCode", f"('{rim.KOS_FORMAT}')")
    if since:
        slots += slot("$XDSDocumentEntryServiceStartTimeFrom", since)
    xml = (f'<query:AdhocQueryRequest xmlns:query="{rim.QUERY}" xmlns:rim="{rim.RIM}">'
           f'<query:ResponseOption returnType="LeafClass" returnComposedObjects="true"/>'
           f'<rim:AdhocQuery id="{FIND_DOCUMENTS}">{slots}</rim:AdhocQuery></query:AdhocQueryRequest>')
    return etree.fromstring(xml.replace("&", "&amp;").encode())


def read_entries(response: etree._Element) -> list[ManifestEntry]:
    container = response.find(rim.q(rim.RIM, "RegistryObjectList"))
    out = []
    for obj in rim.parse_object_list(container).of_kind("document_entry") if container is not None else []:
        refs = obj.slot(rim.REFERENCE_ID_LIST)
        out.append(ManifestEntry(
            unique_id=obj.unique_id or "", repository_unique_id=obj.slot_value("repositoryUniqueId") or "",
            home=obj.home, service_start=obj.slot_value("serviceStartTime") or "",
            source_patient_id=obj.slot_value("sourcePatientId") or "",
            study_uid=next((r.split("^")[0] for r in refs if r.endswith(rim.STUDY_UID_REF)), ""),
            accession=next((r.split("^")[0] for r in refs if r.endswith(rim.ACCESSION_REF)), ""),
            event_codes=[rim.code_key(c) for c in obj.codes(rim.DE_EVENT_CODE)],
            format_code=next((rim.code_key(c) for c in obj.codes(rim.DE_FORMAT_CODE)), ""),
            mime_type=obj.mime_type or ""))
    return out


def attach_reports(manifests: list[ManifestEntry], others: list[ManifestEntry]) -> None:
    """A report belongs beside a study when it names the study (or its accession) in referenceIdList."""
    for m in manifests:
        for r in others:
            if r.is_manifest or not r.unique_id:
                continue
            if (m.study_uid and r.study_uid == m.study_uid) or (m.accession and r.accession == m.accession):
                m.report = r
                break


def retrieve_document(repository_unique_id: str, unique_id: str, home: str = "") -> etree._Element:
    req = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    doc = etree.SubElement(req, f"{{{XDSB}}}DocumentRequest")
    if home:
        etree.SubElement(doc, f"{{{XDSB}}}HomeCommunityId").text = home
    etree.SubElement(doc, f"{{{XDSB}}}RepositoryUniqueId").text = repository_unique_id
    etree.SubElement(doc, f"{{{XDSB}}}DocumentUniqueId").text = unique_id
    return req


def retrieve_images(study_uid: str, series: dict[str, list[str]], repository_unique_id: str,
                    transfer_syntaxes: list[str]) -> etree._Element:
    """RAD-69: study -> series -> one DocumentRequest per SOP Instance UID."""
    req = etree.Element(f"{{{IHERAD}}}RetrieveImagingDocumentSetRequest", nsmap={"iherad": IHERAD, "xdsb": XDSB})
    study = etree.SubElement(req, f"{{{IHERAD}}}StudyRequest", studyInstanceUID=study_uid)
    for series_uid, instances in series.items():
        s = etree.SubElement(study, f"{{{IHERAD}}}SeriesRequest", seriesInstanceUID=series_uid)
        for uid in instances:
            doc = etree.SubElement(s, f"{{{XDSB}}}DocumentRequest")
            etree.SubElement(doc, f"{{{XDSB}}}RepositoryUniqueId").text = repository_unique_id
            etree.SubElement(doc, f"{{{XDSB}}}DocumentUniqueId").text = uid
    syntaxes = etree.SubElement(req, f"{{{IHERAD}}}TransferSyntaxUIDList")
    for ts in transfer_syntaxes:
        etree.SubElement(syntaxes, f"{{{IHERAD}}}TransferSyntaxUID").text = ts
    return req


def document_responses(response: etree._Element) -> list[tuple[str, str]]:
    """(DocumentUniqueId, cid of its part) for each DocumentResponse of an ITI-43/RAD-69 answer."""
    out = []
    for doc in response.iterfind(f"{{{XDSB}}}DocumentResponse"):
        uid = (doc.findtext(f"{{{XDSB}}}DocumentUniqueId") or "").strip()
        inc = doc.find(f"{{{XDSB}}}Document/{{{XOP}}}Include")
        href = inc.get("href", "") if inc is not None else ""
        out.append((uid, href[4:] if href.startswith("cid:") else href))
    return out
