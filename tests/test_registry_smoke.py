from xds import *  # noqa


def test_register_and_find(registry):
    pid = new_patient()
    feed(registry, pid)
    r = post(registry.url, envelope(REGISTER, submission(pid, [Doc()])))
    assert r.status == 200 and r.response_status == "Success", r.body
    q = post(registry.url, envelope(QUERY, stored_query(FIND_DOCUMENTS, {
        "$XDSDocumentEntryPatientId": f"'{pid}'", "$XDSDocumentEntryStatus": f"('{APPROVED}')"})))
    assert q.response_status == "Success", q.body
    assert len(q.objects("ExtrinsicObject")) == 1
