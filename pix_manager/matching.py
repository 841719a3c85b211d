"""The linking decision for one source identity, pure: remembered human decisions first, then the
Fellegi–Sunter score against each candidate enterprise, then the thresholds."""
from __future__ import annotations

from dataclasses import dataclass

from .demographics import Demographics
from .linkage import Model, Score, compare


@dataclass(frozen=True)
class Candidate:
    identity: int                 # source identity id
    enterprise: int
    domain: str
    demographics: Demographics


@dataclass(frozen=True)
class Verdict:
    action: str                   # "link" | "review" | "new"
    enterprise: int | None = None
    candidate: int | None = None  # the identity whose score decided
    score: Score | None = None
    by: str = "scorecard"         # or the person whose remembered decision applied


@dataclass(frozen=True)
class Thresholds:
    lower: float = 63.0           # below: a different patient
    upper: float = 70.0           # above: the same patient; between: a person decides


def decide(domain: str, demographics: Demographics, candidates: list[Candidate],
           decisions: dict[int, tuple[str, str]], thresholds: Thresholds = Thresholds(),
           model: Model | None = None, occupied: set[int] = frozenset()) -> Verdict:
    """``decisions``: candidate identity -> (verdict "link"/"break", who); ``occupied``: enterprises
    that already hold another identity of this domain (one id per domain per person)."""
    for c in candidates:
        verdict, who = decisions.get(c.identity, ("", ""))
        if verdict == "link":
            return Verdict("link", c.enterprise, c.identity, compare(demographics, c.demographics, model), by=who)
    broken = {c.enterprise for c in candidates if decisions.get(c.identity, ("",))[0] == "break"}
    scored = [(compare(demographics, c.demographics, model), c) for c in candidates
              if c.domain != domain and c.enterprise not in broken]
    # Two people: given name and birth date both disagree, whatever the household shares.
    scored = [(s, c) for s, c in scored if not s.hold.startswith("given name and")]
    free = max(((s, c) for s, c in scored if not s.hold), key=lambda p: p[0].total, default=None)
    if free and free[0].total > thresholds.upper and free[1].enterprise not in occupied:
        return Verdict("link", free[1].enterprise, free[1].identity, free[0])
    best = max(scored, key=lambda p: p[0].total, default=None)
    if best is None or best[0].total < thresholds.lower:
        return Verdict("new", score=best[0] if best else None, candidate=best[1].identity if best else None)
    return Verdict("review", best[1].enterprise, best[1].identity, best[0])
