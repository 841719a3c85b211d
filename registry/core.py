"""The registry's transactions over the store: no wire formats here, no SQL."""
from __future__ import annotations

import logging

from lxml import etree

from affinity_domain import audit, audit_codes, consent, ns
from affinity_domain.audit import events
from affinity_domain import ebrim as rim
from affinity_domain.errors import REGISTRY_ERROR, REGISTRY_METADATA_ERROR, XdsError

from . import metadata_update, stored_queries, submission
from .codes import CodeSets
from .store import Store, render

log = logging.getLogger("xdsi.registry")


class Registry:
    def __init__(self, store: Store, codes: CodeSets, assigning_authority: str):
        self.store, self.codes, self.domain = store, codes, assigning_authority

    def register_document_set(self, request: etree._Element) -> list[XdsError]:
        """ITI-42: the errors, or [] when the whole submission is registered."""
        errors, objects = self._submit(request, submission.validate, self.store.register)
        if not errors:
            log.info("registered", extra={"submission_set": objects.of_kind("submission_set")[0].unique_id,
                                          "documents": len(objects.of_kind("document_entry"))})
        return errors

    def set_consent(self, pid: str, opted_out: bool, by: str) -> None:
        """Record a patient's choice (audited as a Patient Record update)."""
        self.store.set_consent(pid, opted_out, by)
        audit.record(events.patient_record(action=audit_codes.UPDATE, user=events.source(by), patients=[pid],
                                           description="opted out" if opted_out else "opted in"))
        log.info("consent recorded", extra={"opted_out": opted_out, "by": by})

    def update_document_set(self, request: etree._Element) -> list[XdsError]:
        """ITI-57 (availability status of DocumentEntries): the errors, or [] when applied."""
        errors, objects = self._submit(request, metadata_update.validate, self.store.update_status)
        if not errors:
            log.info("availability updated", extra={
                "submission_set": objects.of_kind("submission_set")[0].unique_id,
                "documents": [f"{a.target} -> {a.slot_value('NewStatus').rsplit(':', 1)[-1]}"
                              for a in objects.of_kind("association")
                              if a.association_type == rim.UPDATE_AVAILABILITY_STATUS]})
        return errors

    def _submit(self, request: etree._Element, validate, apply) -> tuple[list[XdsError], rim.ObjectList | None]:
        """A SubmitObjectsRequest validated, planned and applied: (errors, its objects)."""
        container = request.find(rim.q(ns.RIM, "RegistryObjectList"))
        if container is None:
            return [XdsError(REGISTRY_METADATA_ERROR, "SubmitObjectsRequest has no RegistryObjectList")], None
        objects = rim.parse_object_list(container)
        errors = validate(objects, self.codes, self.domain)
        if errors:
            return errors, objects
        submitted_at = submission.now_dtm()
        submission.plan(objects, submitted_at)
        return apply(objects, submitted_at), objects

    def stored_query(self, request: etree._Element, multi_patient: bool = False, principal=None,
                     peer: str = "") -> tuple[list[XdsError], list[etree._Element]]:
        """ITI-18 / ITI-51: (errors, registry objects or ObjectRefs). An opted-out patient's
        objects are left out unless ``principal`` (the XUA principal) breaks the glass."""
        try:
            query = stored_queries.read_request(request)
            with self.store.reader() as reader:
                result = stored_queries.run(query, reader, multi_patient_allowed=multi_patient)
                opted_out = reader.opted_out(sorted(stored_queries.patients_of(result)))
        except XdsError as e:
            return [e], []
        if opted_out:
            consent.record(sorted(opted_out), principal, node="xdsi-registry", peer=peer,
                           transaction="ITI-51" if multi_patient else "ITI-18")
            if not consent.break_glass(principal):
                result = stored_queries.without_patients(result, opted_out)
        if query.return_type == "ObjectRef":
            return [], [rim.object_ref(r.id) for r in result.all()]
        if query.return_type != "LeafClass":
            return [XdsError(REGISTRY_ERROR, f"returnType {query.return_type} is not supported")], []
        rendered = ([render(r, "submission_sets") for r in result.submission_sets]
                    + [render(r, "folders") for r in result.folders]
                    + [render(r, "documents") for r in result.documents]
                    + [render(r, "associations") for r in result.associations])
        return [], rendered
