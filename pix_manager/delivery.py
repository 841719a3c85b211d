"""Delivers the outbox (ITI-8 to the registry, ITI-10 to subscribers) until each message is
acknowledged; a peer that is down only delays it. A message no retry gets past by itself (the peer
rejects it, a permanent error of ours, anything unexpected) is quarantined: kept, counted, tried
again at the longest wait, while the others go on."""
from __future__ import annotations

import logging
import threading

from affinity_domain import hl7
from affinity_domain.audit import hl7v2 as audit_hl7
from affinity_domain.exceptions import XdsiError

from .store import Store

log = logging.getLogger("xdsi.pix.delivery")


LONGEST_WAIT = 60.0


def backoff(attempts: int) -> float:
    return min(LONGEST_WAIT, 0.5 * 2 ** max(0, attempts - 1))


def deliver_due(store: Store, timeout: float = 10.0) -> int:
    sent = 0
    for message in store.due():
        try:
            sent += _deliver(store, message, timeout)
        except Exception as e:      # this message's alone (a bug, an answer we cannot read): the rest go on
            _quarantine(store, message, f"{type(e).__name__}: {e}")
    return sent


def _deliver(store: Store, message, timeout: float) -> int:
    host, _, port = message.destination.rpartition(":")
    try:
        ack = audit_hl7.send(host, int(port), bytes(message.message), timeout=timeout)   # ITI-8, ITI-10
    except (OSError, ValueError) as e:      # the peer down, or no MLLP reply we can read
        # Nothing is dropped: a failure of ours that no retry gets past (a reply past the frame
        # bound) is quarantined, until someone sees its last_error.
        if isinstance(e, XdsiError) and e.permanent:
            _quarantine(store, message, f"{type(e).__name__}: {e}")
        else:
            store.failed(message.id, f"{type(e).__name__}: {e}", backoff(message.attempts))
        return 0
    reply = hl7.decode(ack)
    if hl7.accepted(reply):
        store.delivered(message.id)
        return 1
    msa = hl7.first_segment(reply, "MSA")
    reason = f"not accepted: {ack[:200]!r}"
    if msa is not None and len(msa) > 1 and msa[1] in ("AR", "CR"):     # rejected: sending it again will not do
        _quarantine(store, message, reason)
    else:
        store.failed(message.id, reason, backoff(message.attempts))
    return 0


def _quarantine(store: Store, message, reason: str) -> None:
    log.error("outbox message quarantined", extra={"outbox_id": message.id, "destination": message.destination,
                                                   "reason": reason, "retry_in": LONGEST_WAIT})
    store.failed(message.id, reason, LONGEST_WAIT, quarantined=True)


class Deliverer:
    """The outbox's worker: ``step`` is one round (run by a ``workers.Supervisor``)."""

    def __init__(self, store: Store, interval: float = 0.5):
        self.store, self.interval = store, interval

    def step(self, stop: threading.Event) -> None:
        deliver_due(self.store)
        stop.wait(self.interval)
