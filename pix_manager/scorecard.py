"""The probabilistic scorecard: compare two identities attribute by attribute, explain every point.

Each attribute has an agreement weight and a disagreement penalty; "distance" comparisons earn part
of the weight when values are close but not equal; a value missing on either side earns nothing and
costs nothing. Thresholds, weights and floors come from configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jellyfish

from .demographics import Demographics

# Common given-name variants, both directions (a fact table, not a rule).
NICKNAMES = [
    ("ROBERT", "BOB"), ("ROBERT", "ROB"), ("ROBERT", "BOBBY"), ("WILLIAM", "BILL"), ("WILLIAM", "WILL"),
    ("WILLIAM", "LIAM"), ("ELIZABETH", "LIZ"), ("ELIZABETH", "BETH"), ("ELIZABETH", "BETTY"),
    ("JAMES", "JIM"), ("JAMES", "JIMMY"), ("KATHERINE", "KATE"), ("KATHERINE", "KATHY"),
    ("CATHERINE", "CATHY"), ("CATHERINE", "KATE"), ("MICHAEL", "MIKE"), ("THOMAS", "TOM"),
    ("RICHARD", "RICK"), ("RICHARD", "DICK"), ("MARGARET", "PEGGY"), ("MARGARET", "MAGGIE"),
    ("JOSEPH", "JOE"), ("JOSEPH", "JOEY"), ("DANIEL", "DAN"), ("DANIEL", "DANNY"), ("DAVID", "DAVE"),
    ("JENNIFER", "JENNY"), ("JENNIFER", "JEN"), ("PATRICIA", "PAT"), ("PATRICIA", "TRISH"),
    ("CHRISTOPHER", "CHRIS"), ("CHRISTINE", "CHRIS"), ("ANTHONY", "TONY"), ("EDWARD", "ED"),
    ("EDWARD", "TED"), ("ALEXANDER", "ALEX"), ("ALEXANDRA", "ALEX"), ("SUSAN", "SUE"),
    ("DEBORAH", "DEBBIE"), ("NICHOLAS", "NICK"), ("STEPHEN", "STEVE"), ("STEVEN", "STEVE"),
    ("SAMUEL", "SAM"), ("SAMANTHA", "SAM"), ("MATTHEW", "MATT"), ("ANDREW", "ANDY"), ("PETER", "PETE"),
    ("CHARLES", "CHARLIE"), ("CHARLES", "CHUCK"), ("VICTORIA", "VICKY"), ("BENJAMIN", "BEN"),
    ("JONATHAN", "JON"), ("JOHN", "JACK"), ("JOHN", "JOHNNY"), ("MARY", "MOLLY"), ("HENRY", "HANK"),
]
_NICK = {frozenset(p) for p in NICKNAMES}


@dataclass(frozen=True)
class Rule:
    weight: float
    penalty: float
    floor: float = 0.85        # below this similarity the values disagree
    comparison: str = ""       # a name in COMPARISONS; empty: the attribute's usual one


DEFAULT_RULES = {
    "family": Rule(28, 10),
    "given": Rule(16, 6),
    "birth_date": Rule(24, 14),
    "sex": Rule(6, 12),
    "postal_code": Rule(10, 2),
    "city": Rule(4, 1),
    "street": Rule(6, 1),
    "phone": Rule(10, 2),
    "national_id": Rule(30, 20),
}


@dataclass
class Score:
    total: float
    parts: dict[str, float] = field(default_factory=dict)   # attribute -> points earned (negative: penalty)

    def explain(self) -> str:
        return ", ".join(f"{k} {v:+.1f}" for k, v in self.parts.items()) + f" = {self.total:.1f}"


INCONCLUSIVE_BAND = 0.1


def _similar_name(a: str, b: str, floor: float, phonetic: bool) -> float | None:
    """1 for equal, partial credit for close spellings, phonetic twins and nicknames, None when the
    spellings are too far apart to agree and too close to disagree, 0 otherwise."""
    if a == b:
        return 1.0
    if frozenset((a, b)) in _NICK:
        return 0.8
    if a.replace(" ", "") == b.replace(" ", ""):
        return 0.95
    jw = jellyfish.jaro_winkler_similarity(a, b)
    if jw >= floor:
        return jw
    if phonetic and jellyfish.metaphone(a) == jellyfish.metaphone(b):
        return 0.7
    # Hyphenated or double family names: one part equal to the other name.
    if phonetic and (set(a.split()) & set(b.split())):
        return 0.75
    # Close, but not close enough to count: two typos look like this, as do two different names.
    if jw >= floor - INCONCLUSIVE_BAND:
        return None
    return 0.0


def _similar_date(a: str, b: str) -> float:
    """Typo- and transposition-aware: swapped day/month, one wrong digit, two adjacent digits swapped."""
    if a == b:
        return 1.0
    if len(a) != 8 or len(b) != 8:   # a reduced-precision date agrees in part on what both give
        return 0.5 if a[:min(len(a), len(b))] == b[:min(len(a), len(b))] else 0.0
    if a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
        return 0.8
    diffs = [i for i in range(8) if a[i] != b[i]]
    if len(diffs) == 1:
        return 0.7
    if len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]]:
        return 0.7
    return 0.0


def _similar_code(a: str, b: str) -> float:
    """Identifiers, phone numbers, postal codes: equal, or one typo / adjacent transposition."""
    if a == b:
        return 1.0
    if len(a) == len(b) and len(a) >= 4:
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return 0.5
        if len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]]:
            return 0.5
    return 0.0


# The distance functions a rule may name: (a, b, floor) -> similarity in [0, 1].
COMPARISONS = {
    "exact": lambda a, b, floor: 1.0 if a == b else 0.0,
    "name": lambda a, b, floor: _similar_name(a, b, floor, phonetic=True),       # + nicknames, metaphone
    "text": lambda a, b, floor: _similar_name(a, b, floor, phonetic=False),      # Jaro-Winkler above floor
    "jaro_winkler": lambda a, b, floor: (lambda jw: jw if jw >= floor else 0.0)(
        jellyfish.jaro_winkler_similarity(a, b)),
    "phonetic": lambda a, b, floor: 1.0 if a == b else 0.8 if jellyfish.metaphone(a) == jellyfish.metaphone(b)
    else 0.0,
    "date": lambda a, b, floor: _similar_date(a, b),
    "code": lambda a, b, floor: _similar_code(a, b),
}
USUAL = {"family": "name", "given": "name", "city": "text", "street": "text", "birth_date": "date",
         "phone": "code", "national_id": "code", "postal_code": "code", "sex": "exact"}


def compare(a: Demographics, b: Demographics, rules: dict[str, Rule] = DEFAULT_RULES) -> Score:
    parts: dict[str, float] = {}
    for name, rule in rules.items():
        x, y = getattr(a, name), getattr(b, name)
        if not x or not y or (name == "sex" and "U" in (x, y)):
            continue                                   # missing: neither rewarded nor punished
        sim = COMPARISONS[rule.comparison or USUAL[name]](x, y, rule.floor)
        if sim is None:                                # inconclusive: shown, worth nothing either way
            parts[name] = 0.0
        else:
            parts[name] = round(rule.weight * sim, 2) if sim > 0 else -rule.penalty
    # Given and family names written in each other's place.
    if "family" in rules and "given" in rules and parts.get("family", 0) <= 0 and parts.get("given", 0) <= 0 \
            and a.family and a.given and \
            a.family == b.given and a.given == b.family:
        parts["family"], parts["given"] = rules["family"].weight * 0.8, rules["given"].weight * 0.8
    return Score(round(sum(parts.values()), 2), parts)


def rules_from_config(weights: dict) -> dict[str, Rule]:
    """``[pix.weights] family = [24, 10]`` (weight, penalty[, floor[, comparison]]), or a table with
    those keys, overrides a default rule; a weight of 0 with penalty 0 leaves the attribute out."""
    rules = dict(DEFAULT_RULES)
    for name, value in (weights or {}).items():
        if name not in USUAL:
            raise ValueError(f"[pix] weights: no attribute {name!r} (known: {', '.join(USUAL)})")
        base = rules.get(name, Rule(0, 0))
        rule = Rule(*value) if isinstance(value, (list, tuple)) else Rule(
            float(value.get("weight", base.weight)), float(value.get("penalty", base.penalty)),
            float(value.get("floor", base.floor)), str(value.get("comparison", base.comparison)))
        if rule.comparison and rule.comparison not in COMPARISONS:
            raise ValueError(f"[pix] weights.{name}: no comparison {rule.comparison!r} "
                             f"(known: {', '.join(COMPARISONS)})")
        if rule.weight or rule.penalty:
            rules[name] = rule
        else:
            rules.pop(name, None)
    return rules
