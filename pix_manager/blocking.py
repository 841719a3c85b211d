"""Blocking keys: a new identity is scored only against identities that share one of its keys, so
its cost follows its candidates, not the size of the index."""
from __future__ import annotations

import jellyfish

from .demographics import Demographics
from .linkage import precision_of

# Each key is selective on its own (a few candidates even in a large index), and together they
# survive any one attribute being wrong or missing: names (in either order), date, postal code, phone.
DEFAULT_KEYS = ["name_pair+birth_year", "family_phonetic+birth_date_sorted", "given_phonetic+birth_date_sorted",
                "birth_date+postal", "phone", "national_id", "family_phonetic+given_initial+postal",
                # Several typos at once: the date alone (a few dozen people share one even in a large
                # index), a name's sound at an address, names (either order) in a town, and the names'
                # first letters (a typo in the middle of a surname, a transposition) in a year or street.
                "birth_date", "family_phonetic+postal", "given_phonetic+postal", "name_pair+postal",
                "name_pair+city", "family_prefix+given_prefix+birth_year", "family_prefix+given_prefix+street_name"]


PARTS = ("family_phonetic", "given_phonetic", "name_pair", "given_initial", "family_prefix", "given_prefix",
         "birth_year", "birth_date", "birth_date_sorted", "sex", "postal", "city", "street_name", "phone",
         "national_id")


def check(names: list[str]) -> None:
    """Configuration: every key a ``+``-joined list of known parts."""
    for name in names:
        unknown = [p for p in name.split("+") if p not in PARTS]
        if unknown:
            raise ValueError(f"[pix] blocking_keys: {name!r} has unknown parts {unknown} (known: {', '.join(PARTS)})")


def keys(d: Demographics, names: list[str] = DEFAULT_KEYS) -> list[str]:
    family = jellyfish.metaphone(d.family.replace(" ", "")) if d.family else ""
    given = jellyfish.metaphone(d.given) if d.given else ""
    date = precision_of(d.birth_date)
    parts = {
        "family_phonetic": family,
        "given_phonetic": given,
        # Both names, in either order: a family and given name written in each other's place.
        "name_pair": "/".join(sorted([family, given])) if family and given else "",
        "given_initial": d.given[:1],
        "family_prefix": d.family[:2] if len(d.family) >= 2 else "",
        "given_prefix": d.given[:2] if len(d.given) >= 2 else "",
        "birth_year": date[:4],
        "birth_date": date if len(date) == 8 else "",
        # Swapped day and month land in the same block.
        "birth_date_sorted": date[:4] + "".join(sorted([date[4:6], date[6:8]])) if len(date) == 8 else "",
        "sex": d.sex,
        "postal": d.postal_code,
        "city": d.city,
        "street_name": " ".join(w for w in d.street.split() if not w.isdigit()),
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
