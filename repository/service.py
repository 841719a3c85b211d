"""The repository's SOAP door: ITI-41/RAD-68 and ITI-43 in, RegistryResponse /
RetrieveDocumentSetResponse out. MTOM parts reach the core as spooled files, never as base64."""
from __future__ import annotations

import logging

import psycopg
import psycopg_pool

from affinity_domain import errors, ns
from affinity_domain.soap import Envelope
from affinity_domain.soap_door import Reply, Route, SoapDoor
from affinity_domain.xua import XuaSettings

from . import provide, retrieve
from .core import Repository

log = logging.getLogger("xdsi.repository")

_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def _busy(e: Exception) -> errors.XdsError:
    log.error("database unavailable", extra={"error": str(e)})
    return errors.XdsError(errors.REPOSITORY_BUSY, "the repository's database is unavailable")


def _provide_transaction(envelope: Envelope) -> str:
    return "RAD-68" if provide.is_imaging(envelope.body) else "ITI-41"


def door(repository: Repository, max_bytes: int, spool_dir, max_stream_bytes: int,
         max_parts: int, max_part_header_bytes: int, xua: XuaSettings | None = None) -> SoapDoor:
    def provide_and_register(envelope: Envelope, attachments):
        try:
            return repository.provide_and_register(envelope.body, attachments)
        except _UNAVAILABLE as e:
            return errors.registry_response([_busy(e)])

    def retrieve_document_set(envelope: Envelope, attachments):
        try:
            found = repository.retrieve(envelope.body, envelope.principal)
        except _UNAVAILABLE as e:
            return Reply(retrieve.response([_busy(e)], []), [])
        envelope.audit["patients"] = found.patients
        return Reply(found.response, found.parts)     # always MTOM, one part per document

    return SoapDoor({
        ns.PROVIDE_AND_REGISTER: Route(f"{{{ns.XDSB}}}ProvideAndRegisterDocumentSetRequest",
                                       ns.PROVIDE_AND_REGISTER_RESPONSE, provide_and_register, attachments=True,
                                       loose_parts=True, transaction=_provide_transaction),
        ns.RETRIEVE: Route(f"{{{ns.XDSB}}}RetrieveDocumentSetRequest", ns.RETRIEVE_RESPONSE,
                           retrieve_document_set, attachments=True),
    }, max_bytes=max_bytes, spool_dir=spool_dir, max_stream_bytes=max_stream_bytes, max_parts=max_parts,
        max_part_header_bytes=max_part_header_bytes, xua=xua, node="xdsi-repository")
