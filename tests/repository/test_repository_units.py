"""The sans-IO core and the streaming codec, without services: hash/size checks, metadata
stamping, retrieve planning, multipart reading and writing, the file content store."""
from __future__ import annotations

import hashlib
import io
import os

import pytest
from lxml import etree

from affinity_domain import ns
from affinity_domain import mtom
from affinity_domain import ebrim as rim
from repository import provide, retrieve
from affinity_domain.content import FileStore
from affinity_domain.errors import REPOSITORY_OUT_OF_RESOURCES
from repository.provide import Content

REPO = "1.3.6.1.4.1.21367.13.40.301"


def submit(*entries: str) -> etree._Element:
    return etree.fromstring(
        f'<lcm:SubmitObjectsRequest xmlns:lcm="{ns.LCM}" xmlns:rim="{ns.RIM}"><rim:RegistryObjectList>'
        + "".join(entries) + "</rim:RegistryObjectList></lcm:SubmitObjectsRequest>")


def entry(eid: str, uid: str, slots: str = "") -> str:
    return (f'<rim:ExtrinsicObject id="{eid}" mimeType="text/plain">{slots}<rim:Name/>'
            f'<rim:ExternalIdentifier id="{eid}u" registryObject="{eid}" identificationScheme="{rim.DE_UNIQUE_ID}" '
            f'value="{uid}"/></rim:ExtrinsicObject>')


def slot(name, value):
    return f'<rim:Slot name="{name}"><rim:ValueList><rim:Value>{value}</rim:Value></rim:ValueList></rim:Slot>'


def content(data: bytes) -> Content:
    return Content(len(data), hashlib.sha1(data).hexdigest())


def test_stamps_hash_size_and_repository_id_after_existing_slots():
    s = submit(entry("D1", "1.1", slot("creationTime", "2024")))
    errors, docs = provide.check_and_stamp(s, {"D1": content(b"abc")}, REPO)
    assert not errors and [d.unique_id for d in docs] == ["1.1"]
    e = s.find(f".//{{{ns.RIM}}}ExtrinsicObject")
    assert [c.get("name") for c in e if c.tag == rim.q(ns.RIM, "Slot")] == \
        ["creationTime", "hash", "size", "repositoryUniqueId"]
    assert provide.slot_values(e, "hash") == [hashlib.sha1(b"abc").hexdigest()]
    assert provide.slot_values(e, "size") == ["3"]
    assert e[-1].tag == rim.q(ns.RIM, "ExternalIdentifier")   # rim.xsd order kept


def test_hash_is_compared_case_insensitively_and_wrong_values_are_reported():
    h = hashlib.sha1(b"abc").hexdigest()
    ok = submit(entry("D1", "1.1", slot("hash", h.upper()) + slot("size", "3")))
    assert provide.check_and_stamp(ok, {"D1": content(b"abc")}, REPO)[0] == []
    bad = submit(entry("D1", "1.1", slot("hash", "0" * 40) + slot("size", "4")))
    errors, docs = provide.check_and_stamp(bad, {"D1": content(b"abc")}, REPO)
    assert [e.code for e in errors] == ["XDSRepositoryMetadataError"] * 2 and docs == []


def test_missing_documents_metadata_and_unusable_content():
    s = submit(entry("D1", "1.1"), entry("D2", "1.2"))
    errors, _ = provide.check_and_stamp(s, {"D1": content(b"x"), "Stray": content(b"y")}, REPO)
    assert sorted(e.code for e in errors) == ["XDSMissingDocument", "XDSMissingDocumentMetadata"]
    errors, _ = provide.check_and_stamp(submit(entry("D1", "1.1")),
                                        {"D1": Content(error="disk full", error_code=REPOSITORY_OUT_OF_RESOURCES)},
                                        REPO)
    assert [e.code for e in errors] == ["XDSRepositoryOutOfResources"]


def test_retrieve_plan_partial_unknown_repository_and_duplicates():
    reqs = [retrieve.DocumentRequest("urn:oid:1.2", REPO, "a"), retrieve.DocumentRequest("", REPO, "missing"),
            retrieve.DocumentRequest("", "9.9", "a"), retrieve.DocumentRequest("", REPO, "a")]
    errors, served = retrieve.plan(reqs, REPO, {"a": "application/dicom"})
    assert [e.code for e in errors] == ["XDSDocumentUniqueIdError", "XDSUnknownRepositoryId"]
    assert [(s.request.document_unique_id, s.mime_type) for s in served] == [("a", "application/dicom")]
    el = retrieve.response(errors, served)
    rr = el.find(rim.q(ns.RS, "RegistryResponse"))
    assert rr.get("status").endswith("PartialSuccess")
    assert el.findtext(f"{{{provide.XDSB}}}DocumentResponse/{{{provide.XDSB}}}HomeCommunityId") == "urn:oid:1.2"
    errors, served = retrieve.plan(reqs[1:2], REPO, {})
    assert retrieve.response(errors, served)[0].get("status").endswith(":Failure")


