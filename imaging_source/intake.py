"""C-STORE intake: what a received instance is (pure), then keep its bytes and index it.

The bytes are never decoded and re-encoded: the dataset is kept as received (in memory, or spooled
to a file by pynetdicom when ``spool_received`` is on), only the header up to Pixel Data is parsed
to index it, and those bytes become the stored file.
"""
from __future__ import annotations

import logging
import mmap
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import KeyObjectSelectionDocumentStorage
from pynetdicom.status import Status

from affinity_domain import access, audit
from affinity_domain import part10
from affinity_domain.outside import OUTSIDE_GROUP
from affinity_domain.uids import uid_problem

from affinity_domain.content import FileStore, StoreFull
from affinity_domain.dicom_status import (CANNOT_UNDERSTAND, DATA_SET_DOES_NOT_MATCH_SOP_CLASS, DUPLICATE_SOP_INSTANCE,
                                          INVALID_SOP_INSTANCE, NOT_AUTHORIZED, OUT_OF_RESOURCES,
                                          PROCESSING_FAILURE, STUDY_OF_ANOTHER_PATIENT)
from .identity import LocalIdentity, PatientConflict, local_identity, marked_outside, text
from .settings import ImagingSourceSettings

log = logging.getLogger("xdsi.imaging_source.intake")

REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
PRESENT = ("PatientID",)        # Type 2: there, but may be empty (its study then waits unpublished)

# IHE IOCM: a KOS titled with one of these rejects the instances it references.
REJECTION_TITLES = {"113001",    # Rejected for Quality Reasons
                    "113037",    # Rejected for Patient Safety Reasons
                    "113038",    # Incorrect Modality Worklist Entry
                    "113039"}    # Data Retention Policy Expired


_PLAIN = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")     # printable ASCII without a backslash (one value)


def _s(ds: Dataset, keyword: str) -> str:
    """An element's value as text, stripped. A value still undecoded whose bytes are plain ASCII
    (one value, no escape to another character set) reads the same in every character set and VR
    this is used for, so it skips pydicom's conversion."""
    tag = tag_for_keyword(keyword)
    element = ds.get_item(tag) if tag in ds else None
    if element is None:
        return ""
    if isinstance(element, RawDataElement) and element.value is not None:
        raw = element.value[:-1] if element.value.endswith(b"\0") else element.value     # UI padding
        if _PLAIN.fullmatch(raw):
            return raw.decode("ascii").strip()
    return text(ds[tag].value)


@dataclass
class Received:
    sop_uid: str
    sop_class: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    identity: LocalIdentity
    outside: bool = False
    is_image: bool = False
    instance_number: str = ""
    patient: dict = field(default_factory=dict)
    study: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    may_replace: bool = True        # its sender may replace an instance already held (role reject or replace)


@dataclass
class Rejected:
    status: int
    reason: str


UIDS = ("SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID")     # besides the SOP Instance UID


def describe(ds: Dataset, transfer_syntax: str, calling_ae: str, by_ae: dict[str, str],
             default_issuer: str, outside_aes: frozenset[str] = frozenset(),
             affected_sop_uid: str = "") -> Received | Rejected:
    """Index entry of a received header, or why the instance is refused."""
    missing = [k for k in REQUIRED if not _s(ds, k)] + [k for k in PRESENT if tag_for_keyword(k) not in ds]
    if missing:
        return Rejected(DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"missing {', '.join(missing)}")
    sop_uid = _s(ds, "SOPInstanceUID")
    problem = uid_problem(sop_uid, "SOP Instance UID") or (
        uid_problem(affected_sop_uid, "Affected SOP Instance UID") if affected_sop_uid else None)
    if problem:
        return Rejected(INVALID_SOP_INSTANCE, problem)
    problem = next(filter(None, (uid_problem(_s(ds, k), k) for k in UIDS)), None)
    if problem:
        return Rejected(CANNOT_UNDERSTAND, problem)
    if affected_sop_uid and affected_sop_uid != sop_uid:
        return Rejected(DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                        f"SOP Instance UID {sop_uid} differs from the request's {affected_sop_uid}")
    return Received(
        sop_uid=sop_uid, sop_class=_s(ds, "SOPClassUID"), series_uid=_s(ds, "SeriesInstanceUID"),
        study_uid=_s(ds, "StudyInstanceUID"), transfer_syntax=transfer_syntax,
        identity=local_identity(ds, calling_ae, by_ae, default_issuer),
        outside=marked_outside(ds) or calling_ae.strip() in outside_aes,
        is_image="Rows" in ds and "Columns" in ds,
        instance_number=_s(ds, "InstanceNumber"),
        patient={"name": _s(ds, "PatientName"), "birth_date": _s(ds, "PatientBirthDate"), "sex": _s(ds, "PatientSex")},
        study={"date": _s(ds, "StudyDate"), "time": _s(ds, "StudyTime"), "accession": _s(ds, "AccessionNumber"),
               "id": _s(ds, "StudyID"), "description": _s(ds, "StudyDescription"),
               "referring": _s(ds, "ReferringPhysicianName")},
        series={"modality": _s(ds, "Modality"), "number": _s(ds, "SeriesNumber"),
                "description": _s(ds, "SeriesDescription"), "body_part": _s(ds, "BodyPartExamined")})


