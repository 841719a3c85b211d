"""The shared ITI-9 client: the QBP^Q23 it writes, the RSP^K23 answers it reads, and ``ask``
against a real PIX manager and against one that never answers."""
import socket
import time

import pytest

from affinity_domain import pix_query
from affinity_domain.hl7 import Cx
from tests.pix.pixmsg import HOSP_A, ack, adt, cx, new_id
from tests.services import start_pix
from tests.xds import DOMAIN


def test_the_query_names_the_sender_and_asks_for_the_domain():
    q = pix_query.query(Cx("L1", "1.2.3"), DOMAIN, "XDSI_CONSUMER", "C1").decode()
    msh, qpd, rcp = q.rstrip("\r").split("\r")
    assert msh.split("|")[2:5] == ["XDSI_CONSUMER", "XDSI", "XDSI_PIX"] and "|QBP^Q23^QBP_Q21|C1|P|2.5" in msh
    assert qpd == f"QPD|IHE PIX Query|C1|L1^^^&1.2.3&ISO|^^^&{DOMAIN}&ISO" and rcp == "RCP|I"
    assert pix_query.query(Cx("L1", "1.2.3"), DOMAIN, "XDSI_SOURCE").split(b"|")[2] == b"XDSI_SOURCE"


def test_answers():
    ok = (f"MSH|^~\\&|PIX|X|S|X|2024||RSP^K23^RSP_K23|1|P|2.5\rMSA|AA|C1\rQAK|C1|OK\rQPD|x\r"
          f"PID|||OTHER^^^&9.9&ISO~D77^^^&{DOMAIN}&ISO\r").encode()
    assert pix_query.read_answer(ok, DOMAIN) == pix_query.Answer(f"D77^^^&{DOMAIN}&ISO", "", True)
    nf = b"MSH|^~\\&|PIX|X|S|X|2024||RSP^K23|1|P|2.5\rMSA|AA|C1\rQAK|C1|NF\r"
    found = pix_query.read_answer(nf, DOMAIN)
    assert not found.patient_id and found.known and "NF" in found.reason
    unknown = b"MSH|^~\\&|PIX|X|S|X|2024||RSP^K23|1|P|2.5\rMSA|AE|C1\rERR||QPD^1^3|204^Unknown\rQAK|C1|AE\r"
    answer = pix_query.read_answer(unknown, DOMAIN)
    assert not answer.patient_id and not answer.known and "204" in answer.reason
    assert not pix_query.read_answer(b"MSH|^~\\&|\rMSA|AR|\r", DOMAIN).known      # not even a message type
    assert "no MSA" in pix_query.read_answer(b"MSH|^~\\&|P|X|S|X|2024||RSP^K23|1|P|2.5\r", DOMAIN).reason


@pytest.fixture(scope="module")
def pix(new_database, tmp_path_factory):
    service = start_pix(new_database(), tmp_path_factory.mktemp("pix-query"), registry_feed="", workers=1)
    yield service
    service.stop()


def test_ask_a_pix_manager(pix):
    local = new_id()
    assert ack(pix, adt("A01", cx(local, HOSP_A), family="Query", given="Client")) == "AA"
    answer = pix_query.ask(*pix.mllp, Cx(local, HOSP_A), DOMAIN, "XDSI_CONSUMER", timeout=10)
    assert answer.known and answer.patient_id.endswith(f"^^^&{DOMAIN}&ISO"), answer
    stranger = pix_query.ask(*pix.mllp, Cx(new_id(), HOSP_A), DOMAIN, "XDSI_SOURCE", timeout=10)
    assert not stranger.known and not stranger.patient_id and "AE" in stranger.reason


def test_ask_gives_up_on_a_silent_pix_manager_after_its_timeout():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        started = time.monotonic()
        with pytest.raises(OSError):
            pix_query.ask(*silent.getsockname(), Cx("L1", HOSP_A), DOMAIN, "XDSI_CONSUMER", timeout=0.5)
        assert time.monotonic() - started < 5
