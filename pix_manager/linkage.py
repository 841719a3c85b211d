"""The Fellegi–Sunter linker: compare two identities attribute by attribute, each comparison landing on
a level (exact, close, similar, typo, disagree; a missing value lands nowhere and counts 0); each level
weighs log2(m/u) bits, m and u estimated from the index (see ``training``), with a term-frequency
adjustment on exact names. The total, the prior odds plus every attribute's bits (the posterior odds
in bits), maps onto the configured scale as 63 + bits: 63 is even odds, each point doubles them, and
70 is 128:1 (a match probability of 0.992).
"""
from __future__ import annotations

import math
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

# Each attribute's levels, best first; the last is "disagree".
LEVELS = {
    "family": ("exact", "close", "similar", "disagree"),
    "given": ("exact", "close", "similar", "disagree"),
    "birth_date": ("exact", "typo", "disagree"),
    "sex": ("exact", "disagree"),
    "postal_code": ("exact", "typo", "disagree"),
    "city": ("exact", "close", "disagree"),
    "street": ("exact", "close", "disagree"),
    "phone": ("exact", "typo", "disagree"),
    "national_id": ("exact", "typo", "disagree"),
}
FIELDS = tuple(LEVELS)
TF_FIELDS = ("family", "given")
ADDRESS = ("postal_code", "city", "street")          # an exact match on a rare value counts more
# Roughly the share of people with a twin, or a parent or child of the same name, in their household:
# a disagreement true pairs show less often than this holds a link for review (see ``compare``).
RELATIVE_RATE = 0.03
# A birth date known to the year or month on one side: agreement at that precision, its own weight.
PARTIAL = ("month", "year")


def _one_edit(a: str, b: str) -> bool:
    """One character keyed wrong, or two adjacent characters swapped (same length)."""
    if len(a) != len(b):
        return False
    diffs = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diffs) == 1 or (len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]]
                               and a[diffs[1]] == b[diffs[0]])


def _name(a: str, b: str) -> int:
    if a == b:
        return 0
    if frozenset((a, b)) in _NICK or a.replace(" ", "") == b.replace(" ", ""):
        return 1
    jw = jellyfish.jaro_winkler_similarity(a, b)
    # One keystroke off in a name long enough that another real name is rarely one keystroke away.
    if jw >= 0.92 or min(len(a), len(b)) >= 5 and jellyfish.damerau_levenshtein_distance(a, b) == 1:
        return 1
    if jw >= 0.8 or jellyfish.metaphone(a) == jellyfish.metaphone(b) or set(a.split()) & set(b.split()):
        return 2
    return 3


def _text(a: str, b: str) -> int:
    return 0 if a == b else 1 if jellyfish.jaro_winkler_similarity(a, b) >= 0.88 else 2


def _code(a: str, b: str) -> int:
    return 0 if a == b else 1 if len(a) >= 4 and _one_edit(a, b) else 2


def precision_of(date: str) -> str:
    """The part of a birth date that is a possible date: YYYY, YYYYMM or YYYYMMDD ('' when it is none);
    day and month written in each other's place count as possible (the comparison knows that typo)."""
    if len(date) not in (4, 6, 8) or not date.isdigit():
        return ""
    month, day = int(date[4:6] or 1), int(date[6:8] or 1)
    if not (1 <= month <= 12 and 1 <= day <= 31 or 1 <= day <= 12 and 1 <= month <= 31):
        return ""
    return date


def _date(a: str, b: str) -> int | str:
    """At the precision both have. Full dates: exact, typo (one digit, adjacent digits swapped, day and
    month swapped), disagree; a shorter date: 'month' or 'year' when equal that far, else typo or disagree."""
    n = min(len(a), len(b))
    x, y = a[:n], b[:n]
    if x == y:
        return 0 if n == 8 else PARTIAL[0] if n == 6 else PARTIAL[1]
    if _one_edit(x, y) or (n == 8 and x[:4] == y[:4] and x[4:6] == y[6:8] and x[6:8] == y[4:6]):
        return 1
    return 2


def level(name: str, a: str, b: str) -> int | str | None:
    """The level index of one attribute (a PARTIAL name for a date agreeing at reduced precision),
    None when either side is missing."""
    if name == "birth_date":
        a, b = precision_of(a), precision_of(b)
    if not a or not b or (name == "sex" and "U" in (a, b)):
        return None
    if name in ("family", "given"):
        return _name(a, b)
    if name in ("city", "street"):
        return _text(a, b)
    if name == "birth_date":
        return _date(a, b)
    if name == "sex":
        return 0 if a == b else 1
    return _code(a, b)


def levels(a: Demographics, b: Demographics) -> dict[str, int | str]:
    out = {}
    for name in FIELDS:
        lv = level(name, getattr(a, name), getattr(b, name))
        if lv is not None:
            out[name] = lv
    # Given and family names written in each other's place: both exact.
    if out.get("family", 0) and out.get("given", 0) and a.family == b.given and a.given == b.family:
        out["family"] = out["given"] = 0
    return out