def test_streaming_reader_spools_hashes_and_handles_lf_bodies(tmp_path):
    data = os.urandom(2 * mtom.CHUNK + 123)
    body = mtom.StreamedBody(b"<root/>", [mtom.OutPart("a@x", "application/octet-stream", data=data),
                                          mtom.OutPart("b@x", "text/plain", data=b"")])
    raw = b"".join(body)
    assert len(raw) == body.length
    m = mtom.read_multipart(io.BytesIO(raw), body.content_type, tmp_path, len(raw))
    assert m.root == b"<root/>"
    assert (m.attachments["a@x"].sha1 == hashlib.sha1(data).hexdigest()
            and m.attachments["a@x"].path.read_bytes() == data)
    assert m.attachments["b@x"].size == 0
    m.discard()
    lf = (b'--B\nContent-Type: application/xop+xml\nContent-ID: <r>\n\n<e/>\n--B\n'
          b'Content-ID: <p>\n\nline1\nline2\n--B--\n')
    m = mtom.read_multipart(io.BytesIO(lf), 'multipart/related; boundary="B"; start="<r>"', tmp_path)
    assert m.root == b"<e/>" and m.attachments["p"].path.read_bytes() == b"line1\nline2"
    m.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", ["truncated", "no close", "start missing", "base64 part"])
def test_streaming_reader_rejects_broken_bodies_and_leaves_no_files(tmp_path, cut):
    body = mtom.StreamedBody(b"<root/>", [mtom.OutPart("a@x", "application/octet-stream", data=b"z" * 5000)])
    raw, ctype = b"".join(body), body.content_type
    if cut == "truncated":
        raw = raw[:3000]
    elif cut == "no close":
        raw = raw[:raw.rindex(b"--")]
    elif cut == "start missing":
        ctype = ctype.replace('start="<', 'start="<nope')
    else:
        raw = raw.replace(b"Content-Transfer-Encoding: binary\r\nContent-ID: <a@x>",
                          b"Content-Transfer-Encoding: base64\r\nContent-ID: <a@x>")
    with pytest.raises(mtom.MtomError):
        mtom.read_multipart(io.BytesIO(raw), ctype, tmp_path, len(raw))
    assert list(tmp_path.iterdir()) == []


def test_streaming_reader_holds_parts_in_memory_up_to_its_budget_then_spools(tmp_path):
    small, large, last = os.urandom(3000), os.urandom(2 * mtom.CHUNK + 7), os.urandom(100)
    body = mtom.StreamedBody(b"<root/>", [mtom.OutPart("a@x", "application/dicom", data=small),
                                          mtom.OutPart("b@x", "application/dicom", data=large),
                                          mtom.OutPart("c@x", "application/dicom", data=last)])
    raw = b"".join(body)
    m = mtom.read_multipart(io.BytesIO(raw), body.content_type, tmp_path, len(raw), memory_budget=mtom.CHUNK)
    a, b, c = (m.attachments[k] for k in ("a@x", "b@x", "c@x"))
    assert a.path is None and a.data == small and a.read() == small
    # The large part outgrew what was left of the budget: it spilled to a file, whole and hashed.
    assert b.data is None and b.path.read_bytes() == large and b.read() == large
    assert (b.size, b.sha1) == (len(large), hashlib.sha1(large).hexdigest())
    assert c.path is None and (c.data, c.sha1) == (last, hashlib.sha1(last).hexdigest())
    assert list(tmp_path.iterdir()) == [b.path]
    m.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(mtom.MtomError):        # a body cut inside a spilled part leaves no file
        mtom.read_multipart(io.BytesIO(raw[:len(raw) // 2]), body.content_type, tmp_path, len(raw) // 2,
                            memory_budget=mtom.CHUNK)
    assert list(tmp_path.iterdir()) == []


def test_a_new_file_store_has_one_level_made_in_advance(tmp_path):
    store = FileStore(tmp_path / "s")
    assert store.levels == 1 and (tmp_path / "s" / "layout").exists()
    assert len([d for d in (tmp_path / "s").iterdir() if len(d.name) == 2]) == 256
    sha1, _ = store.put_bytes(b"one level")
    assert store.path(sha1) == tmp_path / "s" / sha1[:2] / sha1 and store.path(sha1).read_bytes() == b"one level"
    assert FileStore(tmp_path / "s").levels == 1 and list(FileStore(tmp_path / "s").keys()) == [sha1]


def _levels_seen(root) -> int:
    return FileStore(root).levels


def test_processes_opening_a_new_store_at_once_agree_on_its_layout(tmp_path):
    """The repository's worker processes each open the store as they start."""
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(8) as pool:
        for n in range(5):
            assert set(pool.map(_levels_seen, [tmp_path / f"s{n}"] * 16)) == {1}


def test_a_file_store_made_with_two_levels_keeps_them(tmp_path):
    old = hashlib.sha1(b"stored before").hexdigest()
    (tmp_path / "s" / old[:2] / old[2:4]).mkdir(parents=True)
    (tmp_path / "s" / old[:2] / old[2:4] / old).write_bytes(b"stored before")
    store = FileStore(tmp_path / "s")
    assert store.levels == 2 and not (tmp_path / "s" / "layout").exists()
    new, _ = store.put_bytes(b"stored after")
    assert store.path(new) == tmp_path / "s" / new[:2] / new[2:4] / new
    assert sorted(store.keys()) == sorted([old, new]) and store.open(old).read() == b"stored before"


def test_file_store_is_content_addressed_and_keeps_one_copy(tmp_path):
    store = FileStore(tmp_path / "s")
    for _ in range(2):
        a = mtom.spool(b"same bytes", store.spool_dir)
        store.put(a.path, a.sha1)
        assert not a.path.exists()
    assert list(store.keys()) == [hashlib.sha1(b"same bytes").hexdigest()]
    with store.open(a.sha1) as f:
        assert f.read() == b"same bytes"
    store.delete(a.sha1)
    assert list(store.keys()) == []
