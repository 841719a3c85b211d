"""Structured logs: one JSON object per line, with whatever ``extra`` fields the caller gives.

No patient data in them: the audit trail (ITI-20) is where access to a patient's data is recorded, and plain
logs are read, kept and shipped with far less care. Log calls name no patient; as a net under them, fields
named for demographics are left out and patient ids in HL7 CX form (``id^^^&OID&ISO``) anywhere in a line,
an error text included, are masked."""
from __future__ import annotations

import json
import logging
import re
import sys
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
PHI_FIELDS = frozenset({"patient", "patient_id", "patients", "identity", "affinity", "local_patient",
                        "study_patient", "patient_name", "birth_date", "dob", "demographics",
                        "address", "phone"})
_CX = re.compile(r"[^\s|~^&'\"(),]*\^[^\s|~'\"(),]*\^[^\s|~'\"(),]*\^[^\s|~'\"(),]*&(?:amp;)?[0-9.]+&(?:amp;)?ISO")
MASK = "<patient>"


def scrub(text: str) -> str:
    """``text`` with every CX-form patient id masked."""
    return _CX.sub(MASK, text) if "^" in text else text


def _clean(value):
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in PHI_FIELDS}
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, actor: str = ""):
        super().__init__()
        self.actor = actor

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name,
                 "msg": scrub(record.getMessage())}
        if self.actor:
            entry["actor"] = self.actor
        entry.update({k: _clean(v) for k, v in vars(record).items() if k not in _STANDARD and k not in PHI_FIELDS})
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def setup(actor: str = "", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(actor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