def log_outcome(outcome, sha1: str, facts: dict) -> None:
    """A line for an instance that came again with other bytes: replaced, or kept as it was."""
    if outcome.status == "replaced":
        log.info("instance replaced", extra={**facts, "sha1": sha1, "replaced_sha1": outcome.previous_sha1})
    elif outcome.status == "unauthorized":
        log.warning("instance sent again with other bytes by a peer that may not replace it; the stored one is kept",
                    extra={**facts, "sha1": sha1, "stored_sha1": outcome.previous_sha1})
        audit.record(access.refusal_alert(reporter="imaging-source", who=facts.get("calling_ae", ""), host="",
                                          description=f"imaging-source: replacing {facts.get('sop_uid')} needs "
                                                      "the role 'replace' or 'reject'"))
    elif outcome.status in ("ignored", "rejected") and outcome.previous_sha1 and outcome.previous_sha1 != sha1:
        log.warning("instance sent again with other bytes; the stored one is kept",
                    extra={**facts, "sha1": sha1, "stored_sha1": outcome.previous_sha1, "policy": outcome.status})


def rejected_instances(ds: Dataset) -> list[str] | None:
    """The SOP Instance UIDs an IOCM rejection note rejects, or None when ``ds`` is not one."""
    if _s(ds, "SOPClassUID") != KeyObjectSelectionDocumentStorage:
        return None
    title = (ds.get("ConceptNameCodeSequence") or [None])[0]
    if title is None or _s(title, "CodeValue") not in REJECTION_TITLES or _s(title, "CodingSchemeDesignator") != "DCM":
        return None
    return [_s(instance, "ReferencedSOPInstanceUID")
            for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []
            for series in study.get("ReferencedSeriesSequence") or []
            for instance in series.get("ReferencedSOPSequence") or []]


def remove(index, content: FileStore, level: str, uids: list[str]) -> int:
    """Studies, series or instances out of the index, then their bytes no longer referenced out of
    the store; the number of files deleted."""
    sha1s = index.remove(level, uids)
    for sha1 in sha1s:
        content.delete(sha1)
    return len(sha1s)


# The top-level elements describe(), rejected_instances() and the identity read, besides the
# outside-marker group: a received instance has only these decoded.
INDEXED = {
    0x00080005, 0x00080016, 0x00080018, 0x00080020, 0x00080030, 0x00080050, 0x00080060, 0x00080090,
    0x00081030, 0x0008103E, 0x00100010, 0x00100020, 0x00100021, 0x00100024, 0x00100030, 0x00100040,
    0x00180015, 0x0020000D, 0x0020000E, 0x00200010, 0x00200011, 0x00200013, 0x00280010, 0x00280011,
    0x0040A043, 0x0040A375,
}


def read_header(instance: Path | bytes) -> Dataset:
    """A Part-10 instance's meta and dataset up to Pixel Data, from its file or its bytes."""
    return dcmread(BytesIO(instance) if isinstance(instance, bytes) else instance, stop_before_pixels=True)


