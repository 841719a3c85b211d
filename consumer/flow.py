"""The prefetch flow, with I/O: a fetch is local patient -> ITI-9 -> ITI-18 -> one job per outside
study; a job is ITI-43 manifest -> images (RAD-69, C-MOVE or C-GET) -> reconciled -> C-STORE into the
local PACS (-> its report). Each step records itself on the fetch or the job; the rules are in
``jobs`` and ``rules``."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread

from affinity_domain import hl7, mllp
from affinity_domain.hl7 import Cx
from affinity_domain.soap_client import SoapClient, TransportError

from . import dicom, entries, jobs, manifest, messages, reports, rewrite, rules
from .dicom import Instance
from .jobs import Permanent
from .store import Store

log = logging.getLogger("xdsi.consumer")
RETRIEVE_METHODS = ("rad69", "c-move", "c-get")
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50",
                     "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"]
PROGRESS_EVERY = 20          # instances between two durable progress records


@dataclass
class Settings:
    local_authority: str
    affinity_authority: str
    pix: tuple[str, int]
    registry_url: str
    repositories: dict[str, str]
    sources: dict[str, str]                      # Retrieve Location UID -> RAD-69 URL
    local_pacs: tuple[str, str, int]             # AE, host, port
    calling_ae: str
    relevancy: rules.Relevancy
    accession_prefix: str
    accession_prefixes: dict[str, str]
    procedure_codes: dict[str, str]
    spool: Path
    timeout: float = 60.0
    max_attempts: int = 6
    retry_base: float = 2.0
    dicom_sources: dict[str, tuple[str, int]] = field(default_factory=dict)   # Retrieve AE Title -> host, port
    retrieve_order: tuple[str, ...] = ("rad69", "c-move")
    accession_issuer: bool = False               # name the source as issuer instead of prefixing
    reports: str = "skip"                        # skip | store | oru
    report_oru: tuple[str, int] | None = None
    pacs_orders: tuple[str, int] | None = None   # ORM^O01 before the images, when the PACS needs one
    # Bytes of a study's RAD-69 answer held in memory until stored; past it, instances are spooled
    # to files in ``spool``. Making a file costs more than a small instance's bytes do.
    held_per_study: int = 64 * 1024 * 1024

    @property
    def incoming(self) -> Path:
        return self.spool / "incoming"


class Prefetcher:
    def __init__(self, store: Store, s: Settings):
        self.store, self.s = store, s
        self.wake = threading.Event()

    # ------------------------------------------------------------ finding the studies

    def affinity_id(self, local: Cx) -> str:
        query = (f"MSH|^~\\&|XDSI_CONSUMER|XDSI|XDSI_PIX|XDSI|{time.strftime('%Y%m%d%H%M%S')}||QBP^Q23^QBP_Q21|"
                 f"C{uuid.uuid4().hex[:12]}|P|2.5\rQPD|IHE PIX Query|{uuid.uuid4().hex[:8]}|{local}|"
                 f"^^^&{self.s.affinity_authority}&ISO\rRCP|I\r").encode()
        try:
            reply = hl7.decode(mllp.send(*self.s.pix, query, timeout=self.s.timeout))
        except OSError as e:
            raise TransportError(f"PIX manager {self.s.pix[0]}:{self.s.pix[1]} unreachable: {e}", False) from None
        segments = {line[:3]: line.split("|") for line in reply.split("\r") if line}
        if segments.get("MSA", ["", ""])[1] != "AA":
            raise Permanent(f"PIX does not know {local}")
        ids = segments.get("PID", ["", "", "", ""])[3].split("~") if "PID" in segments else []
        found = [i for i in ids if f"&{self.s.affinity_authority}&" in i]
        if not found:
            raise Permanent(f"PIX knows {local} but it has no affinity-domain id yet")
        return found[0]

    def _query(self, affinity: str, since: str, manifests_only: bool) -> list[entries.ManifestEntry]:
        try:
            r = SoapClient(self.s.registry_url, timeout=self.s.timeout).call(
                "urn:ihe:iti:2007:RegistryStoredQuery", entries.find_documents(affinity, since, manifests_only))
        except (OSError, TransportError) as e:
            raise TransportError(f"registry unreachable: {e}", False) from None
        if r.body is None or not r.body.get("status", "").endswith(":Success"):
            answer = r.fault or (r.body.get("status") if r.body is not None else r.http_status)
            raise TransportError(f"the registry answered {answer}", False)
        return entries.read_entries(r.body)

    def search(self, fetch: dict) -> None:
        """One attempt at a claimed fetch: jobs for the outside studies, or the failure recorded."""
        local = Cx.parse(fetch["local_patient"])
        try:
            affinity = self.affinity_id(local)
            relevancy = self.s.relevancy
            if fetch["modalities"]:      # asked for on the command line or by HTTP: narrows this fetch only
                relevancy = rules.Relevancy(list(fetch["modalities"]), relevancy.body_parts,
                                            relevancy.lookback_days, relevancy.max_studies)
            since = max(fetch["since"] or "", rules.window_start(relevancy))
            found = self._query(affinity, since, True)
            chosen = rules.select(found, relevancy, self.s.local_authority)
            if self.s.reports != "skip" and chosen:
                entries.attach_reports(chosen, self._query(affinity, since, False))
            new = self.store.add_jobs(fetch["id"], str(local), chosen)
            note = f"{len(found)} manifests, {len(chosen)} relevant outside studies, {new} new"
            self.store.fetch_done(fetch["id"], "searched", affinity, note=note)
            log.info("searched", extra={"fetch": fetch["id"], "patient": str(local), "affinity": affinity,
                                        "found": len(found), "relevant": len(chosen), "new": new})
            if new:
                self.wake.set()
        except Exception as e:
            permanent = isinstance(e, Permanent)
            decision = jobs.decide(fetch["attempts"], self.s.max_attempts, permanent, self.s.retry_base)
            reason = str(e) if isinstance(e, (Permanent, TransportError)) else f"{type(e).__name__}: {e}"
            if decision.give_up:
                self.store.fetch_done(fetch["id"], "failed", error=reason)
            else:
                self.store.fetch_retry(fetch["id"], reason, decision.retry_in)
            log.warning("search failed", extra={"fetch": fetch["id"], "patient": str(local), "error": reason,
                                                "retry_in": decision.retry_in})

    # ------------------------------------------------------------ one study

    def work(self, job: dict) -> None:
        try:
            step, parsed = jobs.next_step(job["state"]), None
            if step == "manifest":
                parsed = self._manifest(job)
                step = "images"
            if step == "images":
                self._images(job, parsed)
        except Exception as e:  # network, peers down, PACS refusing: retried with back-off
            permanent = isinstance(e, (Permanent, manifest.NotAManifest))
            decision = jobs.decide(job["attempts"], self.s.max_attempts, permanent, self.s.retry_base)
            reason = str(e) if isinstance(e, (Permanent, manifest.NotAManifest, TransportError, dicom.DicomRefused)) \
                else f"{type(e).__name__}: {e}"
            if isinstance(e, manifest.NotAManifest):
                reason = f"the document is not a KOS manifest: {reason}"
            self.store.retry(job["id"], reason, decision.retry_in, decision.give_up)
            log.warning("job failed" if decision.give_up else "job will retry",
                        extra={"job": job["id"], "error": reason, "attempts": job["attempts"]})

    def _manifest_path(self, job: dict) -> Path:
        return self.s.spool / "manifests" / f"{job['document_unique_id']}.dcm"

    def _document(self, repository_unique_id: str, unique_id: str, home: str) -> tuple[bytes, str]:
        """ITI-43 for one document: its bytes and mime type."""
        url = self.s.repositories.get(repository_unique_id)
        if not url:
            raise Permanent(f"no repository configured for {repository_unique_id}")
        try:
            r = SoapClient(url, timeout=self.s.timeout, spool_dir=self.s.spool).call(
                "urn:ihe:iti:2007:RetrieveDocumentSet",
                entries.retrieve_document(repository_unique_id, unique_id, home))
        except (OSError, TransportError) as e:
            raise TransportError(f"repository unreachable: {e}", False) from None
        try:
            docs = entries.document_responses(r.body) if r.body is not None else []
            if not docs or docs[0][1] not in r.attachments:
                status = r.body.get("status", "") if r.body is not None else r.http_status
                raise TransportError(f"the repository did not return {unique_id} ({r.fault or status})", False)
            mime = r.body.findtext(f"{{{entries.XDSB}}}DocumentResponse/{{{entries.XDSB}}}mimeType") or ""
            return r.attachments[docs[0][1]].read(), mime.strip()
        finally:
            r.discard()

    def _manifest(self, job: dict) -> manifest.Manifest:
        data, _ = self._document(job["repository_unique_id"], job["document_unique_id"], job["home"])
        parsed = manifest.read(data)          # NotAManifest is permanent
        path = self._manifest_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.store.advance(job["id"], "manifest", f"{parsed.instance_count} instances in {len(parsed.series)} series",
                           instances_total=parsed.instance_count, study_uid=parsed.study_uid)
        return parsed

    def _images(self, job: dict, parsed: manifest.Manifest | None = None) -> None:
        """``parsed``: the manifest, when this attempt has just retrieved it (else it is read back)."""
        if parsed is None:
            parsed = manifest.read(self._manifest_path(job).read_bytes())
        local = Cx.parse(job["local_patient"])
        every = [u for s in parsed.series for u in s.instances]
        done = self.store.stored_sops(job["local_patient"], every)
        todo = parsed.without(done)
        work = self.s.spool / f"job-{job['id']}"
        work.mkdir(parents=True, exist_ok=True)
        recon = self._reconciliation(local, parsed)
        if todo:
            instances, used = self._retrieve(parsed.study_uid, todo, work)
            self.store.advance(job["id"], "retrieved", f"{sum(len(s.instances) for s in todo)}/{len(every)} "
                                                       f"instances retrieved by {', '.join(used)}",
                               instances_done=len(done), retrieved_by=",".join(used))
            self._store_locally(job, [instances[u] for s in todo for u in s.instances], recon, len(done))
        self._report(job, parsed, recon, work)
        self.store.advance(job["id"], "stored", f"{len(every) - len(done)} instances stored in {self.s.local_pacs[0]}"
                                                f"{f', {len(done)} were there already' if done else ''}",
                           instances_done=len(every))
        shutil.rmtree(work, ignore_errors=True)
        log.info("study stored", extra={"job": job["id"], "instances": len(every) - len(done)})

    def _reconciliation(self, local: Cx, parsed: manifest.Manifest) -> rules.Reconciliation:
        """How the study's instances (and its report) become local: the rules for its source site."""
        source = parsed.series[0].retrieve_location_uid or parsed.series[0].retrieve_ae_title
        prefix = self.s.accession_prefixes.get(source, self.s.accession_prefix)
        return rules.Reconciliation(local.id, local.authority, prefix, self.s.procedure_codes, source,
                                    source if self.s.accession_issuer else "")

    def _retrieve(self, study_uid: str, todo: list[manifest.SeriesReference],
                  work: Path) -> tuple[dict[str, Instance], list[str]]:
        """Every instance of ``todo`` (by SOP Instance UID: its bytes, or its file in ``work``), by
        the configured methods in order; and the methods used."""
        wanted = {u for s in todo for u in s.instances}
        got: dict[str, Instance] = {p.stem: p for p in work.glob("*.dcm") if p.stem in wanted}   # an earlier attempt's
        errors, used, transient = [], [], False
        for method in self.s.retrieve_order:
            left = [s for s in todo if set(s.instances) - got.keys()]
            if not left:
                break
            asked = {u for x in left for u in x.instances}
            try:
                self._retrieve_by(method, study_uid, left, work, got)
                short = asked - got.keys()
                if short:
                    errors.append(f"{method}: {len(short)} instances not returned")
                if len(short) < len(asked):
                    used.append(method)
            except Permanent as e:
                errors.append(f"{method}: {e}")
            except (TransportError, dicom.DicomRefused, OSError) as e:
                errors.append(f"{method}: {e}")
                transient = True
        missing = wanted - got.keys()
        if missing:
            reason = (f"{len(missing)} of {len(wanted)} instances could not be retrieved (e.g. {sorted(missing)[0]}): "
                      + "; ".join(errors))
            raise TransportError(reason, False) if transient else Permanent(reason)
        return got, used

    def _retrieve_by(self, method: str, study_uid: str, series: list[manifest.SeriesReference], work: Path,
                     got: dict[str, Instance]) -> None:
        if method == "rad69":
            for location, refs in _by_source(series, "retrieve_location_uid").items():
                url = self.s.sources.get(location)
                if not url:
                    raise Permanent(f"no imaging source configured for Retrieve Location UID {location!r}")
                self._rad69(url, location, study_uid, refs, work, got)
            return
        for ae_title, refs in _by_source(series, "retrieve_ae_title").items():
            where = self.s.dicom_sources.get(ae_title)
            if not where:
                raise Permanent(f"no DICOM address configured for Retrieve AE Title {ae_title!r}")
            peer = (ae_title, *where)
            if method == "c-get":
                classes = {c for s in series for c in s.sop_classes if c}
                dicom.get(self.s.calling_ae, peer, study_uid, refs, classes, self._holder(work, got), self.s.timeout)
                continue
            try:
                dicom.move(self.s.calling_ae, peer, self.s.calling_ae, study_uid, refs, self.s.timeout)
            finally:
                for uids in refs.values():
                    for uid in uids:
                        arrived = self.s.incoming / f"{uid}.dcm"    # C-MOVE sub-operations land in the shared dir
                        if arrived.exists():
                            os.replace(arrived, work / f"{uid}.dcm")
                        if (work / f"{uid}.dcm").exists():
                            got[uid] = work / f"{uid}.dcm"

    def _holder(self, work: Path, got: dict[str, Instance]):
        """Takes instances as a C-GET brings them: held in memory while the study's allowance lasts,
        then written into ``work``."""
        allowance = [self.s.held_per_study]

        def take(uid: str, data: bytes) -> None:
            if len(data) <= allowance[0]:
                allowance[0] -= len(data)
                got[uid] = data
            else:
                got[uid] = dicom.write_instance(work, uid, data)
        return take

    def _rad69(self, url: str, location: str, study_uid: str, refs: dict[str, list[str]], work: Path,
               got: dict[str, Instance]) -> None:
        try:
            r = SoapClient(url, timeout=self.s.timeout, spool_dir=work, memory_budget=self.s.held_per_study).call(
                "urn:ihe:rad:2009:RetrieveImagingDocumentSet",
                entries.retrieve_images(study_uid, refs, location, TRANSFER_SYNTAXES))
        except (OSError, TransportError) as e:
            raise TransportError(f"imaging source {url} unreachable: {e}", False) from None
        try:
            if r.body is None:
                raise TransportError(f"the imaging source answered {r.fault or r.http_status}", False)
            answered = dict(entries.document_responses(r.body))
            for uid in {u for uids in refs.values() for u in uids} & answered.keys():
                part = r.attachments.get(answered[uid])
                if part is None or part.error:
                    continue
                if part.path is None:
                    got[uid] = part.data
                else:
                    got[uid] = shutil.move(str(part.path), work / f"{uid}.dcm")
            missing = {u for uids in refs.values() for u in uids} - answered.keys()
            if missing:
                raise Permanent(f"the source does not have {len(missing)} instances")
        finally:
            r.discard()

    def _store_locally(self, job: dict, instances: list[Instance], recon: rules.Reconciliation, done: int) -> None:
        if self.s.pacs_orders:
            self._order_for_pacs(job, instances[0], recon)
        pacs = dicom.LocalPacs(self.s.calling_ae, self.s.local_pacs, instances, self.s.timeout)
        batch: list[str] = []
        # The next instance is reconciled while the PACS stores the current one.
        ahead = ThreadPoolExecutor(1, thread_name_prefix="reconcile")
        reconciler = rewrite.Reconciler(recon)
        try:
            upcoming = ahead.submit(_reconciled, instances[0], reconciler) if instances else None
            for i in range(len(instances)):
                ds = upcoming.result()
                upcoming = ahead.submit(_reconciled, instances[i + 1], reconciler) if i + 1 < len(instances) else None
                pacs.store(ds)
                batch.append(str(ds.SOPInstanceUID))
                if len(batch) == PROGRESS_EVERY:
                    done += len(batch)
                    self.store.mark_stored(job["id"], job["local_patient"], batch, done)
                    batch = []
        finally:
            ahead.shutdown(cancel_futures=True)
            if batch:              # what the PACS took is recorded even when a later store fails
                self.store.mark_stored(job["id"], job["local_patient"], batch, done + len(batch))
            pacs.close()

    def _order_for_pacs(self, job: dict, sample: Instance, recon: rules.Reconciliation) -> None:
        ds = rules.reconcile(dcmread(dicom.opened(sample), stop_before_pixels=True), recon)
        procedure = ds.ProcedureCodeSequence[0].get("CodeValue", "") if ds.get("ProcedureCodeSequence") else ""
        msg = messages.order(recon.local_patient_id, recon.local_authority, str(ds.get("PatientName", "")),
                             str(ds.get("AccessionNumber", "")), str(ds.StudyInstanceUID), procedure)
        try:
            reply = hl7.decode(mllp.send(*self.s.pacs_orders, msg, timeout=self.s.timeout))
        except OSError as e:
            raise TransportError(f"the local PACS order interface is unreachable: {e}", False) from None
        if not messages.acked(reply):
            raise dicom.DicomRefused(f"the local PACS did not accept the order: {reply.split(chr(13))[1:2]}")

    # ------------------------------------------------------------ the report beside the study

    def _report(self, job: dict, parsed: manifest.Manifest, recon: rules.Reconciliation, work: Path) -> None:
        if not job["report_unique_id"] or self.s.reports == "skip" or job.get("report_state") in ("stored", "sent"):
            return
        data, mime = self._document(job["report_repository"], job["report_unique_id"], job["home"])
        mime = mime or job["report_mime"]
        # Patient and study attributes of the outside study, from the KOS (it copies them from the images).
        header = dcmread(self._manifest_path(job), stop_before_pixels=True)
        if self.s.reports == "oru":
            if not self.s.report_oru:
                raise Permanent("reports = 'oru' but no report_oru address is configured")
            study = rules.reconcile(header, recon)
            msg = messages.report(recon.local_patient_id, recon.local_authority, str(study.get("PatientName", "")),
                                  str(study.get("AccessionNumber", "")), parsed.study_uid, reports.text_of(data, mime))
            try:
                reply = hl7.decode(mllp.send(*self.s.report_oru, msg, timeout=self.s.timeout))
            except OSError as e:
                raise TransportError(f"the report receiver is unreachable: {e}", False) from None
            if not messages.acked(reply):
                raise TransportError("the report receiver did not accept the ORU", False)
            state = "sent"
        else:
            ds = rules.reconcile(reports.as_dicom(data, mime, header), recon)
            path = work / "report.dcm"
            ds.save_as(path, enforce_file_format=True)
            pacs = dicom.LocalPacs(self.s.calling_ae, self.s.local_pacs, [path], self.s.timeout)
            try:
                pacs.store(ds)
            finally:
                pacs.close()
            state = "stored"
        self.store.set_job(job["id"], report_state=state)
        self.store.note(job["id"], f"report {job['report_unique_id']} ({mime}) {state}")


