"""The patient index: applies feed messages and review decisions to the store, using the pure
scorecard and matching; queues what the registry and subscribers must hear."""
from __future__ import annotations

import logging

from affinity_domain.hl7 import Cx, Hl7Error

from . import blocking, messages
from .demographics import Demographics
from .matching import decide
from .settings import PixSettings
from .store import Store, Tx

log = logging.getLogger("xdsi.pix")


class PatientIndex:
    def __init__(self, store: Store, settings: PixSettings):
        self.store, self.s = store, settings

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
        ids = [str(Cx(i.pid, i.domain)) for i in tx.members(enterprise)]
        ids.append(tx.affinity_id(enterprise))
        message = messages.update_notification(sorted(set(ids)))
        for destination in self.s.subscribers:
            tx.enqueue(destination, message)

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
            return "; ".join(self._register(tx, cx, message.demographics) for cx in message.ids)

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
        occupied = tx.occupied(cx.authority, {c.enterprise for c in candidates},
                               exclude=existing.id if existing else None)
        verdict = decide(cx.authority, d, candidates, decisions, self.s.thresholds, self.s.rules, occupied)
        explanation = verdict.score.explain() if verdict.score else ""
        total = verdict.score.total if verdict.score else None
        if verdict.action == "link":
            if existing is None:
                tx.add_identity(cx.authority, cx.id, verdict.enterprise, d, keys, total, explanation, verdict.by)
            else:
                tx.move_identity(existing.id, verdict.enterprise, total, explanation, verdict.by)
                if not tx.members(existing.enterprise):   # its old person is empty: merge the ids
                    gone, kept = tx.affinity_id(existing.enterprise), tx.affinity_id(verdict.enterprise)
                    tx.merge_enterprise(existing.enterprise, verdict.enterprise)
                    if self.s.registry_feed:
                        tx.enqueue(self.s.registry_feed, messages.merge_feed(kept, gone, d))
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
                remaining = [i for i in tx.members(subsumed.enterprise)]
                if not remaining:       # the subsumed person had nothing else: its affinity id merges too
                    gone, kept = tx.affinity_id(subsumed.enterprise), tx.affinity_id(surviving.enterprise)
                    tx.merge_enterprise(subsumed.enterprise, surviving.enterprise)
                    if self.s.registry_feed:
                        tx.enqueue(self.s.registry_feed, messages.merge_feed(kept, gone, message.demographics))
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
            ids = [Cx(i.pid, i.domain) for i in tx.members(enterprise)]
            affinity = Cx.parse(tx.affinity_id(enterprise))
            return known, ids + ([affinity] if affinity not in ids else [])

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
