"""Each fuzz target (fuzz/) on its seeds and a few hundred mutations of them, and the inputs the
fuzzers found that crashed a parser once (each failed before its fix)."""
from __future__ import annotations

import importlib
import struct
import warnings

import pytest

from fuzz.harness import smoke

TARGETS = ["part10", "mtom", "ebrim", "pdu", "hl7"]


@pytest.mark.parametrize("name", TARGETS)
def test_target_survives_its_seeds_and_their_mutations(name):
    target = importlib.import_module(f"fuzz.{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeds = target.seeds()
        assert seeds and smoke(target.test_one_input, seeds, count=300) == len(seeds) + 300


def test_part10_meta_cut_inside_its_group_length_is_not_a_file_meta():
    from fuzz.part10 import test_one_input
    test_one_input(bytes(128) + b"DICM\x02\x00\x00\x00UL\x04\x00\x00")      # struct.error before


def test_part10_sequences_nested_past_the_bound_are_unreadable():
    from affinity_domain import part10
    from fuzz.part10 import _nested
    assert len(list(part10.top_level(_nested(part10.MAX_DEPTH - 1), 0))) == 1
    with pytest.raises(part10.Unreadable):
        list(part10.top_level(_nested(600), 0))                             # RecursionError before


def test_mtom_repeated_content_id_leaves_no_spool_file(tmp_path):
    import io
    from affinity_domain import mtom
    body = (b"--B\r\nContent-ID: <r>\r\n\r\n<x/>\r\n--B\r\nContent-ID: <a>\r\n\r\none\r\n"
            b"--B\r\nContent-ID: <a>\r\n\r\ntwo\r\n--B--\r\n")
    with pytest.raises(mtom.MtomError):
        mtom.read_multipart(io.BytesIO(body), 'multipart/related; boundary="B"; start="<r>"', tmp_path)
    assert list(tmp_path.iterdir()) == []                                   # one file left before


def test_c_store_response_with_a_uid_not_ascii_is_left_to_pynetdicom():
    from affinity_domain import dicom_net

    def element(tag, value):
        return struct.pack("<HHI", 0, tag, len(value)) + value
    command = (element(0x0002, b"1.2\x85\0") + element(0x0100, b"\x01\x80") + element(0x0120, b"\x07\x00")
               + element(0x0800, b"\x01\x01") + element(0x0900, b"\x00\x00"))
    assert dicom_net.c_store_response(command) is None                      # UnicodeDecodeError before


def test_an_ack_echoing_a_control_id_that_ends_in_0x1c_comes_back_whole():
    from affinity_domain import hl7, mllp
    raw = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01^ADT_A01|C1\x1c|P|2.5\rPID|||X1^^^&1.2&ISO\r"
    reply = hl7.ack(raw, "AA")
    assert mllp.FrameReader().feed(mllp.frame(reply)) == [reply]          # cut after "C1" before
    assert reply.endswith(b"\rMSA|AA|C1\\X1C\\\r")


def test_a_pix_answer_echoing_a_qpd_that_ends_in_0x1c_comes_back_whole():
    from affinity_domain import mllp
    from fuzz.hl7 import test_one_input
    raw = (b"MSH|^~\\&|A|B|C|D|2024||QBP^Q23^QBP_Q21|C1|P|2.5\r"
           b"QPD|IHE PIX Query|Q1|P1^^^&1.2.3&ISO|^^^&1.2.3.4&ISO\x1c\n")
    test_one_input(b"\x00" + mllp.frame(raw))                              # AssertionError before


def test_mtom_boundary_given_as_an_rfc_2231_parameter_is_read():
    import io
    from affinity_domain import mtom
    from fuzz.mtom import test_one_input
    body = b"--B\r\nContent-ID: <r>\r\n\r\n<x/>\r\n--B--\r\n"
    message = mtom.read_multipart(io.BytesIO(body), "multipart/related; boundary*=''B", "/nonexistent")
    assert message.root == b"<x/>"                                          # AttributeError before
    test_one_input(b"multipart/related; boundary*=utf-8''%E2%82%AC\n" + body)
