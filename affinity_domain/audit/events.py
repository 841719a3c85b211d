"""One builder per audited event, as IHE's audit tables specify it (ITI TF-2 and RAD TF-3 "Security
Considerations" of each transaction; DICOM PS3.15 A.5.3 for the DICOM events). Plain functions over data: each
returns an ``AuditMessage`` that ``audit.record`` queues.

Participants: ``source(...)`` / ``destination(...)`` make the Source and Destination ActiveParticipants (the
side that starts the exchange is the requestor); ``Human`` is the person behind a request. Export/Import
transactions are recorded by both ends: ``direction`` says which end records (``EXPORT`` sends, ``IMPORT``
receives)."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Iterable, Literal

from .. import audit_codes as c
from ..audit_codes import Code
from .message import AuditMessage, Human, Participant, ParticipantObject, Study

Direction = Literal["export", "import"]
EXPORT: Direction = "export"
IMPORT: Direction = "import"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ------------------------------------------------------------------ participants and objects

def source(user_id: str, *, host: str | None = None, alt: str | None = None, requestor: bool = True) -> Participant:
    return Participant(user_id, requestor, (c.SOURCE_ROLE,), alt_user_id=alt, host=host)


def destination(user_id: str, *, host: str | None = None, alt: str | None = None,
                requestor: bool = False) -> Participant:
    return Participant(user_id, requestor, (c.DESTINATION_ROLE,), alt_user_id=alt, host=host)


def hl7_application(application: str, facility: str) -> str:
    """The UserID IHE gives an HL7 v2 node: MSH-3|MSH-4 (sender) or MSH-5|MSH-6 (receiver)."""
    return f"{application}|{facility}"


def patient(pid: str) -> ParticipantObject:
    """A patient, its id in HL7 CX form (``id^^^&OID&ISO``)."""
    return ParticipantObject(pid, c.PATIENT_NUMBER, c.PERSON, c.ROLE_PATIENT)


def submission_set(uid: str) -> ParticipantObject:
    return ParticipantObject(uid, c.SUBMISSION_SET, c.SYSTEM_OBJECT, c.ROLE_JOB)


def document(unique_id: str, repository: str, home: str | None = None) -> ParticipantObject:
    details = [(c.DETAIL_REPOSITORY, repository.encode())]
    if home:
        details.append((c.DETAIL_HOME_COMMUNITY, home.encode()))
    return ParticipantObject(unique_id, c.REPORT_NUMBER, c.SYSTEM_OBJECT, c.ROLE_REPORT, details=tuple(details))


def study(s: Study) -> ParticipantObject:
    return ParticipantObject(s.uid, c.STUDY_INSTANCE_UID, c.SYSTEM_OBJECT, c.ROLE_REPORT, study=s)


def query_parameters(transaction: Code, query_id: str, request: bytes, *, encoding: str = "UTF-8",
                     home: str | None = None, control_id: str | None = None) -> ParticipantObject:
    details = [(c.DETAIL_QUERY_ENCODING, encoding.encode())]
    if home:
        details.append((c.DETAIL_HOME_COMMUNITY, home.encode()))
    if control_id:
        details.append((c.DETAIL_MESSAGE_CONTROL_ID, control_id.encode()))
    return ParticipantObject(query_id, transaction, c.SYSTEM_OBJECT, c.ROLE_QUERY, query=request,
                             details=tuple(details))


def _patients(ids: Iterable[str | None], control_id: str | None = None) -> tuple[ParticipantObject, ...]:
    details = ((c.DETAIL_MESSAGE_CONTROL_ID, control_id.encode()),) if control_id else ()
    return tuple(ParticipantObject(pid, c.PATIENT_NUMBER, c.PERSON, c.ROLE_PATIENT, details=details)
                 for pid in dict.fromkeys(ids) if pid)


def _message(event_id: Code, action: str, transaction: Code | None, participants, objects, *, outcome: int,
             description: str | None, human: Human | None, time: dt.datetime | None) -> AuditMessage:
    people = tuple(participants) + ((human.participant(),) if human else ())
    return AuditMessage(event_id, outcome, time or _now(), action, (transaction,) if transaction else (),
                        description, human.purposes if human else (), people, tuple(objects))


# ------------------------------------------------------------------ outcomes

def outcome_of_xds(status: str) -> int:
    """A RegistryResponse status: Success 0, PartialSuccess 4 (minor), anything else 8 (serious)."""
    if status.endswith(":Success"):
        return c.SUCCESS
    return c.MINOR_FAILURE if status.endswith(":PartialSuccess") else c.SERIOUS_FAILURE


def outcome_of_dimse(status: int) -> int:
    """A DIMSE status: success and pending 0, warnings (0x0001, 0xBxxx) 4, failures and cancel 8."""
    if status in (0x0000, 0xFF00, 0xFF01):
        return c.SUCCESS
    return c.MINOR_FAILURE if status == 0x0001 or status >> 12 == 0xB else c.SERIOUS_FAILURE


# ------------------------------------------------------------------ HL7 v2 (PIX, feeds)

def iti8_patient_identity_feed(*, sender: Participant, receiver: Participant, patients: Iterable[str],
                               control_id: str, action: str = c.CREATE, outcome: int = c.SUCCESS,
                               description: str | None = None, time: dt.datetime | None = None) -> AuditMessage:
    """ITI-8: Patient Record, C for a new patient (A01, A04, A05), U for an update or a merge's survivor
    (A08, A40), D for the id a merge retires. Both ends record the same message."""
    return _message(c.PATIENT_RECORD, action, c.ITI_8, (sender, receiver), _patients(patients, control_id),
                    outcome=outcome, description=description, human=None, time=time)


def iti9_pix_query(*, consumer: Participant, manager: Participant, query: bytes, control_id: str,
                   patients: Iterable[str] = (), outcome: int = c.SUCCESS, description: str | None = None,
                   time: dt.datetime | None = None) -> AuditMessage:
    """ITI-9: Query, with the QPD segment as the query and the ids asked for and answered as patients."""
    objects = (*_patients(patients), query_parameters(c.ITI_9, control_id, query, control_id=control_id))
    return _message(c.QUERY, c.EXECUTE, c.ITI_9, (consumer, manager), objects, outcome=outcome,
                    description=description, human=None, time=time)


def iti10_pix_update_notification(*, manager: Participant, consumer: Participant, patients: Iterable[str],
                                  control_id: str, outcome: int = c.SUCCESS, description: str | None = None,
                                  time: dt.datetime | None = None) -> AuditMessage:
    return _message(c.PATIENT_RECORD, c.UPDATE, c.ITI_10, (manager, consumer), _patients(patients, control_id),
                    outcome=outcome, description=description, human=None, time=time)


# ------------------------------------------------------------------ XDS.b and XDS-I.b (SOAP)

def iti18_registry_stored_query(*, consumer: Participant, registry: Participant, query_id: str, request: bytes,
                                patient: str | None = None, home: str | None = None, human: Human | None = None,
                                outcome: int = c.SUCCESS, description: str | None = None,
                                time: dt.datetime | None = None) -> AuditMessage:
    """ITI-18: Query; ``request`` is the AdhocQueryRequest as received or sent, ``query_id`` the stored query's
    UUID. Consumer and registry record the same message."""
    objects = (*_patients([patient]), query_parameters(c.ITI_18, query_id, request, home=home))
    return _message(c.QUERY, c.EXECUTE, c.ITI_18, (consumer, registry), objects, outcome=outcome,
                    description=description, human=human, time=time)


def iti51_multi_patient_query(*, consumer: Participant, registry: Participant, query_id: str, request: bytes,
                              patients: Iterable[str] = (), human: Human | None = None, outcome: int = c.SUCCESS,
                              description: str | None = None, time: dt.datetime | None = None) -> AuditMessage:
    objects = (*_patients(patients), query_parameters(c.ITI_51, query_id, request))
    return _message(c.QUERY, c.EXECUTE, c.ITI_51, (consumer, registry), objects, outcome=outcome,
                    description=description, human=human, time=time)


def _submission(transaction: Code, direction: Direction, sender: Participant, receiver: Participant,
                patient_id: str | None, submission_set_uid: str, human, outcome, description, time,
                action: str | None = None) -> AuditMessage:
    event, default = (c.EXPORT, c.READ) if direction == EXPORT else (c.IMPORT, c.CREATE)
    objects = (*_patients([patient_id]), submission_set(submission_set_uid))
    return _message(event, action or default, transaction, (sender, receiver), objects, outcome=outcome,
                    description=description, human=human, time=time)


def iti41_provide_and_register(*, direction: Direction, document_source: Participant, repository: Participant,
                               patient: str | None, submission_set_uid: str, human: Human | None = None,
                               outcome: int = c.SUCCESS, description: str | None = None,
                               time: dt.datetime | None = None) -> AuditMessage:
    """ITI-41: Export (R) by the Document Source, Import (C) by the Repository."""
    return _submission(c.ITI_41, direction, document_source, repository, patient, submission_set_uid, human, outcome,
                       description, time)


def rad68_provide_and_register_imaging(*, direction: Direction, imaging_source: Participant, repository: Participant,
                                       patient: str | None, submission_set_uid: str, human: Human | None = None,
                                       outcome: int = c.SUCCESS, description: str | None = None,
                                       time: dt.datetime | None = None) -> AuditMessage:
    """RAD-68: as ITI-41, with its own EventTypeCode (the Imaging Document Source exports the manifest)."""
    return _submission(c.RAD_68, direction, imaging_source, repository, patient, submission_set_uid, human, outcome,
                       description, time)


def iti42_register(*, direction: Direction, repository: Participant, registry: Participant, patient: str | None,
                   submission_set_uid: str, human: Human | None = None, outcome: int = c.SUCCESS,
                   description: str | None = None, time: dt.datetime | None = None) -> AuditMessage:
    """ITI-42: Export (R) by the Repository (or Integrated Source), Import (C) by the Registry."""
    return _submission(c.ITI_42, direction, repository, registry, patient, submission_set_uid, human, outcome,
                       description, time)


def iti57_update_document_set(*, direction: Direction, administrator: Participant, registry: Participant,
                              patient: str | None, submission_set_uid: str, human: Human | None = None,
                              outcome: int = c.SUCCESS, description: str | None = None,
                              time: dt.datetime | None = None) -> AuditMessage:
    """ITI-57: Export by the Document Administrator (Source), Import by the Registry; the action is an Update."""
    return _submission(c.ITI_57, direction, administrator, registry, patient, submission_set_uid, human, outcome,
                       description, time, action=c.UPDATE)


def iti43_retrieve_document_set(*, direction: Direction, repository: Participant, consumer: Participant,
                                documents: Iterable[tuple[str, str, str | None]], patient: str | None = None,
                                human: Human | None = None, outcome: int = c.SUCCESS,
                                description: str | None = None, time: dt.datetime | None = None) -> AuditMessage:
    """ITI-43: Export (R) by the Repository, Import (C) by the Consumer. ``documents``: (DocumentUniqueId,
    RepositoryUniqueId, homeCommunityId or None) of each document retrieved."""
    event, action = (c.EXPORT, c.READ) if direction == EXPORT else (c.IMPORT, c.CREATE)
    objects = (*_patients([patient]), *(document(*d) for d in documents))
    return _message(event, action, c.ITI_43, (repository, consumer), objects, outcome=outcome,
                    description=description, human=human, time=time)


def rad69_retrieve_imaging_document_set(*, direction: Direction, imaging_source: Participant, consumer: Participant,
                                        studies: Iterable[Study], patient: str | None = None,
                                        human: Human | None = None, outcome: int = c.SUCCESS,
                                        description: str | None = None,
                                        time: dt.datetime | None = None) -> AuditMessage:
    """RAD-69: DICOM Instances Transferred, read (R) by the Imaging Document Source that sends them and
    created (C) by the Consumer that receives them; the studies name their SOP classes and instances."""
    action = c.READ if direction == EXPORT else c.CREATE
    objects = (*(study(s) for s in studies), *_patients([patient]))
    return _message(c.INSTANCES_TRANSFERRED, action, c.RAD_69, (imaging_source, consumer), objects, outcome=outcome,
                    description=description, human=human, time=time)


# ------------------------------------------------------------------ DICOM (PS3.15 A.5.3)

def instances_transferred(*, action: str, sender: Participant, receiver: Participant,
                          studies: Iterable[Study], patient: str | None, others: Iterable[Participant] = (),
                          outcome: int = c.SUCCESS, description: str | None = None,
                          time: dt.datetime | None = None) -> AuditMessage:
    """C-STORE (the receiver: C, or U when an instance is replaced; the sender: R), and the transfers of a
    C-MOVE or C-GET (``others``: the C-MOVE's requestor when it is neither end)."""
    objects = (*(study(s) for s in studies), *_patients([patient]))
    return _message(c.INSTANCES_TRANSFERRED, action, None, (sender, receiver, *others), objects,
                    outcome=outcome, description=description, human=None, time=time)


def begin_transferring(*, sender: Participant, receiver: Participant, studies: Iterable[Study],
                       patient: str | None, others: Iterable[Participant] = (), outcome: int = c.SUCCESS,
                       description: str | None = None, time: dt.datetime | None = None) -> AuditMessage:
    """A C-MOVE or C-GET SCP starting to send a set of instances (one patient)."""
    objects = (*(study(s) for s in studies), *_patients([patient]))
    return _message(c.BEGIN_TRANSFERRING, c.EXECUTE, None, (sender, receiver, *others), objects,
                    outcome=outcome, description=description, human=None, time=time)


def dicom_query(*, requestor: Participant, responder: Participant, sop_class_uid: str, identifier: bytes,
                transfer_syntax: str, patients: Iterable[str] = (), outcome: int = c.SUCCESS,
                description: str | None = None, time: dt.datetime | None = None) -> AuditMessage:
    """C-FIND: the query object is the SOP Class queried, with the request identifier (as encoded in
    ``transfer_syntax``) base64 in ParticipantObjectQuery."""
    query = ParticipantObject(sop_class_uid, c.SOP_CLASS_UID, c.SYSTEM_OBJECT, c.ROLE_REPORT, query=identifier,
                              details=((c.DETAIL_TRANSFER_SYNTAX, transfer_syntax.encode()),))
    return _message(c.QUERY, c.EXECUTE, None, (requestor, responder), (query, *_patients(patients)),
                    outcome=outcome, description=description, human=None, time=time)


# ------------------------------------------------------------------ node and security events

def application_activity(*, started: bool, application: str, host: str | None = None,
                         launcher: str | None = None, outcome: int = c.SUCCESS, description: str | None = None,
                         time: dt.datetime | None = None) -> AuditMessage:
    """Application Start or Stop of ``application`` (the actor, e.g. ``xdsi-registry``); ``launcher`` is the
    user or process that started or stopped it."""
    people = [Participant(application, False, (c.APPLICATION,), host=host)]
    if launcher:
        people.append(Participant(launcher, True, (c.APPLICATION_LAUNCHER,)))
    message = _message(c.APPLICATION_ACTIVITY, c.EXECUTE, None, people, (), outcome=outcome,
                       description=description, human=None, time=time)
    return _with_type(message, c.APPLICATION_START if started else c.APPLICATION_STOP)


def user_authentication(*, login: bool, user: Participant, node: Participant | None = None,
                        outcome: int = c.SUCCESS, description: str | None = None,
                        time: dt.datetime | None = None) -> AuditMessage:
    """Login or Logout of ``user`` (a token holder, a certificate subject), authenticated by ``node``; a
    refused credential is a Login with a failure outcome."""
    people = [user] + ([node] if node else [])
    message = _message(c.USER_AUTHENTICATION, c.EXECUTE, None, people, (), outcome=outcome,
                       description=description, human=None, time=time)
    return _with_type(message, c.LOGIN if login else c.LOGOUT)


def security_alert(*, kind: Code, reporter: Participant, subject: str, description: str,
                   performers: Iterable[Participant] = (), subject_type: Code = c.NODE_ID,
                   outcome: int = c.MINOR_FAILURE, time: dt.datetime | None = None,
                   human: Human | None = None) -> AuditMessage:
    """A Security Alert of ``kind`` (CID 403: Node Authentication for a refused certificate, Use of
    Restricted Function for a request without the right, ...) about ``subject`` (the peer or resource);
    ``human``: the person behind the request (an XUA principal: its purposes of use go along)."""
    alert = ParticipantObject(subject, subject_type, c.SYSTEM_OBJECT, c.ROLE_RESOURCE,
                              details=((c.DETAIL_ALERT, description.encode()),))
    message = _message(c.SECURITY_ALERT, c.EXECUTE, None, (reporter, *performers), (alert,), outcome=outcome,
                       description=description, human=human, time=time)
    return _with_type(message, kind)


def audit_log_used(*, user: Participant, log: str, outcome: int = c.SUCCESS, description: str | None = None,
                   time: dt.datetime | None = None) -> AuditMessage:
    """The audit trail read (an ITI-81 search, ``xdsi audit search``): ``log`` is the URI of what was read."""
    trail = ParticipantObject(log, c.URI, c.SYSTEM_OBJECT, c.ROLE_SECURITY_RESOURCE, name="Security Audit Log")
    return _message(c.AUDIT_LOG_USED, c.READ, None, (user,), (trail,), outcome=outcome, description=description,
                    human=None, time=time)


def patient_record(*, action: str, user: Participant, patients: Iterable[str], transaction: Code | None = None,
                   others: Iterable[Participant] = (), human: Human | None = None, outcome: int = c.SUCCESS,
                   description: str | None = None, time: dt.datetime | None = None) -> AuditMessage:
    """A patient record created, read, updated or deleted (a PIX link or unlink, a consent change)."""
    return _message(c.PATIENT_RECORD, action, transaction, (user, *others), _patients(patients),
                    outcome=outcome, description=description, human=human, time=time)


def _with_type(message: AuditMessage, code: Code) -> AuditMessage:
    return replace(message, types=(code,))
