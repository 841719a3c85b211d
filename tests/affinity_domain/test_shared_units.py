"""Shared pure parts, without sockets: MLLP framing, MTOM, XML hardening, configuration."""
import pytest
from lxml import etree

from affinity_domain import config, mllp, mtom, uids, xmlsafe
from tests.xds import DOMAIN


def test_mllp_reader_drops_garbage_and_keeps_partial_frames():
    reader = mllp.FrameReader(max_bytes=100)
    assert reader.feed(b"junk\x0bMSH|1\x1c\x0djunk\x0bMSH|") == [b"MSH|1"]
    assert reader.pending
    assert reader.feed(b"2\x1c\x0d") == [b"MSH|2"]
    with pytest.raises(mllp.FrameTooLarge):
        reader.feed(b"\x0b" + b"x" * 200)


def test_mtom_round_trip_and_bad_references():
    root = b'<e xmlns:xop="http://www.w3.org/2004/08/xop/include"><d><xop:Include href="cid:doc1@x"/></d></e>'
    ctype, body = mtom.build(root, [("doc1@x", "text/plain", b"hello")])
    part, _, parts = mtom.split(body, ctype)
    el = etree.fromstring(part)
    mtom.inline_includes(el, parts)
    assert el.findtext("d") == "aGVsbG8="
    with pytest.raises(mtom.MtomError):
        mtom.inline_includes(etree.fromstring(root), {})
    with pytest.raises(mtom.MtomError):
        mtom.split(body[:-10], ctype)
    with pytest.raises(mtom.MtomError):
        mtom.split(body, ctype.replace('start="<', 'start="<nope'))


def test_xml_hardening():
    with pytest.raises(xmlsafe.UnsafeXml):
        xmlsafe.parse(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    with pytest.raises(xmlsafe.UnsafeXml):
        xmlsafe.parse('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x><x/>'.encode("utf-16"))
    with pytest.raises(xmlsafe.UnsafeXml):
        xmlsafe.parse(b"<x>" + b"a" * 100 + b"</x>", max_bytes=50)
    assert xmlsafe.parse(b"<x>ok</x>").text == "ok"


def test_config_environment_overrides(tmp_path):
    f = tmp_path / "xdsi.toml"
    f.write_text('[registry]\nport = 9000\n[consumer]\nlocal_pacs = "A@h:1"\n')
    cfg = config.load(f, environ={"XDSI_REGISTRY_PORT": "9100", "XDSI_CONSUMER_LOCAL_PACS": "B@h:2",
                                  "XDSI_DATABASE_URL": "postgresql://x/y", "XDSI_DATA_DIR": "/d"})
    assert cfg.section("registry")["port"] == 9100
    assert cfg.section("consumer")["local_pacs"] == "B@h:2"
    assert cfg.database_url == "postgresql://x/y" and str(cfg.data_dir) == "/d"
    assert cfg.domain["assigning_authority"] == DOMAIN


def test_hl7_reader_keeps_every_occurrence_with_field_n_at_index_n():
    from affinity_domain import hl7
    text = "MSH|^~\\&|A|B\rPID|||X1^^^&1.2&ISO~X2^^^&1.3&ISO\rNTE|1|first\rNTE|2|second\r"
    segments = hl7.read_segments(text)
    assert [s[2] for s in segments["NTE"]] == ["first", "second"]
    assert hl7.first_segment(text, "PID")[3].split("~") == ["X1^^^&1.2&ISO", "X2^^^&1.3&ISO"]
    assert hl7.first_segment(text, "MSH")[2] == "A" and hl7.first_segment(text, "MRG") is None


def test_hl7_escape_writes_every_encoding_character_as_its_sequence():
    from affinity_domain import hl7
    assert hl7.escape("a|b^c&d~e\\f") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"


def test_exceptions_share_the_root_and_keep_their_other_base():
    from affinity_domain import config, content, errors, hl7, mllp, part10, xmlsafe
    from affinity_domain.exceptions import XdsiError
    from imaging_source import indexer, publish, query
    for cls, base in ((mtom.MtomError, ValueError), (hl7.Hl7Error, ValueError), (xmlsafe.UnsafeXml, ValueError),
                      (part10.Unreadable, ValueError), (mllp.FrameTooLarge, ValueError),
                      (query.QueryError, ValueError), (content.StoreFull, OSError),
                      (indexer.JournalBusy, RuntimeError), (config.ConfigError, Exception),
                      (publish.Held, Exception), (errors.XdsError, Exception), (errors.XdsErrors, Exception)):
        assert issubclass(cls, XdsiError) and issubclass(cls, base), cls
    assert publish.Held("PIX down").retryable and content.StoreFull(28, "full").retryable
    assert hl7.Hl7Error("bad").permanent and not hl7.Hl7Error("bad").retryable
    busy, wrong = errors.XdsError(errors.REGISTRY_BUSY, "db"), errors.XdsError(errors.REGISTRY_METADATA_ERROR, "x")
    assert (busy.retryable, busy.permanent, wrong.retryable, wrong.permanent) == (True, False, False, True)


@pytest.mark.parametrize("value,uid,oid", [
    ("1.2.840.10008.5.1.4.1.1.2", True, True), ("2.25.329800735698586629295641978511506172918", True, True),
    ("0", True, False), ("1.0.2", True, True), ("3.1", True, False),     # an OID's root arc is 0, 1 or 2
    ("1.02.3", False, False), ("1..2", False, False), (".1.2", False, False), ("1.2.", False, False),
    ("1.2.3\n", False, False), ("1.2.3\0", False, False), (" 1.2", False, False), ("", False, False),
    ("../../../tmp/x", False, False), ("1.2^3", False, False), ("1." + "2" * 62, True, True),
    ("1." + "2" * 63, False, False), (None, False, False), (12, False, False)])
def test_one_uid_check_for_every_door(value, uid, oid):
    assert uids.is_uid(value) is uid and uids.is_oid(value) is oid
    assert (uids.uid_problem(value) is None) is uid
