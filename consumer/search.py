"""Finding a patient's outside studies: the fetch's local id -> ITI-9 -> ITI-18 FindDocuments ->
the relevancy rules -> one job per outside study."""
from __future__ import annotations

import logging
from dataclasses import replace

from affinity_domain import ns, pix_query
from affinity_domain.hl7 import Cx
from affinity_domain.soap_client import SoapClient, TransportError

from . import entries, rules
from .jobs import Permanent
from .settings import ConsumerSettings
from .store import Store

log = logging.getLogger("xdsi.consumer")


def affinity_id(s: ConsumerSettings, local: Cx) -> str:
    """ITI-9: the patient's affinity-domain id."""
    try:
        answer = pix_query.ask(*s.pix_address, local, s.domain.assigning_authority, "XDSI_CONSUMER", s.timeout)
    except OSError as e:
        raise TransportError(f"PIX manager {s.pix_address[0]}:{s.pix_address[1]} unreachable: {e}", False) from None
    if not answer.known:
        raise Permanent(f"PIX does not know {local}")
    if not answer.patient_id:
        raise Permanent(f"PIX knows {local} but it has no affinity-domain id yet")
    return answer.patient_id


def find_documents(s: ConsumerSettings, affinity: str, since: str, manifests_only: bool) -> list[entries.ManifestEntry]:
    """ITI-18 FindDocuments: the patient's approved manifests (or every document, for their reports)."""
    try:
        r = SoapClient(s.registry_url, timeout=s.timeout).call(
            ns.STORED_QUERY, entries.find_documents(affinity, since, manifests_only))
    except (OSError, TransportError) as e:
        raise TransportError(f"registry unreachable: {e}", False) from None
    if r.body is None or not r.body.get("status", "").endswith(":Success"):
        answer = r.fault or (r.body.get("status") if r.body is not None else r.http_status)
        raise TransportError(f"the registry answered {answer}", False)
    return entries.read_entries(r.body)


def relevancy(s: ConsumerSettings, modalities: list[str]) -> rules.Relevancy:
    """The configured rules; modalities asked for on the command line or by HTTP narrow this fetch only."""
    return replace(s.relevancy, modalities=list(modalities)) if modalities else s.relevancy


def search(store: Store, s: ConsumerSettings, fetch: dict) -> int:
    """One attempt at a claimed fetch: its jobs recorded and the fetch searched; how many jobs are new."""
    local = Cx.parse(fetch["local_patient"])
    affinity = affinity_id(s, local)
    wanted = relevancy(s, fetch["modalities"])
    since = max(fetch["since"] or "", rules.window_start(wanted))
    found = find_documents(s, affinity, since, True)
    chosen = rules.select(found, wanted, s.local_assigning_authority)
    if s.reports != "skip" and chosen:
        entries.attach_reports(chosen, find_documents(s, affinity, since, False))
    new = store.add_jobs(fetch["id"], str(local), chosen)
    note = f"{len(found)} manifests, {len(chosen)} relevant outside studies, {new} new"
    store.fetch_done(fetch["id"], "searched", affinity, note=note)
    log.info("searched", extra={"fetch": fetch["id"],
                                "found": len(found), "relevant": len(chosen), "new": new})
    return new
