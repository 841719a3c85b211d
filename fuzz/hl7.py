"""The MLLP framer and the HL7 reader of every door: bytes cut into reads as a socket would (the
first byte sets the read size), framed by ``mllp.FrameReader``, and each message read as the
registry feed, the PIX manager (feed and query), the consumer's orders and the PIX query's answer
read it; then the ACK for it.

Documented errors: ``mllp.FrameTooLarge`` and ``hl7.Hl7Error``. Also a crash: an ACK that does not
come back whole through the framer (a peer's byte in it that ends the frame early), or whose MSA
does not answer the message's control id."""
from __future__ import annotations

from fuzz.harness import instrumented, main

with instrumented("affinity_domain.mllp", "affinity_domain.hl7", "affinity_domain.pix_query", "registry.feed",
                  "pix_manager.messages", "pix_manager.query", "consumer.orders"):
    from affinity_domain import hl7, mllp, pix_query
    from consumer import orders
    from pix_manager import messages, query
    from registry import feed

ALLOWED = (mllp.FrameTooLarge, hl7.Hl7Error)
DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"


def _read(raw: bytes) -> None:
    for read in (lambda: feed.read(raw, DOMAIN), lambda: messages.read_feed(raw, {"HOSP": "1.2.3"}),
                 lambda: orders.local_patient(raw, "1.2.3")):
        try:
            read()
        except hl7.Hl7Error:
            pass
    try:
        q = query.read(raw)
    except hl7.Hl7Error:
        q = None
    if q is not None:
        for known, ids in ((set(), None), ({q.person.authority}, None), ({q.person.authority, DOMAIN, *q.domains},
                                                                          [q.person, hl7.Cx("X9", DOMAIN)])):
            _frames(query.answer(q, known, ids))
    pix_query.read_answer(raw, DOMAIN)


def _frames(reply: bytes) -> None:
    if mllp.FrameReader().feed(mllp.frame(reply)) != [reply]:
        raise AssertionError(f"the reply does not frame: {reply!r}")


def _check_ack(raw: bytes, error: hl7.Hl7Error | None) -> None:
    reply = hl7.ack(raw, error.ack if error else "AA", error)
    _frames(reply)
    msa = hl7.first_segment(hl7.decode(reply), "MSA")
    if msa is None or msa[2:3] != [hl7.framable(hl7.msh_fields(raw)["control_id"])]:
        raise AssertionError(f"the ACK's MSA does not answer the message: {reply!r}")


def test_one_input(data: bytes) -> None:
    step = (data[0] if data else 0) + 1
    reader = mllp.FrameReader(max_bytes=8192)
    found = []
    for at in range(1, len(data), step):
        try:
            found += reader.feed(data[at:at + step])
        except mllp.FrameTooLarge:
            pass
    for raw in found or [data[1:]]:
        _read(raw)
        try:
            hl7.check_structure(raw)
            _check_ack(raw, None)
        except hl7.Hl7Error as e:
            _check_ack(raw, e)


def seeds() -> list[bytes]:
    """The tests' messages (tests/xds.py, tests/pix/pixmsg.py, tests/hospital.py), framed, with
    garbage between frames; an ACK and a PIX answer."""
    from tests.hospital import order
    from tests.pix.pixmsg import HOSP_A, adt as pix_adt, cx, qbp
    from tests.xds import adt
    messages_ = [adt("A01", f"X1^^^&{DOMAIN}&ISO"), adt("A40", f"X1^^^&{DOMAIN}&ISO", mrg=f"X2^^^&{DOMAIN}&ISO"),
                 pix_adt("A04", cx("P1", HOSP_A), version="2.5"), qbp(cx("P1", HOSP_A), [DOMAIN]),
                 order("P1", "1.2.3"), hl7.ack(adt("A01", "X"), "AE", hl7.Hl7Error("bad", "204", "PID^1^3")),
                 b"MSH|^~\\&|XDSI_PIX|XDSI|S|F|2024||RSP^K23^RSP_K23|1|P|2.5\rMSA|AA|Q1\rQAK|Q1|OK\r"
                 b"QPD|IHE PIX Query|Q1|P1^^^&1.2.3&ISO\rPID|||X9^^^&" + DOMAIN.encode() + b"&ISO||^^^^^^S\r"]
    out = []
    for i, m in enumerate(messages_):
        out.append(bytes([i * 37 % 256]) + mllp.frame(m))
    out.append(b"\x05garbage\x0b" + messages_[0] + b"\x1c\x0d junk \x0b" + messages_[2] + b"\x1c\x0d\x0b" +
               messages_[1][:30])
    return out


if __name__ == "__main__":
    main("hl7", test_one_input, seeds)
