"""Part-10 layout read without decoding: dataset offset, transfer syntax and top-level element
spans, checked against pydicom walking the same files."""
from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble

from affinity_domain import part10

FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "SC_rgb_rle.dcm", "waveform_ecg.dcm",
         "liver.dcm", "SC_rgb_jpeg_gdcm.jpg.dcm", "emri_small_RLE.dcm", "ExplVR_LitEndNoMeta.dcm"]


def _pydicom_spans(data: bytes, start: int, implicit: bool) -> list[tuple[int, int, int]]:
    fp = BytesIO(data)
    fp.seek(start)
    spans = []
    for element in data_element_generator(fp, implicit, True):
        spans.append((int(element.tag), start, fp.tell()))
        start = fp.tell()
    return spans


@pytest.mark.parametrize("name", FILES)
def test_offset_syntax_and_spans_are_what_pydicom_finds(name):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom's test data")
    data = open(path, "rb").read()
    found = part10.transfer_syntax(data)
    if data[128:132] != b"DICM":
        assert found is None and part10.dataset_offset(data[:256]) is None
        return
    with open(path, "rb") as f:
        read_preamble(f, False)
        _read_file_meta_info(f)
        offset = f.tell()
    meta = dcmread(path, stop_before_pixels=True).file_meta
    syntax = meta.TransferSyntaxUID
    assert found == (syntax, offset) and part10.dataset_offset(data[:256]) == offset
    texts, _ = part10.file_meta(data)
    assert (texts[0x00020002], texts[0x00020003]) == (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID)
    spans = [(tag, s, e) for tag, s, _, e in part10.top_level(data, offset, implicit=syntax.is_implicit_VR)]
    assert spans == _pydicom_spans(data, offset, syntax.is_implicit_VR)


def test_sequences_and_items_of_undefined_length_are_stepped_over():
    from pydicom.dataset import Dataset
    from pydicom.filewriter import write_dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.sequence import Sequence

    inner = Dataset()
    inner.CodeValue, inner.CodeMeaning = "113030", "Manifest"
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([inner])
    ds = Dataset()
    ds.PatientID = "P1"
    ds.ContentSequence = Sequence([item, item])
    ds.StudyInstanceUID = "1.2.3"
    for implicit in (True, False):
        out = DicomBytesIO()
        out.is_implicit_VR, out.is_little_endian = implicit, True
        for holder, keyword in ((ds, "ContentSequence"), (item, "ConceptNameCodeSequence")):
            holder[keyword].is_undefined_length = True
        for i in (ds.ContentSequence[0], inner):
            i.is_undefined_length_sequence_item = True
        write_dataset(out, ds)
        data = out.getvalue()
        assert data.count(b"\xfe\xff\xdd\xe0") == 3          # sequence delimiters written
        spans = [(tag, s, e) for tag, s, _, e in part10.top_level(data, 0, implicit=implicit)]
        assert spans == _pydicom_spans(data, 0, implicit)
        assert [tag for tag, _, _ in spans] == [0x00100020, 0x0020000D, 0x0040A730]


def test_bytes_cut_short_are_unreadable():
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    offset = part10.dataset_offset(data[:256])
    with pytest.raises(part10.Unreadable):
        list(part10.top_level(data[:-100], offset))
    with pytest.raises(part10.Unreadable):
        list(part10.top_level(data[:offset + 5], offset))


@pytest.mark.parametrize("syntax, implicit", [
    ("1.2.840.10008.1.2", True), ("1.2.840.10008.1.2.1", False), ("1.2.840.10008.1.2.4.70", False),
    ("1.2.840.10008.1.2.1.99", None), ("1.2.840.10008.1.2.2", None), ("1.2.3.4", None), ("not a uid", None)])
def test_the_syntaxes_top_level_walks_and_their_vr(syntax, implicit):
    """Little endian, not deflated: walked (encapsulated pixel data too); deflated, big endian or
    unknown: left to pydicom."""
    assert part10.implicit_vr(syntax) is implicit
