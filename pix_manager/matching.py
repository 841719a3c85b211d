"""The linking decision for one source identity, pure: remembered human decisions first, then the
scorecard against each candidate enterprise, then the thresholds."""
from __future__ import annotations

from dataclasses import dataclass

from .demographics import Demographics
from .scorecard import DEFAULT_RULES, Rule, Score, compare


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
           rules: dict[str, Rule] = DEFAULT_RULES, occupied: set[int] = frozenset()) -> Verdict:
    """``decisions``: candidate identity -> (verdict "link"/"break", who); ``occupied``: enterprises
    that already hold another identity of this domain (one id per domain per person)."""
    for c in candidates:
        verdict, who = decisions.get(c.identity, ("", ""))
        if verdict == "link":
            return Verdict("link", c.enterprise, c.identity, compare(demographics, c.demographics, rules), by=who)
    broken = {c.enterprise for c in candidates if decisions.get(c.identity, ("",))[0] == "break"}
    best: tuple[Score, Candidate] | None = None
    for c in candidates:
        if c.domain == domain or c.enterprise in broken:
            continue
        score = compare(demographics, c.demographics, rules)
        if best is None or score.total > best[0].total:
            best = (score, c)
    if best is None or best[0].total < thresholds.lower:
        return Verdict("new", score=best[0] if best else None, candidate=best[1].identity if best else None)
    score, c = best
    if score.total > thresholds.upper and c.enterprise not in occupied:
        return Verdict("link", c.enterprise, c.identity, score)
    return Verdict("review", c.enterprise, c.identity, score)
