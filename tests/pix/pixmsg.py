"""Test-side HL7 v2 for the PIX manager: ADT feeds and QBP^Q23 queries written as text."""
from __future__ import annotations

import time
import uuid

from tests.xds import mllp_send

HOSP_A = "1.3.6.1.4.1.21367.2005.13.20.3000"
HOSP_B = "1.3.6.1.4.1.21367.2005.13.20.2000"
DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"


def cx(pid: str, oid: str) -> str:
    return f"{pid}^^^&{oid}&ISO"


def new_id(prefix: str = "P") -> str:
    return prefix + uuid.uuid4().hex[:10].upper()


def adt(event: str, pid3: str, family="Moore", given="Chip", dob="19380224", sex="M",
        address="10 Pinetree^^Metropolis^IL^44130", phone="", mrg: str = "", facility="HOSP",
        version="2.3.1") -> bytes:
    structure = {"A40": "ADT_A39", "A08": "ADT_A01"}.get(event, "ADT_A01")
    now = time.strftime("%Y%m%d%H%M%S")
    segments = [f"MSH|^~\\&|ADT|{facility}|XDSI_PIX|XDSI|{now}||ADT^{event}^{structure}|"
                f"{uuid.uuid4().hex[:12]}|P|{version}",
                f"EVN|{event}|{now}",
                f"PID|||{pid3}||{family}^{given}||{dob}|{sex}|||{address}||{phone}"]
    segments.append(f"MRG|{mrg}" if mrg else "PV1||O")
    return ("\r".join(segments) + "\r").encode()


def qbp(pid3: str, domains: list[str] = ()) -> bytes:
    wanted = "~".join(f"^^^&{d}&ISO" for d in domains)
    return (f"MSH|^~\\&|CONSUMER|HOSP|XDSI_PIX|XDSI|{time.strftime('%Y%m%d%H%M%S')}||QBP^Q23^QBP_Q21|"
            f"{uuid.uuid4().hex[:12]}|P|2.5\rQPD|IHE PIX Query|{uuid.uuid4().hex[:8]}|{pid3}|{wanted}\r"
            f"RCP|I\r").encode()


def fields(message: str, segment: str) -> list[str]:
    return next(s for s in message.split("\r") if s.startswith(segment + "|")).split("|")


def ack(pix, message: bytes) -> str:
    reply = mllp_send(pix.mllp, message)
    return fields(reply, "MSA")[1]


def query(pix, pid3: str, domains: list[str] = ()) -> tuple[str, str, list[str], str]:
    """(MSA-1, QAK-2, PID-3 ids, the whole answer)."""
    reply = mllp_send(pix.mllp, qbp(pid3, domains))
    ids = []
    pid = [s for s in reply.split("\r") if s.startswith("PID|")]
    if pid:
        ids = pid[0].split("|")[3].split("~")
    return fields(reply, "MSA")[1], fields(reply, "QAK")[2], ids, reply