def index_header(instance: Path | bytes) -> Dataset:
    """What intake reads of a received instance: its INDEXED elements (and the outside marker's
    group) and its transfer syntax. In a little endian syntax the whole dataset is walked first
    (``part10``): one that does not read to its end (an element running past it, a header cut
    short) raises ``part10.Unreadable``; only the wanted elements are then decoded. Otherwise
    pydicom reads the whole header."""
    if isinstance(instance, bytes):
        return _index_header(instance)
    with open(instance, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:              # an empty file
            raise part10.Unreadable("the file is empty") from None
        with mapped:
            return _index_header(mapped, instance)


def _index_header(data, path: Path | None = None) -> Dataset:
    if (found := part10.transfer_syntax(data)) is not None:
        syntax, offset = found
        if (implicit := part10.implicit_vr(syntax)) is not None:
            try:
                wanted = b"".join(data[start:stop] for tag, start, _, stop
                                  in part10.top_level(data, offset, implicit=implicit)
                                  if tag in INDEXED or tag >> 16 == OUTSIDE_GROUP)
            except part10.NotWalked:
                return read_header(path or bytes(data))
            ds = read_dataset(BytesIO(wanted), implicit, True)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = syntax
            return ds
    return read_header(path or bytes(data))


class StudyPatients:
    """The patient each study belongs to, checked before a C-STORE is answered (the index is
    written after the answer): the patient intake has taken the study's instances for, else the
    index's. At most ``size`` studies are remembered (the least recent are looked up again).

    ``settle`` waits until what was answered is indexed; it is called before the index is asked
    again about a study remembered for another patient (it may have been removed since). An index
    that does not answer (``lookup`` raises) costs no C-STORE: the indexer checks again."""

    def __init__(self, lookup, size: int, settle=lambda: True):
        self.lookup, self.size, self.settle = lookup, size, settle
        self._known: OrderedDict[str, LocalIdentity] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, study_uid: str, patient: LocalIdentity) -> LocalIdentity | None:
        """None when the study is new or this patient's (it is then remembered as this patient's);
        else the patient it belongs to."""
        with self._lock:
            known = self._known.get(study_uid)
            if known is not None:
                self._known.move_to_end(study_uid)
        if known == patient:
            return None
        if known is not None:
            self.settle()
        try:
            found = self.lookup(study_uid)
        except Exception as e:        # the database down: the index checks again when it indexes
            log.warning("patient of the study not looked up", extra={"study": study_uid, "error": str(e)})
            found = known
        with self._lock:
            owner = found or (self._known.get(study_uid) if known is None else None) or patient
            self._known[study_uid] = owner
            self._known.move_to_end(study_uid)
            while len(self._known) > self.size:
                self._known.popitem(last=False)
        return None if owner == patient else owner