# Sane priors for an index never trained: m (true pairs) and u (random pairs) per level.
PRIOR_M = {
    "family": [0.88, 0.06, 0.03, 0.03], "given": [0.895, 0.08, 0.015, 0.01], "birth_date": [0.93, 0.05, 0.02],
    "sex": [0.98, 0.02], "postal_code": [0.75, 0.03, 0.22], "city": [0.8, 0.05, 0.15],
    "street": [0.65, 0.15, 0.2], "phone": [0.75, 0.03, 0.22], "national_id": [0.95, 0.03, 0.02],
}
PRIOR_U = {
    "family": [0.005, 0.005, 0.02, 0.97], "given": [0.02, 0.01, 0.03, 0.94], "birth_date": [5e-5, 1e-3, 0.999],
    "sex": [0.5, 0.5], "postal_code": [1e-3, 5e-3, 0.994], "city": [0.1, 0.02, 0.88],
    "street": [1e-3, 5e-3, 0.994], "phone": [1e-4, 1e-3, 0.9989], "national_id": [1e-6, 1e-5, 0.99999],
}


@dataclass
class Model:
    """What scoring needs: m and u per attribute and level, the prior probability that two identities
    are one person (lambda), partial-date u, and name frequencies (share of the index per value)."""
    m: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in PRIOR_M.items()})
    u: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in PRIOR_U.items()})
    prior: float = 1e-4
    u_partial: dict[str, float] = field(default_factory=lambda: {"month": 1 / 1000, "year": 1 / 80})
    tf: dict[str, dict[str, float]] = field(default_factory=dict)
    tf_floor: float = 0.0                 # the share of a value never seen: one record in the training index
    trained: str = ""                     # when and on how many identities; empty: the priors

    def __post_init__(self):
        self._weights = {k: [math.log2(m / u) for m, u in zip(self.m[k], self.u[k])] for k in FIELDS}
        exact_m = self.m["birth_date"][0] + self.m["birth_date"][1] / 2
        self._partial = {k: math.log2(exact_m / u) for k, u in self.u_partial.items()}
        self._prior = math.log2(self.prior / (1 - self.prior))

    def as_dict(self) -> dict:
        return {"m": self.m, "u": self.u, "prior": self.prior, "u_partial": self.u_partial, "tf": self.tf,
                "tf_floor": self.tf_floor, "trained": self.trained}

    @classmethod
    def from_dict(cls, d: dict) -> "Model":
        return cls(**{k: d[k] for k in ("m", "u", "prior", "u_partial", "tf", "tf_floor", "trained") if k in d})

    def level_weights(self, name: str) -> list[float]:
        return list(self._weights[name])

    def weight(self, name: str, lv: int | str, value: str = "") -> float:
        if isinstance(lv, str):
            return self._partial[lv]
        if lv == 0 and name in TF_FIELDS and self.tf_floor:
            share = self.tf.get(name, {}).get(value, self.tf_floor)
            return math.log2(self.m[name][0] / max(share, self.tf_floor))
        return self._weights[name][lv]


@dataclass
class Score:
    total: float                                          # on the configured scale: 63 + bits
    parts: dict[str, float] = field(default_factory=dict)  # attribute -> bits earned (negative: against)
    levels: dict[str, str] = field(default_factory=dict)   # attribute -> the level it landed on
    hold: str = ""                                          # why this pair may not link by itself

    def explain(self) -> str:
        text = ", ".join(f"{k} {self.levels[k] + ' ' if k in self.levels else ''}{v:+.1f}"
                         for k, v in self.parts.items()) + f" = {self.total:.1f}"
        return text + (f" ({self.hold})" if self.hold else "")


def _relative(model: Model, name: str, lv) -> bool:
    """A level below "close" (or "typo") that true pairs land on, or below, less often than relatives exist."""
    return isinstance(lv, int) and lv >= 2 and sum(model.m[name][lv:]) < RELATIVE_RATE


def compare(a: Demographics, b: Demographics, model: Model | None = None) -> Score:
    model = model or DEFAULT_MODEL
    parts: dict[str, float] = {}
    named: dict[str, str] = {}
    found = levels(a, b)
    for name, lv in found.items():
        parts[name] = round(model.weight(name, lv, getattr(a, name, "")), 1)
        named[name] = lv if isinstance(lv, str) else LEVELS[name][lv]
    # A move changes street, postal code and town at once: their disagreements are one fact, counted once.
    moved = sorted((parts[k], k) for k in ADDRESS if named.get(k) == "disagree")
    for _, name in moved[1:]:
        parts[name] = 0.0
    parts["prior"] = round(model._prior, 1)
    total = round(EVEN_ODDS + sum(parts.values()), 1)
    # Relatives: a shared household's weights cannot tell twins (same date, another given name) or
    # Jr/Sr (same names, another date) from one person, unless true pairs in this index often carry
    # such a difference. Both differing is two people, whatever the parameters say.
    given, date = (_relative(model, name, found.get(name)) for name in ("given", "birth_date"))
    if found.get("given", 0) >= 2 and found.get("birth_date", 0) == 2:
        given = date = True
    hold = "given name and birth date differ" if given and date else \
        "given name differs" if given else "birth date differs" if date else ""
    return Score(total, parts, named, hold)


DEFAULT_MODEL = Model()
EVEN_ODDS = 63.0            # the score of a pair as likely one person as two