class Worker(threading.Thread):
    """Searches due fetches and works due jobs; several run at once so studies are retrieved concurrently."""

    def __init__(self, prefetcher: Prefetcher, interval: float = 0.5):
        super().__init__(name="consumer-worker", daemon=True)
        self.p, self.interval, self.stopping = prefetcher, interval, threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            busy = False
            try:
                fetch = self.p.store.claim_fetch()
                if fetch:
                    busy = True
                    self.p.search(fetch)
                for job in self.p.store.claim(limit=1):
                    busy = True
                    self.p.work(job)
            except Exception:
                log.exception("worker step failed")
            if not busy:
                self.p.wake.wait(self.interval)
                self.p.wake.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.p.wake.set()


def _by_source(series: list[manifest.SeriesReference], key: str) -> dict[str, dict[str, list[str]]]:
    """Series instance uids grouped by where they are retrieved from (a Retrieve Location UID or AE Title)."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for s in series:
        grouped.setdefault(getattr(s, key), {})[s.series_uid] = s.instances
    return grouped


def _reconciled(instance: Instance, reconciler: rewrite.Reconciler):
    """An instance reconciled for the local PACS: its touched elements re-encoded, or (a syntax
    the reconciler cannot rewrite) the whole dataset decoded."""
    data = instance if isinstance(instance, bytes) else instance.read_bytes()
    return reconciler.part10(data) or rules.reconcile(dcmread(BytesIO(data)), reconciler.recon)
