"""Blocking keys: a new identity is scored only against identities that share one of its keys, so
its cost follows its candidates, not the size of the index."""
from __future__ import annotations

import jellyfish

from .demographics import Demographics

DEFAULT_KEYS = ["family_phonetic+given_phonetic+birth_year", "family_phonetic+birth_date_sorted", "given_phonetic+birth_date_sorted", "birth_date+sex+postal",
                "phone", "national_id", "family_phonetic+given_initial+postal"]


def keys(d: Demographics, names: list[str] = DEFAULT_KEYS) -> list[str]:
    parts = {
        "family_phonetic": jellyfish.metaphone(d.family.replace(" ", "")) if d.family else "",
        "given_phonetic": jellyfish.metaphone(d.given) if d.given else "",
        "given_initial": d.given[:1],
        "birth_year": d.birth_date[:4],
        "birth_date": d.birth_date,
        # Swapped day and month land in the same block.
        "birth_date_sorted": d.birth_date[:4] + "".join(sorted([d.birth_date[4:6], d.birth_date[6:8]])),
        "sex": d.sex,
        "postal": d.postal_code,
        "phone": d.phone,
        "national_id": d.national_id,
    }
    out = []
    for name in names:
        fields = name.split("+")
        values = [parts[f] for f in fields]
        if all(values):
            out.append(name + ":" + "|".join(values))
    return out
