"""Delivers the outbox (ITI-8 to the registry, ITI-10 to subscribers) until each message is
acknowledged; a peer that is down only delays it."""
from __future__ import annotations

import logging
import threading

from affinity_domain import hl7, mllp
from affinity_domain.exceptions import XdsiError

from .store import Store

log = logging.getLogger("xdsi.pix.delivery")


LONGEST_WAIT = 60.0


def backoff(attempts: int) -> float:
    return min(LONGEST_WAIT, 0.5 * 2 ** max(0, attempts - 1))


def deliver_due(store: Store, timeout: float = 10.0) -> int:
    sent = 0
    for message in store.due():
        host, _, port = message.destination.rpartition(":")
        try:
            ack = mllp.send(host, int(port), bytes(message.message), timeout=timeout)
        except (OSError, ValueError) as e:      # the peer down, or no MLLP reply we can read
            # Nothing is dropped: a failure of ours that no retry gets past (a reply past the frame
            # bound) waits the longest, until someone sees its last_error.
            wait = LONGEST_WAIT if isinstance(e, XdsiError) and e.permanent else backoff(message.attempts)
            store.failed(message.id, f"{type(e).__name__}: {e}", wait)
            continue
        if hl7.accepted(hl7.decode(ack)):
            store.delivered(message.id)
            sent += 1
        else:
            store.failed(message.id, f"not accepted: {ack[:200]!r}", backoff(message.attempts))
    return sent


class Deliverer(threading.Thread):
    def __init__(self, store: Store, interval: float = 0.5):
        super().__init__(name="pix-delivery", daemon=True)
        self.store, self.interval, self.stopping = store, interval, threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                deliver_due(self.store)
            except Exception:  # keep delivering whatever a single round hit
                log.exception("delivery round failed")
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
