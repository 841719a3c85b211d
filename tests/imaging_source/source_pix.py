"""The PIX manager for the imaging source's tests: the real one as a process, or a minimal
stand-in (ITI-8 links the identifiers of one PID-3; ITI-9 answers from those links)."""
from __future__ import annotations

import threading
import time
import uuid

from affinity_domain import mllp
from affinity_domain.hl7 import Cx, decode
from tests.services import DOMAIN, free_port, launch
from tests.xds import ack_code, adt, mllp_send


def _segments(raw: bytes) -> dict[str, list[str]]:
    out = {}
    for seg in decode(raw).split("\r"):
        parts = seg.split("|")
        out.setdefault(parts[0], parts)
    return out


def _rsp(msh: list[str], qpd: list[str], code: str, hit: str = "", query_status: str = "OK",
         err: str = "") -> bytes:
    control = msh[9] if len(msh) > 9 else ""
    lines = [f"MSH|^~\\&|PIX|XDSI|{msh[2]}|{msh[3]}|{time.strftime('%Y%m%d%H%M%S')}||RSP^K23^RSP_K23|"
             f"R{uuid.uuid4().hex[:10]}|P|2.5", f"MSA|{code}|{control}"]
    if err:
        lines.append(err)
    lines += [f"QAK|{qpd[2] if len(qpd) > 2 else ''}|{query_status}", "|".join(qpd)]
    if hit:
        lines.append(f"PID|||{hit}||~^^^^^^S")
    return ("\r".join(lines) + "\r").encode()


class StandIn:
    kind = "stand-in"

    def __init__(self):
        self.links: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.lock = threading.Lock()
        self.port = free_port()
        self.server = mllp.MllpServer(("127.0.0.1", self.port), self.handle, lambda text: b"MSH|^~\\&|\rMSA|AR|\r")

    @classmethod
    def start(cls) -> "StandIn":
        s = cls()
        s.server.start()
        return s

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, raw: bytes) -> bytes:
        seg = _segments(raw)
        msh = seg["MSH"]
        if msh[8].startswith("ADT"):
            ids = {(c.id, c.authority) for c in map(Cx.parse, seg["PID"][3].split("~"))}
            with self.lock:
                group = set(ids)
                for i in ids:
                    group |= self.links.get(i, set())
                for i in group:
                    self.links[i] = group
            return f"MSH|^~\\&|PIX|XDSI|||{time.strftime('%Y%m%d%H%M%S')}||ACK|A1|P|2.3.1\rMSA|AA|{msh[9]}\r".encode()
        qpd = seg["QPD"]
        who, wanted = Cx.parse(qpd[3]), Cx.parse(qpd[4]).authority if len(qpd) > 4 else ""
        with self.lock:
            group = self.links.get((who.id, who.authority))
        if group is None:
            return _rsp(msh, qpd, "AE", query_status="AE", err="ERR||QPD^1^3^1^1|204^Unknown Key Identifier^HL70357|E")
        hits = [f"{i}^^^&{a}&ISO" for i, a in sorted(group) if a == wanted and (i, a) != (who.id, who.authority)]
        if not hits:
            return _rsp(msh, qpd, "AA", query_status="NF")
        return _rsp(msh, qpd, "AA", "~".join(hits))

    def register(self, local_id: str, local_issuer: str) -> str:
        """Link ``local_id`` to a new affinity-domain id; return that id as CX."""
        domain_id = f"D{uuid.uuid4().hex[:10]}"
        # mllp.send: over TLS when this process is a TLS node (the stand-in then serves TLS too)
        ack = mllp.send("127.0.0.1", self.port, adt("A01", f"{local_id}^^^&{local_issuer}&ISO~"
                                                           f"{domain_id}^^^&{DOMAIN}&ISO")).decode()
        assert ack_code(ack) == "AA", ack
        return f"{domain_id}^^^&{DOMAIN}&ISO"


class RealPix:
    """``xdsi serve pix``: fed an ITI-8 identity, asked by ITI-9 for the id it assigned."""
    kind = "real"

    def __init__(self, proc, port):
        self.process, self.port = proc, port

    @classmethod
    def start(cls, database_url, tmp) -> "RealPix":
        port, http = free_port(), free_port()
        proc, _ = launch("pix", tmp, database_url, {"port": port, "http_port": http, "registry_feed": ""}, [port])
        return cls(proc, port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def register(self, local_id: str, local_issuer: str) -> str:
        # Demographics of their own, so that the scorecard does not link test patients together.
        family, day = uuid.uuid4().hex[:8].upper(), 10 + uuid.uuid4().int % 18
        message = adt("A01", f"{local_id}^^^&{local_issuer}&ISO").replace(
            b"Doe^Jane||19700101", f"{family}^Kim||1960{1 + uuid.uuid4().int % 12:02d}{day}".encode())
        ack = mllp_send(("127.0.0.1", self.port), message)
        assert ack_code(ack) == "AA", ack
        from affinity_domain import pix_query
        answer = pix_query.ask("127.0.0.1", self.port, Cx(local_id, local_issuer), DOMAIN, "XDSI_SOURCE")
        assert answer.patient_id, answer.reason
        return answer.patient_id


def feed_registry(registry, patient_id: str) -> None:
    ack = mllp.send(*registry.feed, adt("A01", patient_id)).decode()
    assert ack_code(ack) == "AA", ack
