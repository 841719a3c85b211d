"""Publishing a study: the decision is pure (``decide``); ``Publisher`` carries it out — ITI-9 for
the affinity-domain id, the manifest, RAD-68 to the repository — and records the outcome in the
durable queue (store.py), so a PIX manager or repository that is down only delays publication.

Never duplicated: the manifest's uids and bytes are saved (``pending``) before RAD-68 is sent
and reused by every retry of the same study version; a retry that the registry answers with
XDSDuplicateUniqueIdInRegistry for our own SubmissionSet uniqueId was registered the first time.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from lxml import etree
from pydicom.uid import generate_uid

from affinity_domain import errors as xds
from affinity_domain import mtom, ns, pix_query
from affinity_domain.exceptions import XdsiError
from affinity_domain.hl7 import Cx
from affinity_domain.soap_client import SoapClient

from . import manifest, metadata
from affinity_domain.content import FileStore
from .intake import read_header
from .settings import ImagingSourceSettings
from .store import Index, StudySnapshot

log = logging.getLogger("xdsi.imaging_source.publish")


@dataclass(frozen=True)
class Decision:
    action: str            # publish | settle | withdraw
    reason: str = ""
    replaces: str = ""     # entryUUID of the manifest a publication replaces
    replaces_uid: str = ""


def refs_digest(sop_uids: list[str]) -> str:
    return hashlib.sha1("\n".join(sorted(sop_uids)).encode()).hexdigest()


def decide(snap: StudySnapshot) -> Decision:
    latest = snap.latest
    if snap.outside:
        return Decision("settle", "outside study: a reconciled copy of another site's study is not published")
    if not snap.instances:
        if latest:
            return Decision("withdraw", "every instance is gone", latest["entry_uuid"], latest["sop_uid"])
        return Decision("settle", "the study has no instances")
    if latest and latest["refs_digest"] == refs_digest([i["sop_uid"] for i in snap.instances]):
        return Decision("settle", "the published manifest already lists exactly these instances")
    if latest:
        return Decision("publish", "the study changed", latest["entry_uuid"], latest["sop_uid"])
    return Decision("publish", "new study")


NO_PATIENT_ID = ("the instances have an empty Patient ID (0010,0020): the study waits unpublished; "
                 "remove it (xdsi source remove --study) and send it again with the patient's id")


def backoff(retry_seconds: float, attempts: int) -> float:
    return retry_seconds * min(2 ** attempts, 32)


class Held(XdsiError):
    """Not published now; tried again later (PIX does not know the patient, a peer is down)."""

    retryable = True


class Publisher:
    def __init__(self, index: Index, content: FileStore, settings: ImagingSourceSettings,
                 repository: SoapClient | None = None):
        self.index, self.content, self.s = index, content, settings
        self.domain_oid = settings.domain.assigning_authority
        self.repository = repository or SoapClient(settings.repository_url, settings.repository_timeout,
                                                   content.spool_dir)

    # ------------------------------------------------------------ the loop

    def step(self, stop: threading.Event) -> None:
        """One round (run by a ``workers.Supervisor``): a due study published, or a wait."""
        if not self.publish_due():
            stop.wait(self.s.poll_seconds)

    def publish_due(self) -> bool:
        claim = self.index.claim_due(self.s.quiet_seconds, lease_seconds=self._lease())
        if claim is None:
            return False
        self.publish(claim.study_id)
        return True

    def _lease(self) -> float:
        return self.s.repository_timeout + self.s.pix_timeout + 60

    def publish_now(self, study_uid: str) -> str:
        claim = self.index.claim_study(study_uid, self._lease())
        if claim is None:
            return "busy or unknown"
        return self.publish(claim.study_id)

    # ------------------------------------------------------------ one study

    def publish(self, study_id: int) -> str:
        snap = self.index.snapshot(study_id)
        try:
            return self._publish(snap)
        except Exception as e:      # every failure is tried again later; a retryable one is only held
            delay = backoff(self.s.retry_seconds, snap.attempts)
            if isinstance(e, XdsiError) and e.retryable:
                log.warning("publication held", extra={"study": snap.study["study_uid"], "reason": str(e),
                                                       "retry_in": delay})
                self.index.postpone(study_id, str(e), delay)
                return f"held: {e}"
            log.exception("publication failed; the study is quarantined", extra={
                "study": snap.study["study_uid"], "reason": f"{type(e).__name__}: {e}", "retry_in": delay})
            self.index.postpone(study_id, f"{type(e).__name__}: {e}", delay, quarantined=True)
            return f"failed: {e}"

    def _publish(self, snap: StudySnapshot) -> str:
        d = decide(snap)
        study_uid = snap.study["study_uid"]
        if d.action == "settle":
            self.index.settle(snap.id, snap.version)
            log.info("nothing to publish", extra={"study": study_uid, "reason": d.reason})
            return f"settled: {d.reason}"
        if d.action == "withdraw":
            return self._deprecate(snap, d)
        if not snap.patient["patient_id"]:
            raise Held(NO_PATIENT_ID)
        local = Cx(snap.patient["patient_id"], snap.patient["issuer"])
        try:
            answer = pix_query.ask(self.s.pix_host, self.s.pix_port, local, self.domain_oid, "XDSI_SOURCE",
                                   self.s.pix_timeout)
        except (OSError, ConnectionError) as e:
            raise Held(f"PIX manager unreachable: {e}") from None
        if not answer.patient_id:
            raise Held(answer.reason)
        pending = snap.pending
        if not pending or pending.get("version") != snap.version or pending.get("patient_id") != answer.patient_id \
                or pending.get("replaces") != d.replaces:
            pending = {"version": snap.version, "patient_id": answer.patient_id, "replaces": d.replaces,
                       "kos_uid": generate_uid(), "series_uid": generate_uid(),
                       "entry_uuid": f"urn:uuid:{uuid.uuid4()}", "ss_uuid": f"urn:uuid:{uuid.uuid4()}",
                       "ss_uid": generate_uid(), "created": datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")}
            self.index.save_pending(snap.id, pending)
        kos_bytes, facts = self.build(snap, pending, local)
        content_id = "manifest@xdsi"
        body = metadata.request(facts, self.s.codes, self.s.source_id, content_id, self.s.author_institution)
        status, codes = _send(self.repository, "repository", ns.PROVIDE_AND_REGISTER, body,
                              [mtom.OutPart(content_id, metadata.MIME_DICOM, data=kos_bytes)])
        already = xds.DUPLICATE_UNIQUE_ID in codes and snap.pending == pending
        if status != xds.SUCCESS and not already:
            raise Held(f"repository answered {status.rsplit(':', 1)[-1]} {' '.join(codes)}")
        self.index.settle(snap.id, snap.version, {
            "sop_uid": pending["kos_uid"], "entry_uuid": pending["entry_uuid"], "study_version": snap.version,
            "instances": len(snap.instances), "refs_digest": refs_digest([i["sop_uid"] for i in snap.instances]),
            "patient_id": answer.patient_id, "sha1": hashlib.sha1(kos_bytes).hexdigest()}, replaced=d.replaces_uid)
        log.info("manifest published", extra={"study": study_uid, "manifest": pending["kos_uid"],
                                              "instances": len(snap.instances), "replaces": d.replaces_uid or None})
        return "published" + (" (RPLC)" if d.replaces else "")

    def _deprecate(self, snap: StudySnapshot, d: Decision) -> str:
        """Every instance is gone: ITI-57 moves the registered manifest to Deprecated. The request's
        uids are kept as pending, so a retry after a lost answer is recognised as done."""
        study_uid = snap.study["study_uid"]
        if not self.s.registry_url:
            self.index.settle(snap.id, snap.version, replaced=d.replaces_uid, status_of_replaced="withdrawn")
            log.warning("manifest withdrawn locally: no registry_url to deprecate it at (ITI-57)",
                        extra={"study": study_uid, "manifest": d.replaces_uid})
            return "withdrawn"
        pending = snap.pending if snap.pending and snap.pending.get("deprecates") == d.replaces else None
        if pending is None:
            pending = {"deprecates": d.replaces, "ss_uid": generate_uid(), "ss_uuid": f"urn:uuid:{uuid.uuid4()}",
                       "created": datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")}
            self.index.save_pending(snap.id, pending)
        body = metadata.availability_update(d.replaces, snap.latest["patient_id"], pending["ss_uid"],
                                            pending["ss_uuid"], pending["created"], self.s.codes, self.s.source_id,
                                            self.s.author_institution)
        registry = SoapClient(self.s.registry_url, self.s.repository_timeout, self.content.spool_dir)
        status, codes = _send(registry, "registry", ns.UPDATE, body)
        if status != xds.SUCCESS and xds.DUPLICATE_UNIQUE_ID not in codes:
            raise Held(f"registry answered {status.rsplit(':', 1)[-1]} {' '.join(codes)}")
        self.index.settle(snap.id, snap.version, replaced=d.replaces_uid, status_of_replaced="deprecated")
        log.info("manifest deprecated", extra={"study": study_uid, "manifest": d.replaces_uid})
        return "deprecated"

    def build(self, snap: StudySnapshot, pending: dict, local: Cx) -> tuple[bytes, metadata.ManifestFacts]:
        header = read_header(self.content.path(snap.instances[0]["sha1"]))
        refs = [manifest.Reference(i["series_uid"], i["sop_class"], i["sop_uid"], i["is_image"])
                for i in snap.instances]
        created = datetime.strptime(pending["created"], "%Y%m%d%H%M%S")
        kos = manifest.build(header, refs, manifest.Plan(pending["kos_uid"], pending["series_uid"], created),
                             self.s.ae_title, self.s.repository_unique_id, self.s.author_institution.split("^")[0])
        study = snap.study
        accession_issuer = ""
        issuers = header.get("IssuerOfAccessionNumberSequence")
        if issuers and issuers[0].get("UniversalEntityIDType", "") == "ISO":
            accession_issuer = str(issuers[0].get("UniversalEntityID", ""))
        facts = metadata.ManifestFacts(
            kos_uid=pending["kos_uid"], entry_uuid=pending["entry_uuid"], submission_set_uid=pending["ss_uid"],
            submission_set_uuid=pending["ss_uuid"], patient_id=pending["patient_id"],
            source_patient_id=f"{local.id}^^^&{local.authority}&ISO",
            patient_name=snap.patient["name"], birth_date=snap.patient["birth_date"], sex=snap.patient["sex"],
            study_uid=study["study_uid"], accession=study["accession"],
            accession_issuer=accession_issuer or self.s.assigning_authority,
            study_date=study["study_date"], study_time=study["study_time"],
            title=study["description"] or "Imaging study manifest", creation_time=pending["created"],
            modalities=[se["modality"] for se in snap.series], body_parts=[se["body_part"] for se in snap.series],
            replaces=pending["replaces"])
        return manifest.to_bytes(kos), facts


def _send(client: SoapClient, peer: str, action: str, body: etree._Element, parts=()) -> tuple[str, list[str]]:
    """The RegistryResponse's status and error codes; a peer that cannot be reached or answers a
    fault holds the publication."""
    try:
        reply = client.call(action, body, list(parts))
    except XdsiError as e:
        if not e.retryable:
            raise
        raise Held(f"{peer}: {e}") from None
    try:
        if reply.fault:
            raise Held(f"{peer} answered a SOAP Fault: {reply.fault}")
        return _registry_status(reply.body)
    finally:
        reply.discard()


def _registry_status(body: etree._Element | None) -> tuple[str, list[str]]:
    if body is None:
        return "", []
    rs = {"rs": ns.RS}
    response = body if etree.QName(body).localname == "RegistryResponse" else body.find(".//rs:RegistryResponse", rs)
    if response is None:
        return "", []
    return response.get("status", ""), [e.get("errorCode", "") for e in response.iterfind(".//rs:RegistryError", rs)]
