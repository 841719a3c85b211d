"""The repository's transactions: bytes to the content store, rows to the index, ITI-42 to the
registry, and the recovery of submissions that never finished. No wire formats, no SQL here."""
from __future__ import annotations

import base64
import binascii
import logging
import threading
from dataclasses import dataclass, field

from lxml import etree

from affinity_domain import ebrim as rim
from affinity_domain import consent, mtom, ns, query_ids
from affinity_domain.content import FileStore
from affinity_domain.errors import (NON_IDENTICAL_HASH, REGISTRY_NOT_AVAILABLE, REPOSITORY_METADATA_ERROR,
                                    REPOSITORY_OUT_OF_RESOURCES, XdsError, registry_response)
from affinity_domain.exceptions import XdsiError
from affinity_domain.soap_client import SoapClient, TransportError

from . import provide, retrieve
from .provide import Content
from .store import Index, Row

log = logging.getLogger("xdsi.repository")

_QUERY_BATCH = 100


@dataclass
class Retrieved:
    response: etree._Element
    parts: list[mtom.OutPart]
    patients: list[str] = field(default_factory=list)     # whose documents were served (for the audit record)


class QueryRefused(XdsiError):
    """The registry answered recovery's GetDocuments with a failure: asking again unchanged will not do."""

    permanent = True


