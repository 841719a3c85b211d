"""A source identity's demographics, read from an HL7 v2 PID segment and normalised for matching."""
from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import asdict, dataclass

from affinity_domain.hl7 import content


@dataclass(frozen=True)
class Demographics:
    family: str = ""
    given: str = ""
    birth_date: str = ""      # YYYY, YYYYMM or YYYYMMDD: the precision the source gave; "" unknown
    sex: str = ""             # M | F | O | U
    postal_code: str = ""
    city: str = ""
    street: str = ""
    phone: str = ""           # digits only
    national_id: str = ""     # a national or health-card number (PID-19, or an id in a national domain)

    def as_dict(self) -> dict:
        return asdict(self)


def _plain(text: str) -> str:
    """Upper case, accents and punctuation removed: ``Zoë O'Brien`` -> ``ZOE OBRIEN``."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^A-Z0-9 ]", "", text.upper()).strip()


# HL7 DT (YYYY[MM[DD]]) or TS/DTM (a date, then HH[MM[SS[.S[S[S[S]]]]]] and a +/-ZZZZ offset).
_DATE_TIME = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?([+-]\d{4})?$")


def parse_birth_date(text: str) -> str | None:
    """PID-7 as YYYY, YYYYMM or YYYYMMDD, kept at the precision given ("" for none); None when it is
    not a date (``19450493``): a typo the caller reports and treats as missing."""
    text = content(text.strip())
    if not text:
        return ""
    m = _DATE_TIME.match(text)
    if m is None or (m.group(4) and not m.group(3)):
        return None
    year, month, day = m.group(1), m.group(2) or "", m.group(3) or ""
    try:
        datetime.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    return year + month + day


def normalise(family: str = "", given: str = "", birth_date: str = "", sex: str = "", postal_code: str = "",
              city: str = "", street: str = "", phone: str = "", national_id: str = "") -> Demographics:
    return Demographics(
        family=_plain(family), given=_plain(given).split(" ")[0] if given else "",
        birth_date=parse_birth_date(birth_date.replace("-", "")) or "", sex=content(sex.strip()).upper()[:1],
        postal_code=re.sub(r"[^A-Z0-9]", "", postal_code.upper()), city=_plain(city), street=_plain(street),
        phone=re.sub(r"\D", "", phone)[-10:], national_id=re.sub(r"[^A-Z0-9]", "", national_id.upper()))


def from_pid_fields(fields: list[str]) -> Demographics:
    """From the PID segment's fields (``fields[n]`` is PID-n, components split by ``^``); HL7's null
    ``""`` is an empty value (it clears what an update replaces)."""
    def get(n: int, component: int = 1) -> str:
        if n >= len(fields):
            return ""
        value = fields[n].split("~")[0].split("^")
        return content(value[component - 1]) if component <= len(value) else ""

    return normalise(family=get(5, 1), given=get(5, 2), birth_date=get(7), sex=get(8), street=get(11, 1),
                     city=get(11, 3), postal_code=get(11, 5), phone=get(13, 1), national_id=get(19))
