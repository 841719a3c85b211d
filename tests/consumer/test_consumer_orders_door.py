"""The consumer's order door (MLLP) within its bounds: a large order answered in time with the ACK
it always had, and its configured deadlines. A consumer alone: an order is answered once its fetch
is recorded, before any peer is asked."""
from __future__ import annotations

import pytest

from tests.hospital import HOSP_B, order
from tests.mllp_door import backlog, closed_by_peer, idle_connections, timed_send, trickle_until_closed, with_notes
from tests.services import free_port, launch
from tests.xds import ack_code


@pytest.fixture(scope="module")
def order_port(new_database, tmp_path_factory):
    mllp, http, dicom, nobody = free_port(), free_port(), free_port(), free_port()
    proc, _ = launch("consumer", tmp_path_factory.mktemp("consumer-orders"), new_database(), {
        "mllp_port": mllp, "http_port": http, "dicom_port": dicom, "pix": f"127.0.0.1:{nobody}",
        "local_pacs": f"LOCALPACS@127.0.0.1:{nobody}", "mllp_idle_seconds": 2, "mllp_message_seconds": 1,
        "mllp_max_connections": 8}, [mllp, http, dicom])
    yield ("127.0.0.1", mllp)
    proc.terminate()
    proc.wait(timeout=30)


def test_an_order_of_10000_notes_is_answered_in_well_under_a_second(order_port):
    assert ack_code(timed_send(order_port, order("P1", HOSP_B))[0]) == "AA"
    ack, seconds = timed_send(order_port, with_notes(order("P2", HOSP_B)))
    assert ack_code(ack) == "AA" and seconds < 0.5, seconds                # 3.9 s with hl7apy
    assert ack.startswith("MSH|^~\\&|XDSI_CONSUMER|XDSI|RIS|HOSPB|") and "|ACK^O01^ACK|" in ack


def test_an_order_that_is_not_an_order_still_gets_its_refusal(order_port):
    adt = order("P3", HOSP_B).replace(b"ORM^O01^ORM_O01", b"ADT^A01^ADT_A01")
    ack, _ = timed_send(order_port, with_notes(adt))
    assert ack_code(ack) == "AR" and "\rERR|" in ack and "200" in ack


def test_the_order_door_keeps_its_configured_bounds(order_port):
    with idle_connections(order_port, 40) as socks:
        ack, seconds = timed_send(order_port, order("P4", HOSP_B))
        closed = sum(closed_by_peer(s, 0.05) for s in socks)
    assert ack_code(ack) == "AA" and seconds < 1.0 and closed >= 32, (seconds, closed)
    seconds = trickle_until_closed(order_port, interval=0.2, give_up=6)
    assert seconds is not None and seconds < 4, seconds
    assert backlog(order_port[1]) >= 128
