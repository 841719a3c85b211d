"""The repository's SOAP door: ITI-41/RAD-68 and ITI-43 in, RegistryResponse /
RetrieveDocumentSetResponse out. MTOM parts reach the core as spooled files, never as base64."""
from __future__ import annotations

import logging

import psycopg
import psycopg_pool

from affinity_domain import errors
from affinity_domain.soap import Envelope
from affinity_domain.soap_door import Reply, Route, SoapDoor

from . import provide, retrieve
from .core import Repository

log = logging.getLogger("xdsi.repository")

PROVIDE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"     # ITI-41, and RAD-68's wire
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
REPOSITORY_BUSY = "XDSRepositoryBusy"
_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def _busy(e: Exception) -> errors.XdsError:
    log.error("database unavailable", extra={"error": str(e)})
    return errors.XdsError(REPOSITORY_BUSY, "the repository's database is unavailable")


def door(repository: Repository, max_bytes: int, spool_dir, max_stream_bytes: int) -> SoapDoor:
    def provide_and_register(envelope: Envelope, attachments):
        try:
            return repository.provide_and_register(envelope.body, attachments)
        except _UNAVAILABLE as e:
            return errors.registry_response([_busy(e)])

    def retrieve_document_set(envelope: Envelope, attachments):
        try:
            found = repository.retrieve(envelope.body)
        except _UNAVAILABLE as e:
            return Reply(retrieve.response([_busy(e)], []), [])
        return Reply(found.response, found.parts)     # always MTOM, one part per document

    return SoapDoor({
        PROVIDE: Route(f"{{{provide.XDSB}}}ProvideAndRegisterDocumentSetRequest", PROVIDE + "Response",
                       provide_and_register, attachments=True),
        RETRIEVE: Route(f"{{{provide.XDSB}}}RetrieveDocumentSetRequest", RETRIEVE + "Response",
                        retrieve_document_set, attachments=True),
    }, max_bytes=max_bytes, spool_dir=spool_dir, max_stream_bytes=max_stream_bytes)
