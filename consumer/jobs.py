"""The job state machine and the retry decisions, pure.

A fetch (one per order or request) searches once: new -> searched | failed. A job (one per outside
study) walks found -> manifest -> retrieved -> stored; any step may fail. A failure either waits
and retries (peer down, time-out, a PACS that said no) or ends the job (retrying cannot help)."""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import OperationalError

from affinity_domain.exceptions import XdsiError

FETCH_STATES = ("new", "searched", "failed")
JOB_STATES = ("found", "manifest", "retrieved", "stored", "failed")
DONE = ("stored", "failed")


class Permanent(XdsiError):
    """Retrying cannot help: unknown patient or source, instances gone."""

    permanent = True


# Exceptions not ours that a later attempt may get past: a peer or the database unreachable.
FOREIGN_RETRYABLE = (OSError, OperationalError)


def retryable(e: BaseException) -> bool:
    return e.retryable if isinstance(e, XdsiError) else isinstance(e, FOREIGN_RETRYABLE)


def permanent(e: BaseException) -> bool:
    return isinstance(e, XdsiError) and e.permanent


def reason(e: BaseException) -> str:
    """A failure as recorded on its fetch or job: ours say what happened; anything else is named."""
    return str(e) if isinstance(e, XdsiError) else f"{type(e).__name__}: {e}"


@dataclass(frozen=True)
class Decision:
    give_up: bool
    retry_in: float        # seconds; 0 when giving up


def backoff(attempts: int, base: float = 2.0, cap: float = 300.0) -> float:
    """2 s, 6 s, 18 s, … (base * 3^(n-1)), never more than ``cap``."""
    return min(cap, base * 3 ** max(0, attempts - 1))


def decide(attempts: int, max_attempts: int, permanent: bool, base: float = 2.0) -> Decision:
    """After the ``attempts``-th attempt failed: wait and retry, or give up."""
    if permanent or attempts >= max_attempts:
        return Decision(True, 0.0)
    return Decision(False, backoff(attempts, base))


def next_step(state: str) -> str | None:
    """What a worker does with a job in ``state``: fetch the manifest, or the images; None: done."""
    return {"found": "manifest", "manifest": "images", "retrieved": "images"}.get(state)


def fetch_summary(fetch: dict, jobs: list[dict]) -> dict:
    """Progress of one fetch for the API and the CLI's bar: instances counted as stored or done."""
    total = sum(j["instances_total"] for j in jobs)
    done = sum(j["instances_total"] if j["state"] == "stored" else j["instances_done"] for j in jobs)
    finished = fetch["state"] == "failed" or (fetch["state"] == "searched" and all(j["state"] in DONE for j in jobs))
    return {"instances_total": total, "instances_done": done, "studies": len(jobs),
            "studies_stored": sum(j["state"] == "stored" for j in jobs),
            "studies_failed": sum(j["state"] == "failed" for j in jobs), "finished": finished}