class Intake:
    def __init__(self, index, content: FileStore, settings: ImagingSourceSettings, indexer=None):
        """``indexer``: index behind the answer (``indexer.Indexer``); without one, or when duplicates
        are rejected (the answer depends on the index), each instance is indexed before it is
        answered. With one, nothing is answered success while it is not running."""
        self.index, self.content = index, content
        self.indexer = indexer if settings.duplicate_policy != "reject" else None
        self.wait = settings.index_wait_seconds
        settle = (lambda: self.indexer.flush(self.wait)) if self.indexer is not None else (lambda: True)
        lookup_seconds = settings.study_patient_lookup_seconds
        self.patients = StudyPatients(lambda uid: index.study_patient(uid, lookup_seconds),
                                      settings.study_patients_cached, settle)
        self.by_ae = settings.calling_ae_authorities
        self.default_issuer = settings.assigning_authority
        self.outside_aes = frozenset(settings.outside_calling_aes)
        self.policy = settings.duplicate_policy

    def accept(self, received: Path | bytes, calling_ae: str, affected_sop_uid: str = "",
               may_reject: bool = True, may_replace: bool = True, seen: list | None = None) -> tuple[int, str]:
        """Keep a Part-10 instance, as bytes or as a spooled file; (status, comment). A spooled
        file is consumed or left for its owner to delete; nothing is indexed unless its bytes are
        stored. An IOCM rejection note from a peer that may not reject is refused, Not Authorized; an
        instance it may not replace is kept as it was (``unauthorized``: answered Not Authorized when the
        index is written before the answer, logged and audited when behind it). ``seen`` gets the
        instance's description once it is read (for its audit record)."""
        if not self.content.has_room():
            return OUT_OF_RESOURCES, "image store is full"
        if self.indexer is not None and not self.indexer.alive():
            log.error("instance refused: the indexer is not running", extra={"calling_ae": calling_ae})
            return PROCESSING_FAILURE, "the indexer is not running"
        try:
            ds = index_header(received)
        except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as e:
            log.warning("instance refused: the dataset cannot be read",
                        extra={"reason": str(e), "calling_ae": calling_ae, "sop_uid": affected_sop_uid})
            return CANNOT_UNDERSTAND, f"cannot read the dataset: {e}"[:64]
        ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta else ""
        rejected = rejected_instances(ds)
        if rejected is not None:
            if not may_reject:
                return NOT_AUTHORIZED, "rejection notes need the role reject"
            return self.reject(rejected, calling_ae)
        got = describe(ds, ts, calling_ae, self.by_ae, self.default_issuer, self.outside_aes, affected_sop_uid)
        if isinstance(got, Rejected):
            log.warning("instance refused", extra={"reason": got.reason, "calling_ae": calling_ae})
            return got.status, got.reason[:64]
        got.may_replace = may_replace
        if seen is not None:
            seen.append(got)
        owner = self.patients.claim(got.study_uid, got.identity)
        if owner is not None:
            return self._conflict(PatientConflict(got.identity, owner, got.study_uid), got, calling_ae)
        try:
            sha1, size = (self.content.put_bytes(received) if isinstance(received, bytes)
                          else self.content.put(received))
        except StoreFull:
            log.error("image store is full")
            return OUT_OF_RESOURCES, "image store is full"
        if self.indexer is not None:
            try:
                self.indexer.submit(got, sha1, size, calling_ae)
            except StoreFull:
                log.error("image store is full (intake journal)")
                return OUT_OF_RESOURCES, "image store is full"
            return Status.SUCCESS, ""
        try:
            outcome = self.index.record(got, sha1, size, calling_ae, self.policy)
        except PatientConflict as e:
            return self._conflict(e, got, calling_ae)
        except Exception:
            # Not indexed: the bytes may belong to another instance too, so only a sweep may drop them.
            log.exception("indexing failed", extra={"sop_uid": got.sop_uid})
            return PROCESSING_FAILURE, "indexing failed"
        if outcome.drop_sha1:
            self.content.delete(outcome.drop_sha1)
        log_outcome(outcome, sha1, {"sop_uid": got.sop_uid, "study": got.study_uid, "calling_ae": calling_ae})
        if outcome.status == "rejected":
            return DUPLICATE_SOP_INSTANCE, "duplicate SOP Instance UID"
        if outcome.status == "unauthorized":
            return NOT_AUTHORIZED, "replacing an instance needs the role replace"
        return Status.SUCCESS, ""

    @staticmethod
    def _conflict(e: PatientConflict, got: Received, calling_ae: str) -> tuple[int, str]:
        log.warning("instance refused: its study belongs to another patient",
                    extra={"sop_uid": got.sop_uid, "study": e.study_uid, "calling_ae": calling_ae})
        return STUDY_OF_ANOTHER_PATIENT, "the study belongs to another patient"

    def reject(self, sop_uids: list[str], calling_ae: str) -> tuple[int, str]:
        """Apply an IOCM rejection note: the instances leave the index and the store (the note is
        not kept); their studies change, so they are published again, or deprecated when empty."""
        # The instances it names may still be on their way to the index.
        if self.indexer is not None and not self.indexer.flush(self.wait):
            log.error("rejection note not applied: instances received are not all indexed",
                      extra={"instances": len(sop_uids), "calling_ae": calling_ae})
            return PROCESSING_FAILURE, "instances received are not all indexed yet"
        try:
            remove(self.index, self.content, "IMAGE", sop_uids)
        except Exception:
            log.exception("rejection failed", extra={"instances": len(sop_uids)})
            return PROCESSING_FAILURE, "rejection failed"
        log.info("instances rejected", extra={"instances": len(sop_uids), "calling_ae": calling_ae})
        return Status.SUCCESS, ""
