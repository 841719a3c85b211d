"""The patient index: applies feed messages and review decisions to the store, using the pure
linker and matching; queues what the registry and subscribers must hear."""
from __future__ import annotations

import logging
import threading
import time

from affinity_domain.hl7 import Cx, Hl7Error

from . import blocking, messages
from .demographics import Demographics
from .linkage import Model, compare
from .matching import decide
from .settings import PixSettings
from .store import Store, Tx

log = logging.getLogger("xdsi.pix")


class PatientIndex:
    def __init__(self, store: Store, settings: PixSettings):
        self.store, self.s = store, settings
        self._model, self._version, self._checked = Model(), None, float("-inf")
        self._model_lock = threading.Lock()

    def model(self) -> Model:
        """The parameters ``xdsi pix train`` stored (the built-in priors before any training), looked
        for again every ``model_reload_seconds``."""
        if time.monotonic() - self._checked < self.s.model_reload_seconds:
            return self._model
        with self._model_lock:
            if time.monotonic() - self._checked >= self.s.model_reload_seconds:
                version = self.store.model_version()
                if version != self._version:
                    stored = self.store.model()
                    if stored is not None:
                        version, parameters = stored
                        self._model = Model.from_dict(parameters)
                        log.info("linkage parameters loaded", extra={"trained": self._model.trained})
                    self._version = version
                self._checked = time.monotonic()
        return self._model

    # ------------------------------------------------------------ helpers

    def known_domains(self, tx: Tx) -> set[str]:
        if self.s.domains:
            return set(self.s.domains) | {self.s.affinity_authority}
        return tx.domains() | {self.s.affinity_authority}

    def _check_domain(self, tx: Tx, cx: Cx, location: str) -> None:
        if self.s.domains and cx.authority not in self.known_domains(tx):
            raise Hl7Error(f"unknown domain {cx.authority}", code="204", location=location)
        tx.add_domain(cx.authority)

    def _forward_new(self, tx: Tx, affinity_id: str, d: Demographics) -> None:
        if self.s.registry_feed:
            tx.enqueue(self.s.registry_feed, messages.patient_feed(affinity_id, d))

    def _notify(self, tx: Tx, enterprise: int) -> None:
        if not self.s.subscribers:
            return
        message = messages.update_notification(sorted({str(c) for c in self._ids_of(tx, enterprise)}))
        for destination in self.s.subscribers:
            tx.enqueue(destination, message)

    def _ids_of(self, tx: Tx, enterprise: int) -> list[Cx]:
        """A person's ids, the affinity-domain id last, each with its domain's authority as configured."""
        ids = [self.s.authorities.cx(i.pid, i.domain) for i in tx.members(enterprise)]
        affinity = Cx.parse(tx.affinity_id(enterprise))
        affinity = self.s.authorities.cx(affinity.id, affinity.authority)
        return ids + ([affinity] if affinity.key not in {c.key for c in ids} else [])

    def _forward_merge(self, tx: Tx, subsumed: int, surviving: int, d: Demographics) -> None:
        """The subsumed person's ids all go to the surviving one; the registry hears of it."""
        gone, kept = tx.affinity_id(subsumed), tx.affinity_id(surviving)
        tx.merge_enterprise(subsumed, surviving)
        if self.s.registry_feed:
            tx.enqueue(self.s.registry_feed, messages.merge_feed(kept, gone, d))

    def _new_person(self, tx: Tx, cx: Cx, d: Demographics) -> int:
        own = str(Cx(cx.id, cx.authority)) if cx.authority == self.s.affinity_authority else None
        enterprise, affinity_id = tx.new_enterprise(own, self.s.affinity_prefix, self.s.affinity_authority)
        self._forward_new(tx, affinity_id, d)
        return enterprise

    # ------------------------------------------------------------ ITI-8

    def feed(self, message: messages.FeedMessage) -> str:
        with self.store.transaction() as tx:
            for i, cx in enumerate(message.ids, start=1):
                self._check_domain(tx, cx, f"PID^1^3^{i}")
            if message.event in messages.MERGE:
                return self._merge(tx, message)
            # Several ids in one PID-3: the source says they are one patient. The one already known
            # (else the first) is matched as usual; the others join its person.
            tx.lock([f"id:{cx.authority}:{cx.id}" for cx in message.ids])
            first = next((cx for cx in message.ids if tx.identity(cx.authority, cx.id)), message.ids[0])
            done = [self._register(tx, first, message.demographics)]
            others = [cx for cx in message.ids if cx.key != first.key]
            if others:
                enterprise = tx.identity(first.authority, first.id).enterprise
                done += [self._attach(tx, cx, enterprise, message.demographics, first) for cx in others]
                self._notify(tx, enterprise)
            return "; ".join(done)

    def _attach(self, tx: Tx, cx: Cx, enterprise: int, d: Demographics, first: Cx) -> str:
        keys = blocking.keys(d, self.s.blocking_keys)
        why = f"in one PID-3 with {first.id}"
        existing = tx.identity(cx.authority, cx.id)
        if existing is None:
            tx.add_identity(cx.authority, cx.id, enterprise, d, keys, None, why, "source")
            return f"added {cx} ({why})"
        tx.update_identity(existing.id, d, keys)
        if existing.enterprise == enterprise:
            return f"updated {cx}"
        tx.move_identity(existing.id, enterprise, None, why, "source")
        if tx.members(existing.enterprise):
            self._notify(tx, existing.enterprise)
        else:
            self._forward_merge(tx, existing.enterprise, enterprise, d)
        return f"moved {cx} ({why})"

    def _register(self, tx: Tx, cx: Cx, d: Demographics) -> str:
        keys = blocking.keys(d, self.s.blocking_keys)
        tx.lock(keys + [f"id:{cx.authority}:{cx.id}"])
        existing = tx.identity(cx.authority, cx.id)
        if existing is not None:
            tx.update_identity(existing.id, d, keys)
            if existing.demographics == d or existing.linked_by != "scorecard" or \
                    len(tx.members(existing.enterprise)) > 1:
                return f"updated {cx}"        # a person's link, or a standing link, is kept
        candidates = tx.candidates(keys, exclude=existing.id if existing else None)
        decisions = tx.decisions(existing.id) if existing else {}
        if existing is not None:     # a break keeps the pair's persons apart, not just the pair
            apart = tx.kept_apart(existing.id)
            candidates = [c for c in candidates if c.enterprise not in apart]
        occupied = tx.occupied(cx.authority, {c.enterprise for c in candidates},
                               exclude=existing.id if existing else None)
        verdict = decide(cx.authority, d, candidates, decisions, self.s.thresholds, self.model(), occupied)
        explanation = verdict.score.explain() if verdict.score else ""
        total = verdict.score.total if verdict.score else None
        if verdict.action == "link":
            if existing is None:
                tx.add_identity(cx.authority, cx.id, verdict.enterprise, d, keys, total, explanation, verdict.by)
            else:
                tx.move_identity(existing.id, verdict.enterprise, total, explanation, verdict.by)
                if not tx.members(existing.enterprise):   # its old person is empty: merge the ids
                    self._forward_merge(tx, existing.enterprise, verdict.enterprise, d)
            self._notify(tx, verdict.enterprise)
            log.info("linked", extra={"score": total})
            return f"linked {cx} ({explanation})"
        if existing is None:
            enterprise = self._new_person(tx, cx, d)
            identity = tx.add_identity(cx.authority, cx.id, enterprise, d, keys, None, explanation, "scorecard")
        else:
            identity = existing.id
        if verdict.action == "review":
            tx.close_reviews_between(identity, verdict.candidate, "superseded", "scorecard")
            tx.add_review(identity, verdict.candidate, total, explanation)
            log.info("review", extra={"score": total})
            return f"review {cx} ({explanation})"
        return f"new {cx}"

    def _merge(self, tx: Tx, message: messages.FeedMessage) -> str:
        surviving_cx = message.ids[0]
        done = []
        for old in message.subsumed:
            if old.authority != surviving_cx.authority:
                raise Hl7Error("MRG-1 and PID-3 must be in the same domain", code="204", location="MRG^1^1")
            tx.lock([f"id:{old.authority}:{old.id}", f"id:{surviving_cx.authority}:{surviving_cx.id}"])
            subsumed = tx.identity(old.authority, old.id)
            surviving = tx.identity(surviving_cx.authority, surviving_cx.id)
            if subsumed is None:
                if surviving is None:
                    self._register(tx, surviving_cx, message.demographics)
                done.append(f"merge of unknown {old} ignored")
                continue
            if surviving is None:      # the subsumed identity simply takes the surviving id
                tx.rename_identity(subsumed.id, surviving_cx.id)
                self._notify(tx, subsumed.enterprise)
                done.append(f"renamed {old} to {surviving_cx}")
                continue
            tx.merge_identity(subsumed.id, surviving.id)
            if subsumed.enterprise != surviving.enterprise:
                # Every id cross-referenced with the subsumed one now references the surviving one
                # (other domains' ids move to the surviving person, whose affinity id is kept).
                self._forward_merge(tx, subsumed.enterprise, surviving.enterprise, message.demographics)
            self._notify(tx, surviving.enterprise)
            done.append(f"merged {old} into {surviving_cx}")
        return "; ".join(done)

    # ------------------------------------------------------------ ITI-9

    def cross_references(self, cx: Cx) -> tuple[set[str], list[Cx] | None]:
        with self.store.transaction() as tx:
            known = self.known_domains(tx)
            if cx.authority == self.s.affinity_authority:
                row = tx.conn.execute("SELECT id FROM enterprise WHERE affinity_id = %s AND merged_into IS NULL",
                                      (str(Cx(cx.id, cx.authority)),)).fetchone()
                enterprise = row[0] if row else None
            else:
                identity = tx.identity(cx.authority, cx.id)
                enterprise = identity.enterprise if identity else None
            if enterprise is None:
                return known, None
            return known, self._ids_of(tx, enterprise)

    # ------------------------------------------------------------ dry run

    def dry_run(self, d: Demographics, domain: str = "", limit: int = 10) -> dict:
        """What the feed would decide for ``d`` (as an identity of ``domain``), and its best
        candidates with their scores and explanations; in a read-only transaction: registers nothing."""
        keys = blocking.keys(d, self.s.blocking_keys)
        with self.store.transaction() as tx:
            tx.conn.execute("SET TRANSACTION READ ONLY")
            candidates = tx.candidates(keys)
            model = self.model()
            verdict = decide(domain, d, candidates, {}, self.s.thresholds, model)
            scored = sorted(((compare(d, c.demographics, model), c) for c in candidates),
                            key=lambda sc: -sc[0].total)[:limit]
            found = []
            for score, c in scored:
                who = tx.identity_by_id(c.identity)
                band = "link" if score.total > self.s.thresholds.upper else \
                    "review" if score.total >= self.s.thresholds.lower else "different"
                found.append({"domain": who.domain, "pid": who.pid, "person": tx.affinity_id(c.enterprise),
                              "score": score.total, "band": band, "explanation": score.explain(),
                              "parts": score.parts, "demographics": who.demographics.as_dict()})
            return {"action": verdict.action, "demographics": d.as_dict(), "blocking_keys": keys,
                    "candidates": found}

    # ------------------------------------------------------------ review

    def link(self, item: int, who: str) -> str:
        """A person says: same patient. The identity's person joins the candidate's."""
        with self.store.transaction() as tx:
            row = tx.review_item(item, lock=True)
            if row is None:
                raise KeyError(item)
            a, b = tx.identity_by_id(row.identity), tx.identity_by_id(row.candidate)
            tx.remember(a.id, b.id, "link", who)
            tx.close_review(item, "linked", who)
            if a.enterprise != b.enterprise:
                gone, kept = tx.affinity_id(a.enterprise), tx.affinity_id(b.enterprise)
                tx.merge_enterprise(a.enterprise, b.enterprise)
                tx.conn.execute("UPDATE identity SET linked_by = %s, link_score = %s, link_explanation = %s "
                                "WHERE id = %s", (f"person:{who}", row.score, row.explanation, a.id))
                if self.s.registry_feed:
                    tx.enqueue(self.s.registry_feed, messages.merge_feed(kept, gone, b.demographics))
                self._notify(tx, b.enterprise)
            return f"linked {a.domain}:{a.pid} with {b.domain}:{b.pid}"

    def break_link(self, item: int, who: str) -> str:
        """A person says: different patients. Remembered; if they were linked, they are separated."""
        with self.store.transaction() as tx:
            row = tx.review_item(item, lock=True)
            if row is None:
                raise KeyError(item)
            a, b = tx.identity_by_id(row.identity), tx.identity_by_id(row.candidate)
            tx.remember(a.id, b.id, "break", who)
            tx.close_review(item, "broken", who)
            if a.enterprise == b.enterprise:
                enterprise = self._new_person(tx, Cx(a.pid, a.domain), a.demographics)
                tx.move_identity(a.id, enterprise, row.score, row.explanation, f"person:{who}")
                self._notify(tx, b.enterprise)
                self._notify(tx, enterprise)
            return f"kept {a.domain}:{a.pid} apart from {b.domain}:{b.pid}"

    def unlink(self, domain: str, pid: str, who: str) -> str:
        """A person says: this identity is not the person it is linked to (an auto-link was wrong).
        It becomes a person of its own; the break is remembered against every former companion."""
        with self.store.transaction() as tx:
            tx.lock([f"id:{domain}:{pid}"])
            me = tx.identity(domain, pid)
            if me is None:
                raise KeyError((domain, pid))
            others = [m for m in tx.members(me.enterprise) if m.id != me.id]
            if not others:
                return f"{domain}:{pid} is linked to nobody"
            for other in others:
                tx.remember(me.id, other.id, "break", who)
                tx.close_reviews_between(me.id, other.id, "broken", who)
            enterprise = self._new_person(tx, Cx(pid, domain), me.demographics)
            tx.move_identity(me.id, enterprise, None, f"unlinked by {who}", f"person:{who}")
            self._notify(tx, me.enterprise)
            self._notify(tx, enterprise)
            log.info("unlinked", extra={"domain": domain, "by": who})
            return f"unlinked {domain}:{pid} from {len(others)} identit{'y' if len(others) == 1 else 'ies'}"
