"""The prefetch flow, with I/O: local patient -> ITI-9 -> ITI-18 -> jobs; a job: ITI-43 manifest ->
RAD-69 images -> reconciled -> C-STORE into the local PACS. Each step records itself on the job."""
from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts

from affinity_domain import hl7, mllp
from affinity_domain.hl7 import Cx
from affinity_domain.soap_client import SoapClient, TransportError

from . import entries, manifest, rules
from .store import Store

log = logging.getLogger("xdsi.consumer")
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50",
                     "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"]


class Permanent(Exception):
    """Retrying cannot help (not a manifest, unknown source, unknown patient)."""


@dataclass
class Settings:
    local_authority: str
    affinity_authority: str
    pix: tuple[str, int]
    registry_url: str
    repositories: dict[str, str]
    sources: dict[str, str]
    local_pacs: tuple[str, str, int]          # AE, host, port
    calling_ae: str
    relevancy: rules.Relevancy
    accession_prefix: str
    accession_prefixes: dict[str, str]
    procedure_codes: dict[str, str]
    spool: Path
    timeout: float = 60.0
    max_attempts: int = 6


def backoff(attempts: int) -> float:
    return min(300.0, 2.0 * 3 ** max(0, attempts - 1))


class Prefetcher:
    def __init__(self, store: Store, s: Settings):
        self.store, self.s = store, s

    # ------------------------------------------------------------ finding the studies

    def affinity_id(self, local: Cx) -> str:
        query = (f"MSH|^~\\&|XDSI_CONSUMER|XDSI|XDSI_PIX|XDSI|{time.strftime('%Y%m%d%H%M%S')}||QBP^Q23^QBP_Q21|"
                 f"C{uuid.uuid4().hex[:12]}|P|2.5\rQPD|IHE PIX Query|{uuid.uuid4().hex[:8]}|{local}|"
                 f"^^^&{self.s.affinity_authority}&ISO\rRCP|I\r").encode()
        reply = hl7.decode(mllp.send(*self.s.pix, query, timeout=self.s.timeout))
        segments = {line[:3]: line.split("|") for line in reply.split("\r") if line}
        if segments.get("MSA", ["", ""])[1] != "AA":
            raise Permanent(f"PIX does not know {local}")
        ids = segments.get("PID", ["", "", "", ""])[3].split("~") if "PID" in segments else []
        found = [i for i in ids if f"&{self.s.affinity_authority}&" in i]
        if not found:
            raise Permanent(f"{local} has no affinity-domain id yet")
        return found[0]

    def search(self, fetch: int, local: Cx, since: str = "", modalities: list[str] = ()) -> tuple[int, int]:
        """Jobs for the patient's outside studies; (studies found, new jobs)."""
        try:
            affinity = self.affinity_id(local)
            r = SoapClient(self.s.registry_url, timeout=self.s.timeout).call(
                "urn:ihe:iti:2007:RegistryStoredQuery", entries.find_documents(affinity, since))
            if r.body is None or not r.body.get("status", "").endswith(":Success"):
                raise TransportError(f"the registry answered {r.fault or (r.body.get('status') if r.body is not None else r.http_status)}", False)
            relevancy = self.s.relevancy
            if modalities:          # asked for on the command line or by HTTP: narrows this fetch only
                relevancy = rules.Relevancy(list(modalities), relevancy.body_parts, relevancy.lookback_days,
                                            relevancy.max_studies)
            found = rules.select(entries.read_entries(r.body), relevancy, self.s.local_authority)
            new = self.store.add_jobs(fetch, str(local), found)
            self.store.fetch_done(fetch, "searched", affinity)
            log.info("searched", extra={"patient": str(local), "affinity": affinity, "found": len(found), "new": new})
            return len(found), new
        except (Permanent, TransportError, OSError) as e:
            self.store.fetch_done(fetch, "failed", error=str(e))
            log.warning("search failed", extra={"patient": str(local), "error": str(e)})
            raise

    # ------------------------------------------------------------ one study

    def work(self, job: dict) -> None:
        try:
            if job["state"] == "found":
                self._manifest(job)
                job = {**job, "state": "manifest"}
            if job["state"] in ("manifest", "retrieved"):
                self._images(job)
        except Permanent as e:
            self.store.retry(job["id"], str(e), 0, give_up=True)
            log.warning("job failed", extra={"job": job["id"], "error": str(e)})
        except Exception as e:  # network, peers down, PACS refusing: retried with back-off
            give_up = job["attempts"] >= self.s.max_attempts
            self.store.retry(job["id"], f"{type(e).__name__}: {e}", backoff(job["attempts"]), give_up)
            log.warning("job will retry" if not give_up else "job failed",
                        extra={"job": job["id"], "error": str(e), "attempts": job["attempts"]})

    def _manifest_path(self, job: dict) -> Path:
        return self.s.spool / "manifests" / f"{job['document_unique_id']}.dcm"

    def _manifest(self, job: dict) -> None:
        url = self.s.repositories.get(job["repository_unique_id"])
        if not url:
            raise Permanent(f"no repository configured for {job['repository_unique_id']}")
        r = SoapClient(url, timeout=self.s.timeout, spool_dir=self.s.spool).call(
            "urn:ihe:iti:2007:RetrieveDocumentSet",
            entries.retrieve_document(job["repository_unique_id"], job["document_unique_id"], job["home"]))
        try:
            docs = entries.document_responses(r.body) if r.body is not None else []
            if not docs or docs[0][1] not in r.attachments:
                raise TransportError(f"the repository did not return the manifest ({r.fault or r.http_status})",
                                     False)
            data = r.attachments[docs[0][1]].path.read_bytes()
        finally:
            r.discard()
        parsed = manifest.read(data)          # NotAManifest is permanent
        path = self._manifest_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.store.advance(job["id"], "manifest", f"{parsed.instance_count} instances in "
                                                  f"{len(parsed.series)} series", instances_total=parsed.instance_count)

    def _images(self, job: dict) -> None:
        parsed = manifest.read(self._manifest_path(job).read_bytes())
        work = self.s.spool / f"job-{job['id']}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            files = self._retrieve(parsed, work)
            self.store.advance(job["id"], "retrieved", f"{len(files)} instances retrieved by RAD-69")
            source = parsed.series[0].retrieve_location_uid
            prefix = self.s.accession_prefixes.get(source, self.s.accession_prefix)
            local = Cx.parse(job["local_patient"])
            recon = rules.Reconciliation(local.id, local.authority, prefix, self.s.procedure_codes, source)
            self._store_locally(job, files, recon)
            self.store.advance(job["id"], "stored", f"{len(files)} instances stored in {self.s.local_pacs[0]}",
                               instances_done=len(files))
            log.info("study stored", extra={"job": job["id"], "instances": len(files)})
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _retrieve(self, parsed: manifest.Manifest, work: Path) -> list[Path]:
        files = []
        by_source: dict[str, dict[str, list[str]]] = {}
        for s in parsed.series:
            by_source.setdefault(s.retrieve_location_uid, {})[s.series_uid] = s.instances
        for location, series in by_source.items():
            url = self.s.sources.get(location)
            if not url:
                raise Permanent(f"no imaging source configured for Retrieve Location UID {location}")
            r = SoapClient(url, timeout=self.s.timeout, spool_dir=work).call(
                "urn:ihe:rad:2009:RetrieveImagingDocumentSet",
                entries.retrieve_images(parsed.study_uid, series, location, TRANSFER_SYNTAXES))
            try:
                got = dict(entries.document_responses(r.body)) if r.body is not None else {}
                wanted = {uid for uids in series.values() for uid in uids}
                missing = wanted - got.keys()
                if missing:
                    raise TransportError(f"the source did not return {len(missing)} of {len(wanted)} instances "
                                         f"(e.g. {sorted(missing)[0]})", False)
                for uid in wanted:
                    target = work / f"{uid}.dcm"
                    shutil.move(str(r.attachments[got[uid]].path), target)
                    files.append(target)
            finally:
                r.discard()
        return files

    def _store_locally(self, job: dict, files: list[Path], recon: rules.Reconciliation) -> None:
        ae_title, host, port = self.s.local_pacs
        ae = AE(self.s.calling_ae)
        ae.requested_contexts = StoragePresentationContexts
        assoc = ae.associate(host, port, ae_title=ae_title)
        if not assoc.is_established:
            raise ConnectionError(f"the local PACS {ae_title}@{host}:{port} refused the association")
        # pynetdicom never sets TCP_NODELAY; without it each C-STORE stalls ~40 ms.
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for n, path in enumerate(files, start=1):
                ds = rules.reconcile(dcmread(path), recon)
                status = assoc.send_c_store(ds)
                if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                    raise ConnectionError(f"the local PACS refused {ds.SOPInstanceUID}: "
                                          f"status {status.Status if status else 'none'}")
                if n % 20 == 0:
                    self.store.progress(job["id"], n)
        finally:
            assoc.release()


class Worker(threading.Thread):
    """Takes due jobs; several run at once so studies are retrieved concurrently."""

    def __init__(self, prefetcher: Prefetcher, interval: float = 0.5):
        super().__init__(name="consumer-worker", daemon=True)
        self.p, self.interval, self.stopping = prefetcher, interval, threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                jobs = self.p.store.claim(limit=1)
            except Exception:
                log.exception("claiming jobs failed")
                jobs = []
            for job in jobs:
                self.p.work(job)
            if not jobs:
                self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
