"""HL7 v2 messages the consumer sends to the local side, pure: the order a PACS may need before an
outside study arrives (ORM^O01), and an outside report (ORU^R01)."""
from __future__ import annotations

import time
import uuid

from affinity_domain.hl7 import escape


def _msh(kind: str) -> str:
    return (f"MSH|^~\\&|XDSI_CONSUMER|XDSI|LOCALPACS|LOCAL|{time.strftime('%Y%m%d%H%M%S')}||{kind}|"
            f"C{uuid.uuid4().hex[:16]}|P|2.3.1")


def _pid(patient_id: str, authority: str, name: str) -> str:
    return f"PID|||{escape(patient_id)}^^^&{authority}&ISO||{escape(name)}"


def order(patient_id: str, authority: str, name: str, accession: str, study_uid: str, procedure: str = "") -> bytes:
    """ORM^O01 NW for an outside study, so that a PACS that needs an order accepts the images."""
    segs = [_msh("ORM^O01^ORM_O01"), _pid(patient_id, authority, name), f"ORC|NW|{escape(accession)}",
            f"OBR|1|{escape(accession)}|{escape(accession)}|{escape(procedure)}",
            f"ZDS|{escape(study_uid)}^XDSI^Application^DICOM"]      # IHE SWF: the Study Instance UID
    return ("\r".join(segs) + "\r").encode()


def report(patient_id: str, authority: str, name: str, accession: str, study_uid: str, text: str) -> bytes:
    """ORU^R01 carrying the report's text, one OBX per line."""
    segs = [_msh("ORU^R01^ORU_R01"), _pid(patient_id, authority, name),
            f"OBR|1|{escape(accession)}|{escape(accession)}|18748-4^Diagnostic imaging report^LN|||||||||||||||||||||F",
            f"ZDS|{escape(study_uid)}^XDSI^Application^DICOM"]
    for n, line in enumerate(text.splitlines() or [""], start=1):
        segs.append(f"OBX|{n}|TX|18748-4^Diagnostic imaging report^LN||{escape(line)}||||||F")
    return ("\r".join(segs) + "\r").encode()
