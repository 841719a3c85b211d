"""The ITI-8 feed's MLLP door within its bounds: time in proportion to a message's size, a cap on
connections that a flood of idle ones cannot use to shut others out, idle and whole-message
deadlines, and a listen backlog of 128 or more."""
from __future__ import annotations

import pytest

from tests.mllp_door import backlog, closed_by_peer, idle_connections, timed_send, trickle_until_closed, with_notes
from tests.services import start_registry
from tests.xds import ack_code, adt, new_patient


@pytest.fixture(scope="module")
def bounded(new_database, tmp_path_factory):
    service = start_registry(new_database(), tmp_path_factory.mktemp("registry-bounded"), feed_max_connections=8,
                             feed_idle_seconds=2, feed_message_seconds=1)
    yield service
    service.stop()


def test_a_message_of_10000_notes_is_answered_in_well_under_a_second(registry):
    assert ack_code(timed_send(registry.feed, adt("A01", new_patient()))[0]) == "AA"
    ack, seconds = timed_send(registry.feed, with_notes(adt("A01", new_patient())))
    assert ack_code(ack) == "AA" and seconds < 0.5, seconds          # 3.8 s with hl7apy


def test_200_idle_connections_do_not_keep_a_message_waiting(registry):
    with idle_connections(registry.feed, 200):
        ack, seconds = timed_send(registry.feed, adt("A01", new_patient()))
    assert ack_code(ack) == "AA" and seconds < 1.0, seconds


def test_connections_past_the_cap_close_the_longest_idle_and_the_newest_is_served(bounded):
    with idle_connections(bounded.feed, 40) as socks:
        ack, seconds = timed_send(bounded.feed, adt("A01", new_patient()))
        closed = sum(closed_by_peer(s, 0.05) for s in socks)
    assert ack_code(ack) == "AA" and seconds < 1.0, seconds
    assert closed >= 32, closed                                           # 40 idle, at most 8 kept


def test_a_frame_trickled_a_byte_at_a_time_is_cut_off_at_the_message_deadline(bounded):
    seconds = trickle_until_closed(bounded.feed, interval=0.2, give_up=6)
    assert seconds is not None and seconds < 4, seconds                   # per-read timeout only: never


def test_an_idle_connection_is_closed_after_the_idle_timeout(bounded):
    with idle_connections(bounded.feed, 1) as [s]:
        assert closed_by_peer(s, 5)


def test_the_feed_listens_with_a_backlog_of_128_or_more(registry):
    assert backlog(registry.feed[1]) >= 128                               # 5 before
