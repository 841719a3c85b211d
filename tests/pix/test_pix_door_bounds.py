"""The PIX manager's MLLP door within its configured bounds: a large message in time, a cap that a
flood of idle connections cannot use to shut others out, the whole-message and idle deadlines, and
the listen backlog."""
from __future__ import annotations

import pytest

from tests.mllp_door import backlog, closed_by_peer, idle_connections, timed_send, trickle_until_closed, with_notes
from tests.pix.pixmsg import HOSP_A, adt, cx, new_id
from tests.services import start_pix
from tests.xds import ack_code


@pytest.fixture(scope="module")
def pix(new_database, tmp_path_factory):
    # One process, so that the cap below is the port's (each worker process has its own).
    service = start_pix(new_database(), tmp_path_factory.mktemp("pix-bounds"), registry_feed="", workers=1,
                        mllp_max_connections=8, mllp_idle_seconds=2, mllp_message_seconds=1)
    yield service
    service.stop()


def test_a_message_of_10000_notes_is_answered_in_well_under_a_second(pix):
    assert ack_code(timed_send(pix.mllp, adt("A01", cx(new_id(), HOSP_A)))[0]) == "AA"
    ack, seconds = timed_send(pix.mllp, with_notes(adt("A01", cx(new_id(), HOSP_A))))
    assert ack_code(ack) == "AA" and seconds < 0.5, seconds


def test_connections_past_the_cap_close_the_longest_idle_and_the_newest_is_served(pix):
    with idle_connections(pix.mllp, 40) as socks:
        ack, seconds = timed_send(pix.mllp, adt("A01", cx(new_id(), HOSP_A)))
        closed = sum(closed_by_peer(s, 0.05) for s in socks)
    assert ack_code(ack) == "AA" and seconds < 1.0 and closed >= 32, (seconds, closed)


def test_a_trickled_frame_and_an_idle_connection_are_cut_off(pix):
    seconds = trickle_until_closed(pix.mllp, interval=0.2, give_up=6)
    assert seconds is not None and seconds < 4, seconds
    with idle_connections(pix.mllp, 1) as [s]:
        assert closed_by_peer(s, 5)
    assert backlog(pix.mllp[1]) >= 128
