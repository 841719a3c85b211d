"""The registry's SOAP door: ITI-42, ITI-57, ITI-18 and ITI-51 requests in, RegistryResponse/AdhocQueryResponse out."""
from __future__ import annotations

import logging

import psycopg
import psycopg_pool

from affinity_domain import ns
from affinity_domain import ebrim as rim
from affinity_domain import errors
from affinity_domain.soap import Envelope
from affinity_domain.soap_door import Route, SoapDoor

from .core import Registry

log = logging.getLogger("xdsi.registry")

_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def door(registry: Registry, max_bytes: int, max_parts: int, max_part_header_bytes: int) -> SoapDoor:
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

    submit_request = rim.q(ns.LCM, "SubmitObjectsRequest")
    adhoc = rim.q(ns.QUERY, "AdhocQueryRequest")
    return SoapDoor({
        ns.REGISTER: Route(submit_request, ns.REGISTER_RESPONSE, submit(registry.register_document_set)),
        ns.UPDATE: Route(submit_request, ns.UPDATE_RESPONSE, submit(registry.update_document_set)),
        ns.STORED_QUERY: Route(adhoc, ns.STORED_QUERY_RESPONSE, query(False)),
        ns.MULTI_PATIENT_QUERY: Route(adhoc, ns.MULTI_PATIENT_QUERY_RESPONSE, query(True)),
    }, max_bytes=max_bytes, max_parts=max_parts, max_part_header_bytes=max_part_header_bytes)
