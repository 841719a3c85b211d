"""The audit record of one XDS / XDS-I.b SOAP exchange (ITI-18, 41, 42, 43, 51, 57, RAD-68, RAD-69), as either
end records it: a pure function of the request, the answer and the two nodes. ``soap_door`` calls it for the
server side of every route, ``soap_client`` for the client side of every call, so that each actor's every
SOAP transaction is recorded once per end without code of its own.

IHE's participants (ITI TF-2 "Security Considerations" of each transaction): the requestor's UserID is its
``wsa:ReplyTo`` (the anonymous address when it has none), with its IP address; the responder's UserID is the
service endpoint URI. Source and Destination roles follow the data: the requestor is the Source of a query or a
submission, the Destination of a retrieve (ITI-43, RAD-69)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from lxml import etree

from .. import audit_codes as c, ns
from .. import ebrim as rim
from . import events
from .message import AuditMessage, Human, Study

_RIM, _RS, _XDSB, _RAD = f"{{{ns.RIM}}}", f"{{{ns.RS}}}", f"{{{ns.XDSB}}}", f"{{{ns.IHERAD}}}"
_PATIENT_SLOTS = ("$XDSDocumentEntryPatientId", "$XDSSubmissionSetPatientId", "$XDSFolderPatientId", "$patientId")
_QUERIES = (ns.STORED_QUERY, ns.MULTI_PATIENT_QUERY)
AUDITED = frozenset(ns.TRANSACTIONS)


@dataclass(frozen=True)
class Node:
    """One end of the exchange: ``user_id`` as IHE names it (ReplyTo, endpoint URI), ``host`` its address."""
    user_id: str
    host: str | None = None
    alt: str | None = None


def requestor_of(reply_to: str, host: str | None) -> Node:
    return Node(reply_to or ns.WSA_ANONYMOUS, host or None)


def ourselves(reply_to: str = "") -> Node:
    """This process as the requestor (client side): the ReplyTo we send, our process id as AlternativeUserID."""
    return Node(reply_to or ns.WSA_ANONYMOUS, _HOST, str(os.getpid()))


def _unquote(value: str) -> list[str]:
    """Values of a stored-query slot: ``'a'`` or ``('a','b')``."""
    value = value.strip()
    if value.startswith("(") and value.endswith(")"):
        value = value[1:-1]
    return [v.strip().strip("'").strip() for v in value.split(",") if v.strip().strip("'").strip()]


def query_patients(request: etree._Element) -> list[str]:
    query = request.find(f"{_RIM}AdhocQuery")
    if query is None:
        return []
    found: list[str] = []
    for slot in query.iterfind(f"{_RIM}Slot"):
        if slot.get("name") in _PATIENT_SLOTS:
            for v in slot.iterfind(f"{_RIM}ValueList/{_RIM}Value"):
                found += _unquote(v.text or "")
    return found


def _query_id(request: etree._Element) -> str:
    query = request.find(f"{_RIM}AdhocQuery")
    return (query.get("id") or "") if query is not None else ""


def submission(request: etree._Element) -> tuple[str | None, str]:
    """(patient id, submission set uniqueId) of a SubmitObjectsRequest, or of the one in a Provide and Register."""
    submit = request if request.tag == rim.q(ns.LCM, "SubmitObjectsRequest") else \
        request.find(rim.q(ns.LCM, "SubmitObjectsRequest"))
    patient, uid = None, ""
    if submit is None:
        return patient, uid
    for package in submit.iterfind(f"{_RIM}RegistryObjectList/{_RIM}RegistryPackage"):
        for ext in package.iterfind(f"{_RIM}ExternalIdentifier"):
            scheme = ext.get("identificationScheme")
            if scheme == rim.SS_PATIENT_ID:
                patient = ext.get("value", "").strip() or patient
            elif scheme == rim.SS_UNIQUE_ID:
                uid = ext.get("value", "").strip() or uid
        if uid:
            break
    if patient is None:     # ITI-57 may carry no submission set patient: any entry's
        for ext in submit.iter(f"{_RIM}ExternalIdentifier"):
            if ext.get("identificationScheme") in (rim.DE_PATIENT_ID, rim.FOL_PATIENT_ID):
                patient = ext.get("value", "").strip() or None
                break
    return patient, uid


def _is_imaging(request: etree._Element) -> bool:
    return any(e.get("mimeType") == "application/dicom" for e in request.iter(f"{_RIM}ExtrinsicObject"))


def documents(request: etree._Element) -> list[tuple[str, str, str | None]]:
    out = []
    for doc in request.iter(f"{_XDSB}DocumentRequest"):
        out.append(((doc.findtext(f"{_XDSB}DocumentUniqueId") or "").strip(),
                    (doc.findtext(f"{_XDSB}RepositoryUniqueId") or "").strip(),
                    (doc.findtext(f"{_XDSB}HomeCommunityId") or "").strip() or None))
    return out


def requested_studies(request: etree._Element) -> list[Study]:
    """The studies of a RAD-69 request, each with the instances asked for (their SOP class is not in the
    request: they are listed under the class the study's manifest gives them, here unknown: empty)."""
    out = []
    for st in request.iterfind(f"{_RAD}StudyRequest"):
        uids = tuple((d.findtext(f"{_XDSB}DocumentUniqueId") or "").strip()
                     for d in st.iter(f"{_XDSB}DocumentRequest"))
        out.append(Study(st.get("studyInstanceUID", "").strip(), {"": uids} if uids else {}))
    return out


def outcome(answer: etree._Element | None) -> tuple[int, str | None]:
    """EventOutcomeIndicator and description of an XDS answer; no answer (a fault, the peer unreachable): 8."""
    if answer is None:
        return c.SERIOUS_FAILURE, None
    status = answer.get("status")
    inner = answer
    if status is None:
        inner = answer.find(f"{_RS}RegistryResponse")
        status = inner.get("status", "") if inner is not None else ""
        if inner is None:
            return (c.SERIOUS_FAILURE, "SOAP Fault") if answer.tag == f"{{{ns.SOAP12}}}Fault" else (c.SUCCESS, None)
    error = inner.find(f"{_RS}RegistryErrorList/{_RS}RegistryError")
    return events.outcome_of_xds(status), (error.get("errorCode") if error is not None else None)


@dataclass(frozen=True)
class Facts:
    """What the record takes from the request, read before the request is handled (a handler may move its
    elements elsewhere: the repository sends the SubmitObjectsRequest of an ITI-41 on to the registry)."""
    patients: tuple[str, ...] = ()
    submission_set: str = ""
    imaging: bool = False
    query_id: str = ""
    query: bytes = b""
    documents: tuple[tuple[str, str, str | None], ...] = ()
    studies: tuple[Study, ...] = ()


def facts(action: str, request: etree._Element) -> Facts | None:
    """None: not an audited transaction."""
    if action not in AUDITED:
        return None
    if action in _QUERIES:
        return Facts(tuple(query_patients(request)), query_id=_query_id(request), query=etree.tostring(request))
    if action in (ns.PROVIDE_AND_REGISTER, ns.REGISTER, ns.UPDATE):
        patient, uid = submission(request)
        return Facts((patient,) if patient else (), uid, action == ns.PROVIDE_AND_REGISTER and _is_imaging(request))
    if action == ns.RETRIEVE:
        return Facts(documents=tuple(documents(request)))
    return Facts(studies=tuple(requested_studies(request)))


def record(action: str, request: etree._Element | Facts, answer: etree._Element | None, *, server: bool,
           requestor: Node, responder: Node, patients: Iterable[str] = (), human: Human | None = None,
           description: str | None = None, studies: list[Study] | None = None) -> AuditMessage | None:
    """The record of ``action`` (None: not an audited transaction). ``request``: the request, or its ``facts``
    read before it was handled; ``patients``: the ids the caller knows the exchange is about when the messages
    do not say (a retrieve); ``studies``: a RAD-69's instances with their SOP classes, when the recorder knows
    them; ``server``: which end records."""
    f = request if isinstance(request, Facts) else facts(action, request)
    if f is None:
        return None
    code, error = outcome(answer)
    common = dict(outcome=code, description=description or error, human=human)
    named = list(dict.fromkeys([*f.patients, *(p for p in patients if p)]))
    first = named[0] if named else None
    source_first = action not in (ns.RETRIEVE, ns.RETRIEVE_IMAGING)
    req = (events.source if source_first else events.destination)(requestor.user_id, host=requestor.host,
                                                                   alt=requestor.alt, requestor=True)
    res = (events.destination if source_first else events.source)(responder.user_id, host=responder.host,
                                                                   alt=responder.alt, requestor=False)
    if action == ns.STORED_QUERY:
        return events.iti18_registry_stored_query(consumer=req, registry=res, query_id=f.query_id, request=f.query,
                                                  patient=first, **common)
    if action == ns.MULTI_PATIENT_QUERY:
        return events.iti51_multi_patient_query(consumer=req, registry=res, query_id=f.query_id, request=f.query,
                                                patients=named, **common)
    if action in (ns.PROVIDE_AND_REGISTER, ns.REGISTER, ns.UPDATE):
        direction = events.IMPORT if server else events.EXPORT
        if action == ns.REGISTER:
            return events.iti42_register(direction=direction, repository=req, registry=res, patient=first,
                                         submission_set_uid=f.submission_set, **common)
        if action == ns.UPDATE:
            return events.iti57_update_document_set(direction=direction, administrator=req, registry=res,
                                                    patient=first, submission_set_uid=f.submission_set, **common)
        if f.imaging:
            return events.rad68_provide_and_register_imaging(direction=direction, imaging_source=req, repository=res,
                                                             patient=first, submission_set_uid=f.submission_set,
                                                             **common)
        return events.iti41_provide_and_register(direction=direction, document_source=req, repository=res,
                                                 patient=first, submission_set_uid=f.submission_set, **common)
    direction = events.EXPORT if server else events.IMPORT
    if action == ns.RETRIEVE:
        return events.iti43_retrieve_document_set(direction=direction, repository=res, consumer=req,
                                                  documents=f.documents, patient=first, **common)
    return events.rad69_retrieve_imaging_document_set(direction=direction, imaging_source=res, consumer=req,
                                                      studies=studies or list(f.studies), patient=first, **common)


def _hostname() -> str:
    import socket
    return socket.gethostname()


_HOST = _hostname()
