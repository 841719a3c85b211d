"""The DICOMweb cores without a server: Accept negotiation, transfer syntax choice, QIDO-RS parameters,
and the multipart writer read back by the standard library's MIME parser."""
from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP

import pytest

from imaging_source.dicomweb import multipart, qido, wado
from imaging_source.dicomweb.errors import DicomWebError

ELE, ILE, RLE, JPEG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50"


def test_accept_is_read_best_first_with_quoted_commas():
    ranges = wado.accept('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2;q=0.4, '
                         'multipart/related; type="application/dicom"; transfer-syntax=*, image/jpeg;q=0')
    assert [(r.part_type, r.transfer_syntax, r.q) for r in ranges] == [
        ("application/dicom", "*", 1.0), ("application/dicom", ILE, 0.4)]
    assert wado.syntaxes(ranges) == ["*", ILE]
    assert wado.syntaxes(wado.accept('multipart/related; type="application/dicom"')) == [ELE]
    assert wado.syntaxes(wado.accept("")) == ["*"]
    with pytest.raises(DicomWebError) as e:
        wado.syntaxes(wado.accept("application/dicom+json"))
    assert e.value.status.startswith("406")
    with pytest.raises(DicomWebError) as e:
        wado.syntaxes(wado.accept('multipart/related; type="application/dicom"; transfer-syntax=../x'))
    assert e.value.status.startswith("400")


def test_instances_are_only_converted_without_loss():
    assert wado.outgoing(JPEG, ["*"]) == JPEG
    assert wado.outgoing(ILE, [ELE]) == ELE
    assert wado.outgoing(RLE, [ELE]) == ELE          # decoded, losslessly
    assert wado.outgoing(JPEG, [ELE]) is None        # a lossy instance is never decoded
    assert wado.outgoing(ELE, [JPEG]) is None        # nor anything compressed here
    assert wado.frame_type(ELE, wado.accept('multipart/related; type="application/octet-stream"')) == wado.OCTETS
    assert wado.frame_type(JPEG, wado.accept('multipart/related; type="application/octet-stream"')) is None
    assert wado.frame_type(JPEG, wado.accept('multipart/related; type="image/jpeg"')) == "image/jpeg"


def test_frame_lists():
    assert wado.frame_numbers("1,3, 2", 10) == [1, 3, 2]
    for bad in ("0", "1,,2", "x", "-1", "1;2"):
        with pytest.raises(DicomWebError):
            wado.frame_numbers(bad, 10)
    with pytest.raises(DicomWebError) as e:
        wado.frame_numbers(",".join(["1"] * 11), 10)
    assert e.value.status.startswith("413")


def test_qido_parameters():
    s = qido.parse("series", {"StudyInstanceUID": "1.2.3"}, [("Modality", "CT"), ("includefield", "00081030,all"),
                                                              ("limit", "5"), ("offset", "10")], 100)
    assert (s.level, s.limit, s.offset) == ("SERIES", 5, 10)
    assert [(c.column, c.op, c.values) for c in s.conditions] == [("st.study_uid", "in", ("1.2.3",)),
                                                                  ("se.modality", "in", ("CT",))]
    assert "BodyPartExamined" in s.fields and "StudyDescription" in s.fields
    assert "PatientID" not in s.fields                 # the study is named in the path
    assert "NumberOfStudyRelatedInstances" not in s.fields
    for params in ([("SOPInstanceUID", "1.2")], [("StudyInstanceUID", "1.2.03")], [("limit", "ten")],
                   [("NotAnAttribute", "x")], [("fuzzymatching", "maybe")], [("StudyDate", "2004")]):
        with pytest.raises(DicomWebError) as e:
            qido.parse("series", {}, params, 100)
        assert e.value.status.startswith("400"), params
    with pytest.raises(DicomWebError):
        qido.parse("studies", {"StudyInstanceUID": "../../etc"}, [], 100)
    s = qido.parse("studies", {}, [("PatientName", "doe^j"), ("fuzzymatching", "true"), ("Rows", "512")], 100)
    assert [(c.op, c.values) for c in s.conditions] == [("fuzzy", ("doe", "j"))]
    assert s.warnings == ["Rows is not supported for matching and was ignored"]


def test_qido_json_model():
    s = qido.parse("instances", {}, [], 10)
    item = qido.answer(s, {"study_uid": "1.2", "series_uid": "1.3", "sop_uid": "1.4", "sop_class": "1.5",
                           "instance_number": "7", "transfer_syntax": ELE, "name": "Doe^John",
                           "modality": "CT", "n_instances": None}, "http://h/dicomweb")
    assert item["00080018"] == {"vr": "UI", "Value": ["1.4"]}
    assert item["00200013"] == {"vr": "IS", "Value": [7]}
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert item["00081190"]["Value"] == ["http://h/dicomweb/studies/1.2/series/1.3/instances/1.4"]
    assert list(item) == sorted(item)


def test_multipart_body_reads_back():
    boundary = multipart.boundary()
    parts = [("application/dicom", "http://h/a", lambda: [b"one", b"\r\n--", b"two"]),
             ("application/octet-stream", "", lambda: [b""]), ("image/png", "", lambda: [b"x" * 300000])]
    data = b"".join(multipart.body(boundary, parts, flush_at=1000))
    head = f"Content-Type: {multipart.content_type(boundary, 'application/dicom')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + data)
    got = [(p.get_content_type(), p.get("Content-Location"), p.get_payload(decode=True)) for p in message.iter_parts()]
    assert got == [("application/dicom", "http://h/a", b"one\r\n--two"), ("application/octet-stream", None, b""),
                   ("image/png", None, b"x" * 300000)]