class Repository:
    def __init__(self, index: Index, content: FileStore, registry: SoapClient, repository_unique_id: str):
        self.index, self.content, self.registry = index, content, registry
        self.unique_id = repository_unique_id
        # The registry's consent API, asked before each ITI-43 (empty: nobody opts out here).
        self.consent_url = consent.withheld_url(registry.url) if registry is not None else ""
        self._recovering = threading.Lock()
        self.quarantined = 0        # pending submissions the last recovery could not settle

    # ------------------------------------------------------------ ITI-41 / RAD-68

    def provide_and_register(self, request: etree._Element,
                             attachments: dict[str, mtom.Attachment]) -> etree._Element:
        """The RegistryResponse for a ProvideAndRegisterDocumentSetRequest."""
        submit, parts = provide.read_request(request)
        if submit is None:
            return registry_response([XdsError(REPOSITORY_METADATA_ERROR,
                                               "ProvideAndRegisterDocumentSetRequest has no SubmitObjectsRequest")])
        stray = provide.stray_parts(parts, attachments)
        contents = {p.id: self._content(p, attachments) for p in parts}
        try:
            return self._provide(submit, contents, stray)
        finally:
            for c in contents.values():      # what was not moved into the content store
                if c.path is not None:
                    c.path.unlink(missing_ok=True)

    def _provide(self, submit: etree._Element, contents: dict[str, Content],
                 stray: list[XdsError]) -> etree._Element:
        errors, docs = provide.check_and_stamp(submit, contents, self.unique_id)
        if errors or stray:
            return registry_response(errors + stray)
        rows = {d.unique_id: Row(d.unique_id, d.content.sha1, d.content.size, d.mime_type, "pending", "",
                                 patient_id=d.patient_id) for d in docs}
        created, existing = self.index.reserve(list(rows.values()))
        clashes = [XdsError(NON_IDENTICAL_HASH,
                            f"document {e.unique_id} is already stored with SHA-1 {e.sha1}", e.unique_id)
                   for e in existing if e.sha1 != rows[e.unique_id].sha1]
        if clashes:
            self.index.forget(created, self.content.delete)
            return registry_response(clashes)
        try:
            for d in docs:
                self.content.put(d.content.path, d.content.sha1)
        except OSError as e:
            log.error("cannot store document bytes", extra={"error": str(e)})
            self.index.forget(created, self.content.delete)
            return registry_response([XdsError(REPOSITORY_OUT_OF_RESOURCES,
                                               f"the repository cannot store the documents: {e.strerror or e}")])
        return self._register(submit, created)

    def _content(self, part: provide.DocumentPart, attachments: dict[str, mtom.Attachment]) -> Content:
        if part.cid is not None:
            a = attachments.get(part.cid)
            if a is None:
                return Content(error=f"xop:Include references cid:{part.cid}, which is not a part of the message")
            if a.error:
                return Content(error=a.error, error_code=REPOSITORY_OUT_OF_RESOURCES)
            return Content(a.size, a.sha1, a.path)
        return self._spool_base64(part.text or "")

    def _spool_base64(self, text: str) -> Content:
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return Content(error="the inline document is not valid base64")
        spooled = mtom.spool(data, self.content.spool_dir)
        if spooled.error:
            return Content(error=spooled.error, error_code=REPOSITORY_OUT_OF_RESOURCES)
        return Content(spooled.size, spooled.sha1, spooled.path)

    def _register(self, submit: etree._Element, created: list[str]) -> etree._Element:
        """ITI-42; the registry's answer goes back unchanged."""
        try:
            answer = self.registry.call(ns.REGISTER, submit)
        except XdsiError as e:
            if not e.retryable:
                raise
            if getattr(e, "maybe_processed", True):
                # The registry may have registered it: recovery asks it later and keeps or drops
                # the bytes accordingly. Until then nothing of it is retrievable.
                log.warning("registry did not answer", extra={"error": str(e), "pending": created})
            else:
                self.index.forget(created, self.content.delete)
            return registry_response([XdsError(REGISTRY_NOT_AVAILABLE, str(e))])
        body = answer.body
        if answer.fault or body is None or body.tag != rim.q(ns.RS, "RegistryResponse"):
            self.index.forget(created, self.content.delete)
            return registry_response([XdsError(REGISTRY_NOT_AVAILABLE,
                                               f"the registry answered no RegistryResponse: {answer.fault}")])
        if body.get("status", "").endswith(":Success"):
            self.index.mark_registered(created)
            log.info("provided and registered", extra={"documents": created})
        else:
            self.index.forget(created, self.content.delete)
        return body

    # ------------------------------------------------------------ ITI-43

    def retrieve(self, request: etree._Element, principal=None) -> Retrieved:
        """ITI-43. An opted-out patient's documents are answered as unknown, unless ``principal``
        (the XUA principal) breaks the glass; the registry says whose they are."""
        requests = retrieve.read_request(request)
        wanted = [r.document_unique_id for r in requests if r.repository_unique_id == self.unique_id]
        rows = self.index.registered(wanted) if wanted else {}
        try:        # only about the documents held here: an unknown one is unknown, registry or not
            hidden = self._withheld(sorted(rows), principal)
        except consent.ConsentUnavailable as e:
            log.error("retrieve refused: consent unknown", extra={"error": str(e)})
            return Retrieved(retrieve.response([XdsError(REGISTRY_NOT_AVAILABLE, str(e))], []), [])
        rows = {uid: row for uid, row in rows.items() if uid not in hidden}
        files = {}
        for uid, row in rows.items():
            try:
                files[uid] = self.content.open(row.sha1)
            except FileNotFoundError:
                log.error("registered document has no bytes", extra={"unique_id": uid, "sha1": row.sha1})
        errors, served = retrieve.plan(requests, self.unique_id, {u: rows[u].mime_type for u in files})
        parts = [mtom.OutPart(s.content_id, s.mime_type or "application/octet-stream",
                              file=files.pop(s.request.document_unique_id)) for s in served]
        for f in files.values():
            f.close()
        patients = list(dict.fromkeys(rows[s.request.document_unique_id].patient_id for s in served
                                      if rows[s.request.document_unique_id].patient_id))
        return Retrieved(retrieve.response(errors, served), parts, patients)

    def _withheld(self, unique_ids: list[str], principal) -> set[str]:
        if not unique_ids or not self.consent_url:
            return set()
        withheld = consent.ask_withheld(self.consent_url, documents=unique_ids,
                                        timeout=self.registry.timeout)["documents"]
        if not withheld:
            return set()
        consent.record(sorted(set(withheld.values())), principal, node="xdsi-repository", transaction="ITI-43")
        return set() if consent.break_glass(principal) else set(withheld)

    # ------------------------------------------------------------ recovery

    def recover(self, grace_seconds: float) -> dict[str, int]:
        """Settle pending submissions nobody is finishing (a crash, a registry time-out): keep
        what the registry has registered, forget the rest. Then drop bytes no row names. A
        submission the registry will not be asked about is quarantined: left pending (its bytes
        kept), counted and logged, tried again next round; the others are settled."""
        done = {"registered": 0, "forgotten": 0, "orphans": 0, "spool": 0}
        if not self._recovering.acquire(blocking=False):
            return done
        try:
            rows = self.index.unfinished(grace_seconds)
            quarantined = 0
            for start in range(0, len(rows), _QUERY_BATCH):
                batch = rows[start:start + _QUERY_BATCH]
                try:
                    known, refused = self._known([r.unique_id for r in batch])
                except XdsiError as e:
                    if not e.retryable:
                        raise
                    log.warning("recovery postponed: registry unavailable", extra={"error": str(e)})
                    return done
                if refused and len(refused) == len(batch) > 1:     # every one of them: the registry's trouble
                    log.warning("recovery postponed: the registry refuses every query", extra={"batch": len(batch)})
                    return done
                quarantined += len(refused)
                keep = [r.unique_id for r in batch if known.get(r.unique_id) == r.sha1]
                drop = [r.unique_id for r in batch if r.unique_id not in keep and r.unique_id not in refused]
                self.index.mark_registered(keep)
                self.index.forget(drop, self.content.delete)
                done["registered"] += len(keep)
                done["forgotten"] += len(drop)
            self.quarantined = quarantined
            done["orphans"] = self.index.orphans(list(self.content.keys()), self.content.delete)
            done["spool"] = self.content.sweep_spool()
            if any(done.values()):
                log.info("recovered", extra=done)
            return done
        finally:
            self._recovering.release()

    def _known(self, unique_ids: list[str]) -> tuple[dict[str, str], list[str]]:
        """``_registered_in_registry`` for a batch; when the registry refuses the query, each is asked
        about alone, and those it still refuses come back apart (quarantined)."""
        try:
            return self._registered_in_registry(unique_ids), []
        except QueryRefused as e:
            if len(unique_ids) > 1:
                known, refused = {}, []
                for unique_id in unique_ids:
                    one, out = self._known([unique_id])
                    known.update(one)
                    refused += out
                return known, refused
            log.error("pending submission quarantined: the registry refuses to be asked about it",
                      extra={"unique_id": unique_ids[0], "reason": str(e)})
            return {}, unique_ids

    def _registered_in_registry(self, unique_ids: list[str]) -> dict[str, str]:
        """uniqueId -> hash of the DocumentEntries the registry holds for this repository."""
        answer = self.registry.call(ns.STORED_QUERY, get_documents_query(unique_ids))
        body = answer.body
        if body is None and not answer.fault:
            raise TransportError("GetDocuments answered no body", maybe_processed=False)
        if answer.fault or not body.get("status", "").endswith(":Success"):
            raise QueryRefused(f"GetDocuments failed: {answer.fault or body.get('status')}")
        found = {}
        for entry in body.iter(rim.q(ns.RIM, "ExtrinsicObject")):
            if provide.slot_values(entry, "repositoryUniqueId") != [self.unique_id]:
                continue
            hashes = provide.slot_values(entry, "hash") or [""]
            found[provide.entry_unique_id(entry)] = hashes[0].lower()
        return found


def get_documents_query(unique_ids: list[str]) -> etree._Element:
    """ITI-18 GetDocuments by uniqueId, LeafClass."""
    q = etree.Element(rim.q(ns.QUERY, "AdhocQueryRequest"), nsmap={"query": ns.QUERY, "rim": ns.RIM})
    etree.SubElement(q, rim.q(ns.QUERY, "ResponseOption"), returnType="LeafClass", returnComposedObjects="true")
    adhoc = etree.SubElement(q, rim.q(ns.RIM, "AdhocQuery"), id=query_ids.GET_DOCUMENTS)
    slot = etree.SubElement(adhoc, rim.q(ns.RIM, "Slot"), name="$XDSDocumentEntryUniqueId")
    values = etree.SubElement(slot, rim.q(ns.RIM, "ValueList"))
    quoted = ",".join("'" + u.replace("'", "''") + "'" for u in unique_ids)
    etree.SubElement(values, rim.q(ns.RIM, "Value")).text = f"({quoted})"
    return q
