"""The registry's SOAP door: ITI-42, ITI-57, ITI-18 and ITI-51 requests in, RegistryResponse/AdhocQueryResponse out."""
from __future__ import annotations

import logging

import psycopg
import psycopg_pool

from affinity_domain import ebrim as rim
from affinity_domain import errors
from affinity_domain.soap import Envelope
from affinity_domain.soap_door import Route, SoapDoor

from .core import Registry

log = logging.getLogger("xdsi.registry")

REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
MULTI_PATIENT_QUERY = "urn:ihe:iti:2009:MultiPatientStoredQuery"
UPDATE = "urn:ihe:iti:2010:UpdateDocumentSet"
_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def door(registry: Registry, max_bytes: int) -> SoapDoor:
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
            try:
                errs, objects = registry.stored_query(envelope.body, multi_patient)
            except _UNAVAILABLE as e:
                log.error("database unavailable", extra={"error": str(e)})
                errs, objects = [errors.XdsError(errors.REGISTRY_BUSY, "the registry's database is unavailable")], []
            return errors.adhoc_query_response(errs, objects)
        return handle

    submit_request = rim.q(rim.LCM, "SubmitObjectsRequest")
    adhoc = rim.q(rim.QUERY, "AdhocQueryRequest")
    return SoapDoor({
        REGISTER: Route(submit_request, REGISTER + "Response", submit(registry.register_document_set)),
        UPDATE: Route(submit_request, UPDATE + "Response", submit(registry.update_document_set)),
        STORED_QUERY: Route(adhoc, STORED_QUERY + "Response", query(False)),
        MULTI_PATIENT_QUERY: Route(adhoc, MULTI_PATIENT_QUERY + "Response", query(True)),
    }, max_bytes=max_bytes)
