"""The registry's SOAP door: ITI-42, ITI-57, ITI-18 and ITI-51 requests in, RegistryResponse/AdhocQueryResponse out."""
from __future__ import annotations

import logging

import psycopg
import psycopg_pool

from affinity_domain import audit, audit_codes, consent, ns
from affinity_domain.audit import events
from affinity_domain import ebrim as rim
from affinity_domain import errors
from affinity_domain.soap import Envelope
from affinity_domain.soap_door import Route, SoapDoor
from affinity_domain.xua import XuaSettings

from .core import Registry

log = logging.getLogger("xdsi.registry")

_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def multi_patient_allowed(principal, roles: frozenset[str]) -> bool:
    """ITI-51 is answered only for an XUA principal holding one of ``[registry] multi_patient_roles``."""
    return principal is not None and any(r.code in roles for r in principal.roles)


def door(registry: Registry, max_bytes: int, max_parts: int, max_part_header_bytes: int,
         xua: XuaSettings | None = None, multi_patient_roles: frozenset[str] = frozenset()) -> SoapDoor:
    def submit(transaction):
        def handle(envelope: Envelope):
            try:
                return errors.registry_response(transaction(envelope.body))
            except _UNAVAILABLE as e:
                log.error("database unavailable", extra={"error": str(e)})
                return errors.registry_response([errors.XdsError(errors.REGISTRY_BUSY,
                                                                 "the registry's database is unavailable")])
        return handle

    def query(multi_patient: bool):
        def handle(envelope: Envelope):
            if multi_patient and not multi_patient_allowed(envelope.principal, multi_patient_roles):
                refused(envelope)
                return errors.adhoc_query_response([errors.XdsError(
                    errors.REGISTRY_ERROR, "multi-patient queries (ITI-51) are not authorised for this requester")], [])
            try:
                errs, objects = registry.stored_query(envelope.body, multi_patient, envelope.principal)
            except _UNAVAILABLE as e:
                log.error("database unavailable", extra={"error": str(e)})
                errs, objects = [errors.XdsError(errors.REGISTRY_BUSY, "the registry's database is unavailable")], []
            return errors.adhoc_query_response(errs, objects)
        return handle

    def refused(envelope: Envelope) -> None:
        principal = envelope.principal
        who = consent.human(principal)
        audit.record(events.security_alert(
            kind=audit_codes.USE_OF_RESTRICTED_FUNCTION, reporter=events.destination("xdsi-registry"),
            subject=ns.MULTI_PATIENT_QUERY, subject_type=audit_codes.URI,
            performers=[] if who else [events.source("anonymous")], human=who,
            description="ITI-51 refused: the requester holds none of [registry] multi_patient_roles"))
        log.warning("ITI-51 refused", extra={"subject": getattr(principal, "subject", "")})

    submit_request = rim.q(ns.LCM, "SubmitObjectsRequest")
    adhoc = rim.q(ns.QUERY, "AdhocQueryRequest")
    return SoapDoor({
        ns.REGISTER: Route(submit_request, ns.REGISTER_RESPONSE, submit(registry.register_document_set)),
        ns.UPDATE: Route(submit_request, ns.UPDATE_RESPONSE, submit(registry.update_document_set)),
        ns.STORED_QUERY: Route(adhoc, ns.STORED_QUERY_RESPONSE, query(False)),
        ns.MULTI_PATIENT_QUERY: Route(adhoc, ns.MULTI_PATIENT_QUERY_RESPONSE, query(True)),
    }, max_bytes=max_bytes, max_parts=max_parts, max_part_header_bytes=max_part_header_bytes, xua=xua,
        node="xdsi-registry")
