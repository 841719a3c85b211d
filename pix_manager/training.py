"""Estimating the linker's parameters from the index itself, unsupervised (pure: identities in, model out).

u (how often two different people land on each level) from random pairs; m (how often one person does)
by expectation–maximisation over pairs that share a birth date, then over pairs that share both names,
each session leaving out the attributes it was blocked on (they agree by construction there); the prior
from the matches each session finds; name frequencies from the index for the term-frequency adjustment.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from .demographics import Demographics
from .linkage import FIELDS, LEVELS, PRIOR_M, PRIOR_U, TF_FIELDS, Model, levels, precision_of

MIN_IDENTITIES = 50          # fewer: the built-in priors (too few pairs to learn from)
MIN_PAIRS = 20             # fewer pairs in a session: it is skipped
PAIRS = 100_000              # pairs per estimate: enough for 4 significant levels, seconds of work
ITERATIONS = 40
PSEUDO = 1.0                 # pseudo-counts of the prior, so that an empty level never weighs infinity


def _matrix(records: list[Demographics], pairs: np.ndarray) -> np.ndarray:
    """Level index per pair and attribute; -1 missing (a reduced-precision date counts as missing here)."""
    out = np.full((len(pairs), len(FIELDS)), -1, dtype=np.int8)
    col = {f: i for i, f in enumerate(FIELDS)}
    for row, (i, j) in enumerate(pairs):
        for name, lv in levels(records[i], records[j]).items():
            if not isinstance(lv, str):
                out[row, col[name]] = lv
    return out


def _random_pairs(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    i = rng.integers(0, n, count)
    j = rng.integers(0, n - 1, count)
    return np.stack([i, j + (j >= i)], axis=1)


def _block_pairs(keys: list[str], count: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Pairs sharing a key (all of them, or ``count`` drawn evenly), and how many there are in all."""
    blocks = defaultdict(list)
    for i, k in enumerate(keys):
        if k:
            blocks[k].append(i)
    groups = [np.array(v) for v in blocks.values() if len(v) > 1]
    sizes = np.array([len(g) * (len(g) - 1) // 2 for g in groups], dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros((0, 2), dtype=np.int64), 0
    if total <= count:
        pairs = [(g[a], g[b]) for g in groups for a in range(len(g)) for b in range(a + 1, len(g))]
        return np.array(pairs), total
    chosen = rng.choice(len(groups), size=count, p=sizes / total)
    pairs = np.empty((count, 2), dtype=np.int64)
    for row, gi in enumerate(chosen):
        a, b = rng.choice(len(groups[gi]), 2, replace=False)
        pairs[row] = groups[gi][a], groups[gi][b]
    return pairs, total


def _frequencies(matrix: np.ndarray, prior: dict[str, list[float]], weights: np.ndarray | None = None) -> dict:
    out = {}
    for c, name in enumerate(FIELDS):
        w = np.ones(len(matrix)) if weights is None else weights
        present = matrix[:, c] >= 0
        counts = [float(w[present & (matrix[:, c] == lv)].sum()) for lv in range(len(LEVELS[name]))]
        total = sum(counts)
        out[name] = [(k + PSEUDO * p) / (total + PSEUDO) for k, p in zip(counts, prior[name])]
    return out


def _em(matrix: np.ndarray, u: dict, skip: set[str]) -> tuple[dict, float]:
    """m for every attribute not in ``skip``, and the share of matches among the pairs."""
    m = {k: list(v) for k, v in PRIOR_M.items()}
    lam = 0.1
    used = [(c, name) for c, name in enumerate(FIELDS) if name not in skip]
    for _ in range(ITERATIONS):
        logit = np.full(len(matrix), math.log(lam / (1 - lam)))
        for c, name in used:
            table = np.log(np.array(m[name]) / np.array(u[name]))
            lv = matrix[:, c]
            logit += np.where(lv >= 0, table[np.clip(lv, 0, None)], 0.0)
        post = 1 / (1 + np.exp(-np.clip(logit, -50, 50)))
        lam = float(np.clip(post.mean(), 1e-6, 1 - 1e-6))
        fitted = _frequencies(matrix, PRIOR_M, post)
        m.update({name: fitted[name] for _, name in used})
    return m, lam


def train(records: list[Demographics], label: str = "", seed: int = 1) -> Model:
    n = len(records)
    if n < MIN_IDENTITIES:
        return Model()
    rng = np.random.default_rng(seed)
    u = _frequencies(_matrix(records, _random_pairs(n, PAIRS, rng)), PRIOR_U)
    u_partial = _partial_u(records, rng)
    sessions = [  # (blocked attributes, key)
        ({"birth_date"}, [precision_of(r.birth_date) if len(precision_of(r.birth_date)) == 8 else ""
                          for r in records]),
        ({"family", "given"}, [f"{r.family}|{r.given}" if r.family and r.given else "" for r in records]),
    ]
    estimates: dict[str, list[list[float]]] = defaultdict(list)
    found = []
    for skip, keys in sessions:
        pairs, total = _block_pairs(keys, PAIRS, rng)
        if len(pairs) < MIN_PAIRS:
            continue
        m, lam = _em(_matrix(records, pairs), u, skip)
        for name in FIELDS:
            if name not in skip:
                estimates[name].append(m[name])
        found.append((skip, lam * total))
    m = {name: list(np.mean(estimates[name], axis=0)) if estimates[name] else list(PRIOR_M[name])
         for name in FIELDS}
    # Matches found in a session, divided by the chance a match agrees on what the session blocked on.
    matches = [count / math.prod(m[f][0] for f in skip) for skip, count in found]
    pairs_in_all = n * (n - 1) / 2
    prior = min(max(float(np.mean(matches)) / pairs_in_all, 1 / pairs_in_all), 0.5) if matches else Model().prior
    tf, floor = _name_frequencies(records)
    return Model(m=m, u=u, prior=prior, u_partial=u_partial, tf=tf, tf_floor=floor,
                 trained=label or f"{n} identities")


def _partial_u(records: list[Demographics], rng: np.random.Generator) -> dict[str, float]:
    """How often two random identities share a birth year, and a birth year and month."""
    dates = [precision_of(r.birth_date) for r in records]
    dates = [d for d in dates if d]
    out = dict(Model().u_partial)
    if len(dates) < MIN_IDENTITIES:
        return out
    pairs = _random_pairs(len(dates), PAIRS, rng)
    for name, width in (("month", 6), ("year", 4)):
        both = [(dates[i], dates[j]) for i, j in pairs if len(dates[i]) >= width and len(dates[j]) >= width]
        if both:
            same = sum(a[:width] == b[:width] for a, b in both)
            out[name] = (same + PSEUDO * out[name]) / (len(both) + PSEUDO)
    return out


def _name_frequencies(records: list[Demographics]) -> tuple[dict[str, dict[str, float]], float]:
    """Each name's share of the index; names seen once are left out (the floor stands for them)."""
    n = len(records)
    tf = {}
    for name in TF_FIELDS:
        counts = Counter(getattr(r, name) for r in records if getattr(r, name))
        tf[name] = {v: c / n for v, c in counts.items() if c > 1}
    return tf, 1 / n
