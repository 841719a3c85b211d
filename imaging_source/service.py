"""The imaging source's SOAP door: RAD-69 in, RetrieveDocumentSetResponse with one Part-10
instance per MTOM part out (streamed from the image store)."""
from __future__ import annotations

import io
import logging

import psycopg
import psycopg_pool
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian

from affinity_domain import consent, mtom, ns
from affinity_domain.audit import dicom as audit_dicom
from affinity_domain.errors import REPOSITORY_ERROR, XdsError
from affinity_domain.soap import Envelope
from affinity_domain.soap_door import Reply, Route, SoapDoor
from affinity_domain.xua import XuaSettings

from . import rad69
from affinity_domain.content import FileStore
from .indexer import NotIndexed
from .store import Index

log = logging.getLogger("xdsi.imaging_source")
_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def transcoded(path, transfer_syntax: str) -> bytes:
    """An uncompressed instance re-encoded in another uncompressed transfer syntax."""
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=transfer_syntax == ImplicitVRLittleEndian, little_endian=True,
               enforce_file_format=True)
    return out.getvalue()


def _withheld(consent_url: str, timeout: float, study_uids: list[str], principal) -> set[str]:
    """The studies of opted-out patients not to serve (the registry knows whose manifests they are)."""
    if not consent_url or not study_uids:
        return set()
    withheld = consent.ask_withheld(consent_url, studies=study_uids, timeout=timeout)["studies"]
    if not withheld:
        return set()
    consent.record(sorted(set(withheld.values())), principal, node="xdsi-imaging-source", transaction="RAD-69")
    return set() if consent.break_glass(principal) else set(withheld)


def retrieve(index: Index, content: FileStore, repository_unique_id: str, request, principal=None,
             consent_url: str = "", consent_timeout: float = 10.0, notes: dict | None = None) -> Reply:
    """RAD-69; an opted-out patient's studies are answered as unknown unless ``principal`` breaks the glass;
    ``notes`` gets the patients and studies served, for the exchange's audit record."""
    requests, syntaxes = rad69.read_request(request)
    try:
        rows = index.instances(sop_uids=[r.document_unique_id for r in requests]) if requests else []
    except _UNAVAILABLE as e:
        log.error("database unavailable", extra={"error": str(e)})
        return Reply(rad69.response([XdsError(REPOSITORY_ERROR, "the source's database is unavailable")], []))
    except NotIndexed as e:
        log.error("RAD-69 refused", extra={"reason": str(e)})
        return Reply(rad69.response([XdsError(REPOSITORY_ERROR, "instances received are not all indexed yet")], []))
    try:        # only about the studies held here
        hidden = _withheld(consent_url, consent_timeout, sorted({r["study_uid"] for r in rows}), principal)
    except consent.ConsentUnavailable as e:
        log.error("RAD-69 refused: consent unknown", extra={"error": str(e)})
        return Reply(rad69.response([XdsError(REPOSITORY_ERROR, "the registry cannot say whose studies these are "
                                              "(patient consent): nothing is served")], []))
    # A withheld study's instances are answered as unknown ones.
    stored = {r["sop_uid"]: r for r in rows if r["study_uid"] not in hidden}
    errors, served = rad69.plan(requests, syntaxes, repository_unique_id, stored)
    parts, kept = [], []
    for s in served:
        path = content.path(s.sha1)
        if not path.exists():
            errors.append(XdsError(REPOSITORY_ERROR, f"instance {s.request.document_unique_id} is indexed "
                                   "but its bytes are missing", s.request.document_unique_id))
            continue
        kept.append(s)
        if s.transcode:
            parts.append(mtom.OutPart(s.content_id, "application/dicom", data=transcoded(path, s.transfer_syntax)))
        else:
            parts.append(mtom.OutPart(s.content_id, "application/dicom", path=path))
    if notes is not None:
        by_sop = {r["sop_uid"]: r for r in rows}
        served_rows = [by_sop[s.request.document_unique_id] for s in kept]
        notes["patients"] = list(dict.fromkeys(f"{r['patient_id']}^^^&{r['issuer']}&ISO" for r in served_rows))
        notes["studies"] = audit_dicom.studies_of((r["study_uid"], r["sop_class"], r["sop_uid"]) for r in served_rows)
    return Reply(rad69.response(errors, kept), parts)


def door(index: Index, content: FileStore, repository_unique_id: str, max_bytes: int, max_parts: int,
         max_part_header_bytes: int, xua: XuaSettings | None = None, registry_url: str = "",
         registry_timeout: float = 10.0) -> SoapDoor:
    """``registry_url``: whose consent API says which studies are withheld (empty: none is)."""
    consent_url = consent.withheld_url(registry_url) if registry_url else ""

    def retrieve_imaging_document_set(envelope: Envelope, attachments):
        return retrieve(index, content, repository_unique_id, envelope.body, envelope.principal, consent_url,
                        registry_timeout, envelope.audit)

    return SoapDoor({
        ns.RETRIEVE_IMAGING: Route(f"{{{ns.IHERAD}}}RetrieveImagingDocumentSetRequest", ns.RETRIEVE_IMAGING_RESPONSE,
                                   retrieve_imaging_document_set, attachments=True),
    }, max_bytes=max_bytes, spool_dir=content.spool_dir, max_stream_bytes=max_bytes, max_parts=max_parts,
        max_part_header_bytes=max_part_header_bytes, xua=xua, node="xdsi-imaging-source")
