"""Retrieving one outside study: its KOS manifest (ITI-43), then the images it references by the
configured retrieve order (RAD-69, C-MOVE, C-GET), each method covering what the last could not."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydicom import uid

from affinity_domain import ns
from affinity_domain.soap_client import SoapClient, TransportError
from affinity_domain.transfer_syntax import UNCOMPRESSED

from . import dicom, entries, jobs, manifest
from .dicom import Instance
from .jobs import Permanent
from .settings import ConsumerSettings

# Asked for by RAD-69, in this order: what every PACS takes, then the lossless and baseline codecs.
TRANSFER_SYNTAXES = [*UNCOMPRESSED, uid.JPEGBaseline8Bit, uid.JPEGLosslessSV1, uid.JPEG2000Lossless, uid.RLELossless]


def document(s: ConsumerSettings, repository_unique_id: str, unique_id: str, home: str,
             patient: str = "") -> tuple[bytes, str]:
    """ITI-43 for one document: its bytes and mime type (``patient``: whom it is fetched for, for the audit)."""
    url = s.repositories.get(repository_unique_id)
    if not url:
        raise Permanent(f"no repository configured for {repository_unique_id}")
    try:
        r = SoapClient(url, timeout=s.timeout, spool_dir=s.spool).call(
            ns.RETRIEVE, entries.retrieve_document(repository_unique_id, unique_id, home), audit_patients=[patient])
    except (OSError, TransportError) as e:
        raise TransportError(f"repository unreachable: {e}", False) from None
    try:
        docs = entries.document_responses(r.body) if r.body is not None else []
        if not docs or docs[0][1] not in r.attachments:
            status = r.body.get("status", "") if r.body is not None else r.http_status
            raise TransportError(f"the repository did not return {unique_id} ({r.fault or status})", False)
        mime = r.body.findtext(f"{{{ns.XDSB}}}DocumentResponse/{{{ns.XDSB}}}mimeType") or ""
        return r.attachments[docs[0][1]].read(), mime.strip()
    finally:
        r.discard()


def manifest_path(s: ConsumerSettings, job: dict) -> Path:
    """Where the job's manifest is kept: named by the job's id, never by the document's uniqueId."""
    return s.spool / "manifests" / f"job-{int(job['id'])}.dcm"


def kept_manifest(s: ConsumerSettings, job: dict) -> manifest.Manifest:
    """The manifest an earlier attempt kept; fetched again when it is not there (a spool wiped, or
    kept by a version that named it otherwise)."""
    try:
        return manifest.read(manifest_path(s, job).read_bytes())
    except FileNotFoundError:
        return fetch_manifest(s, job)


def fetch_manifest(s: ConsumerSettings, job: dict) -> manifest.Manifest:
    """The job's manifest by ITI-43, read (NotAManifest is permanent) and kept for later attempts."""
    data, _ = document(s, job["repository_unique_id"], job["document_unique_id"], job["home"], job["local_patient"])
    parsed = manifest.read(data)
    path = manifest_path(s, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return parsed


def instances(s: ConsumerSettings, study_uid: str, todo: list[manifest.SeriesReference],
              work: Path, patient: str = "") -> tuple[dict[str, Instance], list[str]]:
    """Every instance of ``todo`` (by SOP Instance UID: its bytes, or its file in ``work``), by
    the configured methods in order; and the methods used."""
    wanted = {u for x in todo for u in x.instances}
    names = {dicom.instance_file(u): u for u in wanted}
    # What an earlier attempt kept.
    got: dict[str, Instance] = {names[p.name]: p for p in work.glob("*.dcm") if p.name in names}
    errors, used, transient = [], [], False
    for method in s.retrieve_order:
        left = [x for x in todo if set(x.instances) - got.keys()]
        if not left:
            break
        asked = {u for x in left for u in x.instances}
        try:
            _retrieve_by(s, method, study_uid, left, work, got, patient)
            short = asked - got.keys()
            if short:
                errors.append(f"{method}: {len(short)} instances not returned")
            if len(short) < len(asked):
                used.append(method)
        except Exception as e:
            if not (jobs.retryable(e) or jobs.permanent(e)):
                raise
            errors.append(f"{method}: {e}")
            transient = transient or jobs.retryable(e)
    missing = wanted - got.keys()
    if missing:
        reason = (f"{len(missing)} of {len(wanted)} instances could not be retrieved (e.g. {sorted(missing)[0]}): "
                  + "; ".join(errors))
        raise TransportError(reason, False) if transient else Permanent(reason)
    return got, used


def _retrieve_by(s: ConsumerSettings, method: str, study_uid: str, series: list[manifest.SeriesReference], work: Path,
                 got: dict[str, Instance], patient: str = "") -> None:
    if method == "rad69":
        for location, refs in _by_source(series, "retrieve_location_uid").items():
            url = s.sources.get(location)
            if not url:
                raise Permanent(f"no imaging source configured for Retrieve Location UID {location!r}")
            _rad69(s, url, location, study_uid, refs, work, got, patient)
        return
    for ae_title, refs in _by_source(series, "retrieve_ae_title").items():
        where = s.dicom_addresses.get(ae_title)
        if not where:
            raise Permanent(f"no DICOM address configured for Retrieve AE Title {ae_title!r}")
        peer = (ae_title, *where)
        if method == "c-get":
            classes = {c for x in series for c in x.sop_classes if c}
            dicom.get(s.ae_title, peer, study_uid, refs, classes, _holder(s, work, got), s.timeout, patient)
            continue
        try:
            dicom.move(s.ae_title, peer, s.ae_title, study_uid, refs, s.timeout, patient)
        finally:
            for uids in refs.values():
                for uid in uids:
                    name = dicom.instance_file(uid)
                    arrived = s.incoming / name           # C-MOVE sub-operations land in the shared dir
                    if arrived.exists():
                        os.replace(arrived, work / name)
                    if (work / name).exists():
                        got[uid] = work / name


def _holder(s: ConsumerSettings, work: Path, got: dict[str, Instance]):
    """Takes instances as a C-GET brings them: held in memory while the study's allowance lasts,
    then written into ``work``."""
    allowance = [s.held_per_study]

    def take(uid: str, data: bytes) -> None:
        if len(data) <= allowance[0]:
            allowance[0] -= len(data)
            got[uid] = data
        else:
            got[uid] = dicom.write_instance(work, uid, data)
    return take


def _rad69(s: ConsumerSettings, url: str, location: str, study_uid: str, refs: dict[str, list[str]], work: Path,
           got: dict[str, Instance], patient: str = "") -> None:
    try:
        r = SoapClient(url, timeout=s.timeout, spool_dir=work, memory_budget=s.held_per_study).call(
            ns.RETRIEVE_IMAGING,
            entries.retrieve_images(study_uid, refs, location, TRANSFER_SYNTAXES), audit_patients=[patient])
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
                got[uid] = shutil.move(str(part.path), work / dicom.instance_file(uid))
        missing = {u for uids in refs.values() for u in uids} - answered.keys()
        if missing:
            raise Permanent(f"the source does not have {len(missing)} instances")
    finally:
        r.discard()


def _by_source(series: list[manifest.SeriesReference], key: str) -> dict[str, dict[str, list[str]]]:
    """Series instance uids grouped by where they are retrieved from (a Retrieve Location UID or AE Title)."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for x in series:
        grouped.setdefault(getattr(x, key), {})[x.series_uid] = x.instances
    return grouped
