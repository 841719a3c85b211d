"""The audit records of refused access (issue 16): a Security Alert naming the refused peer and its
host, Node Authentication for one not let in, Use of Restricted Function for one lacking the role."""
from __future__ import annotations

import dataclasses

from lxml import etree

from affinity_domain import access, audit
from affinity_domain.audit.message import AuditSource, to_xml


def _xml(message) -> etree._Element:
    return etree.fromstring(to_xml(dataclasses.replace(message, source=AuditSource("test@host", None, ()))))


def test_a_peer_not_let_in_is_a_node_authentication_alert():
    root = _xml(access.refusal_alert(reporter="XDSI_SOURCE", who="STRANGER", host="192.0.2.7", node=True,
                                     description="calling AE 'STRANGER' is not a configured peer"))
    event = root.find("EventIdentification")
    assert event.find("EventID").get("csd-code") == "110113"                       # Security Alert
    assert event.find("EventTypeCode").get("csd-code") == "110126"                 # Node Authentication
    assert event.get("EventOutcomeIndicator") == "4"
    users = {p.get("UserID"): p for p in root.iter("ActiveParticipant")}
    assert users["STRANGER"].get("NetworkAccessPointID") == "192.0.2.7" and "XDSI_SOURCE" in users
    assert "not a configured peer" in etree.tostring(root).decode()


def test_a_request_without_the_role_is_a_use_of_restricted_function_alert():
    root = _xml(access.refusal_alert(reporter="pix", who="reader.one", host="127.0.0.1",
                                     description="POST /persons/unlink needs the role reviewer"))
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110132"
    assert any(p.get("UserID") == "reader.one" for p in root.iter("ActiveParticipant"))


def test_recording_before_audit_started_does_nothing():
    assert audit._recorder is None
    audit.record(access.refusal_alert(reporter="pix", who="x", host="127.0.0.1", description="d"))
