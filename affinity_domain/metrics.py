"""Prometheus metrics (``prometheus_client``): requests by transaction and outcome, their latencies, and
what the health probes report (workers alive and restarted, queue depths, quarantined items).

``setup(directory)`` runs once per actor, before it forks: it empties ``<data dir>/run/<actor>/metrics``
and points ``PROMETHEUS_MULTIPROC_DIR`` at it, so that every process (forked HTTP or MLLP workers too)
counts into its own file there and ``/metrics``, whichever process answers, sums them. Without a
setup (a library use, a unit test) the counts are kept in this process only.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

from . import hl7

# Latency buckets (seconds): an MLLP ACK takes a millisecond, a large ITI-41 minutes.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_metrics = None


class _Metrics:
    def __init__(self, directory: Path | None):
        from prometheus_client import CollectorRegistry, Counter, Histogram, values
        # The value class is picked from the environment when prometheus_client is first imported:
        # pick it again, now that PROMETHEUS_MULTIPROC_DIR says which.
        values.ValueClass = values.get_value_class()
        self.directory = directory
        self.own = None if directory else CollectorRegistry()
        self.requests = Counter("xdsi_requests", "Requests answered, by transaction and outcome "
                                "(success, partial, failure, fault) and error code",
                                ["transaction", "outcome", "code"], registry=self.own)
        self.seconds = Histogram("xdsi_request_seconds", "Time to answer a request, by transaction",
                                 ["transaction"], buckets=BUCKETS, registry=self.own)


def setup(directory: Path | None) -> None:
    """Count into ``directory`` (emptied first), shared by this process and those it forks."""
    global _metrics
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _metrics = _Metrics(directory)


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics(None)
    return _metrics


def observe(transaction: str, outcome: str, code: str, seconds: float) -> None:
    m = _get()
    m.requests.labels(transaction, outcome, code).inc()
    m.seconds.labels(transaction).observe(seconds)


def exposition(health=None) -> bytes:
    """The text format of every process's counts, and of ``health``'s probes as read now."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    m = _get()
    registry = m.own
    if registry is None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(m.directory))
    text = generate_latest(registry)
    if health is not None:
        probes = CollectorRegistry()
        probes.register(_ProbeCollector(health))
        text += generate_latest(probes)
    return text


class _ProbeCollector:
    def __init__(self, health):
        self.health = health

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        labels = ["process", "worker"]
        families = {
            "alive": GaugeMetricFamily("xdsi_worker_alive", "1 when the worker is alive", labels=labels),
            "restarts": GaugeMetricFamily("xdsi_worker_restarts", "Times the worker was restarted", labels=labels),
            "queue": GaugeMetricFamily("xdsi_queue_depth", "Items waiting for the worker", labels=labels),
            "quarantined": GaugeMetricFamily("xdsi_quarantined_items", "Items the worker set aside (kept, retryable)",
                                             labels=labels),
        }
        report = self.health.report()
        for process, entry in report["processes"].items():
            for worker, state in entry.get("workers", {}).items():
                for key, family in families.items():
                    value = state.get(key)
                    if isinstance(value, (bool, int, float)):
                        family.add_metric([process, worker], float(value))
        up = GaugeMetricFamily("xdsi_healthy", "1 when /health answers ok")
        up.add_metric([], 1.0 if report["status"] == "ok" else 0.0)
        yield from [*families.values(), up]


# ---------------------------------------------------------------- outcomes

def xds_outcome(element) -> tuple[str, str]:
    """(success | partial | failure, first error code) of a RegistryResponse, an AdhocQueryResponse or a
    RetrieveDocumentSetResponse (whose RegistryResponse is its first child)."""
    from .ns import RS
    status = element.get("status")
    if status is None:
        inner = element.find(f"{{{RS}}}RegistryResponse")
        if inner is None:
            return "success", ""
        element, status = inner, inner.get("status", "")
    error = element.find(f"{{{RS}}}RegistryErrorList/{{{RS}}}RegistryError")   # not .//: answers can be large
    code = error.get("errorCode", "") if error is not None else ""
    if status.endswith(":Success"):
        return "success", code
    return ("partial" if status.endswith(":PartialSuccess") else "failure"), code


def hl7_outcome(reply: bytes) -> tuple[str, str]:
    """(success | failure, MSA-1 and the first ERR's code) of an ACK or a query response."""
    text = hl7.decode(reply)
    msa = hl7.first_segment(text, "MSA")
    ack = msa[1] if msa and len(msa) > 1 else ""
    err = hl7.first_segment(text, "ERR") or []
    if len(err) > 3 and err[3]:              # v2.4 on: ERR-3, code^text^HL70357
        code = err[3].split("^")[0]
    else:                                    # v2.3.1: ERR-1, segment^sequence^field^code&text
        eld = err[1].split("^") if len(err) > 1 else []
        code = eld[3].split("&")[0] if len(eld) > 3 else ""
    return ("success" if ack in ("AA", "CA") else "failure"), "/".join(c for c in (ack, code) if c)


def counted_mllp(handler: Callable[[bytes], bytes], transaction: Callable[[bytes], str] | str):
    """An MLLP handler (``handler(bytes) -> bytes``) whose messages are counted by transaction and ACK."""
    name_of = transaction if callable(transaction) else (lambda raw: transaction)

    def handle(raw: bytes) -> bytes:
        started = time.perf_counter()
        try:
            reply = handler(raw)
        except Exception:
            observe(name_of(raw), "failure", "exception", time.perf_counter() - started)
            raise
        outcome, code = hl7_outcome(reply)
        observe(name_of(raw), outcome, code, time.perf_counter() - started)
        return reply
    return handle


def hl7_transaction(kinds: dict[str, str], other: str = "HL7") -> Callable[[bytes], str]:
    """The transaction of an HL7 message by its MSH-9 message type (``{"QBP": "ITI-9", "ADT": "ITI-8"}``)."""
    def name(raw: bytes) -> str:
        end = raw.find(b"\r")                   # MSH alone: the message may be a megabyte
        return kinds.get(hl7.msh_fields(raw[:end] if end > 0 else raw[:4096])["type"].split("^")[0], other)
    return name
