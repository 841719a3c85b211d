"""The prefetch flow's orchestration: a fetch is searched (``search``); a job walks its study
through ``retrieve`` and ``deliver``. Each step records itself on the fetch or the job; a failure
is retried or ends it by ``jobs``' policy."""
from __future__ import annotations

import logging
import shutil
import threading

from affinity_domain.hl7 import Cx

from . import deliver, jobs, manifest, retrieve, search
from .settings import ConsumerSettings
from .store import Store

log = logging.getLogger("xdsi.consumer")
WAIT_SECONDS = 0.5          # an idle job worker looks for due fetches and jobs this often


class Prefetcher:
    def __init__(self, store: Store, s: ConsumerSettings):
        self.store, self.s = store, s
        self.wake = threading.Event()

    def search(self, fetch: dict) -> None:
        """One attempt at a claimed fetch: jobs for the outside studies, or the failure recorded."""
        try:
            if search.search(self.store, self.s, fetch):
                self.wake.set()
        except Exception as e:
            decision = jobs.decide(fetch["attempts"], self.s.max_attempts, jobs.permanent(e), self.s.retry_base_seconds)
            reason = jobs.reason(e)
            if decision.give_up:
                self.store.fetch_done(fetch["id"], "failed", error=reason)
            else:
                self.store.fetch_retry(fetch["id"], reason, decision.retry_in)
            log.warning("search failed", extra={"fetch": fetch["id"], "error": reason, "retry_in": decision.retry_in})

    def work(self, job: dict) -> None:
        """One attempt at a claimed job, from the step it had reached."""
        try:
            step, parsed = jobs.next_step(job["state"]), None
            if step == "manifest":
                parsed = retrieve.fetch_manifest(self.s, job)
                self.store.advance(job["id"], "manifest",
                                   f"{parsed.instance_count} instances in {len(parsed.series)} series",
                                   instances_total=parsed.instance_count, study_uid=parsed.study_uid)
                step = "images"
            if step == "images":
                self._images(job, parsed)
        except Exception as e:  # network, peers down, PACS refusing: retried with back-off
            decision = jobs.decide(job["attempts"], self.s.max_attempts, jobs.permanent(e), self.s.retry_base_seconds)
            reason = jobs.reason(e)
            self.store.retry(job["id"], reason, decision.retry_in, decision.give_up)
            log.warning("job failed" if decision.give_up else "job will retry",
                        extra={"job": job["id"], "error": reason, "attempts": job["attempts"]})

    def _images(self, job: dict, parsed: manifest.Manifest | None = None) -> None:
        """``parsed``: the manifest, when this attempt has just retrieved it (else it is read back)."""
        if parsed is None:
            parsed = retrieve.kept_manifest(self.s, job)
        every = [u for x in parsed.series for u in x.instances]
        done = self.store.stored_sops(job["local_patient"], every)
        todo = parsed.without(done)
        work = self.s.spool / f"job-{job['id']}"
        work.mkdir(parents=True, exist_ok=True)
        recon = deliver.reconciliation(self.s, Cx.parse(job["local_patient"]), parsed)
        if todo:
            instances, used = retrieve.instances(self.s, parsed.study_uid, todo, work, job["local_patient"])
            self.store.advance(job["id"], "retrieved", f"{sum(len(x.instances) for x in todo)}/{len(every)} "
                                                       f"instances retrieved by {', '.join(used)}",
                               instances_done=len(done), retrieved_by=",".join(used))
            deliver.store_study(self.store, self.s, job, [instances[u] for x in todo for u in x.instances], recon,
                                len(done))
        deliver.report(self.store, self.s, job, parsed, recon, work)
        self.store.advance(job["id"], "stored", f"{len(every) - len(done)} instances stored in {self.s.pacs[0]}"
                                                f"{f', {len(done)} were there already' if done else ''}",
                           instances_done=len(every))
        shutil.rmtree(work, ignore_errors=True)
        log.info("study stored", extra={"job": job["id"], "instances": len(every) - len(done)})


    def step(self, stop: threading.Event) -> None:
        """One round of a job worker (several run at once, by a ``workers.Supervisor``, so studies are
        retrieved concurrently): a due fetch searched, a due job worked, or a wait for one."""
        busy = False
        fetch = self.store.claim_fetch()
        if fetch:
            busy = True
            self.search(fetch)
        for job in self.store.claim(limit=1):
            busy = True
            self.work(job)
        if not busy and not stop.is_set():
            self.wake.wait(WAIT_SECONDS)
            self.wake.clear()
