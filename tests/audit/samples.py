"""One message of every builder in ``affinity_domain.audit.events``, with the values a real exchange has."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

from affinity_domain import audit_codes as c
from affinity_domain.audit import events as e
from affinity_domain.audit.message import AuditSource, Human, Study

PATIENT = "IHERED-994^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
OTHER_PATIENT = "L-77^^^&1.3.6.1.4.1.21367.2005.13.20.3000&ISO"
SOURCE = AuditSource("xdsi-registry@host1", "XDSI", (c.SOURCE_APPLICATION_SERVER,))
WHEN = dt.datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=dt.timezone.utc)
STUDY = Study("1.2.826.0.1.3680043.10.54.1", {"1.2.840.10008.5.1.4.1.1.2": ("1.2.3.4.1", "1.2.3.4.2")}, "ACC-1")
HUMAN = Human("jdoe<jdoe@idp.example.org>", "Jane Doe", "Hospital A",
              (c.Code("46255001", "2.16.840.1.113883.6.96", "Pharmacist"),),
              (c.Code("TREATMENT", "2.16.756.5.30.1.127.3.10.5", "Treatment"),))
QUERY = b'<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"/>'
FIND_QUERY_ID = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"

consumer = e.source("http://www.w3.org/2005/08/addressing/anonymous", host="10.0.0.7", alt="4242")
registry = e.destination("http://127.0.0.1:8010/registry", host="127.0.0.1", alt="17")
repository_in = e.destination("http://127.0.0.1:8020/repository", host="127.0.0.1")
repository_out = e.source("http://127.0.0.1:8020/repository", host="127.0.0.1", requestor=False)
consumer_in = e.destination("http://www.w3.org/2005/08/addressing/anonymous", host="10.0.0.7", requestor=True)
pix_source = e.source(e.hl7_application("XDSI_SOURCE", "HOSPA"), host="10.0.0.9", alt="99")
pix_manager = e.destination(e.hl7_application("XDSI_PIX", "XDSI"), host="127.0.0.1")
scu = e.source("STORESCU", host="10.0.0.5")
scp = e.destination("XDSI_SOURCE", host="127.0.0.1")


def all_samples() -> dict[str, object]:
    """Builder name -> (message with its source); every public builder of ``events`` is here."""
    m = {
        "iti8_patient_identity_feed": e.iti8_patient_identity_feed(
            sender=pix_source, receiver=pix_manager, patients=[PATIENT, OTHER_PATIENT], control_id="MSG-1",
            action=c.UPDATE, time=WHEN),
        "iti9_pix_query": e.iti9_pix_query(
            consumer=pix_source, manager=pix_manager, query=b"QPD|IHE PIX Query|Q1|L-77^^^&1.2&ISO",
            control_id="MSG-2", patients=[OTHER_PATIENT, PATIENT], time=WHEN),
        "iti10_pix_update_notification": e.iti10_pix_update_notification(
            manager=e.source(e.hl7_application("XDSI_PIX", "XDSI"), host="127.0.0.1"),
            consumer=e.destination(e.hl7_application("RCV", "RCV"), host="127.0.0.2"),
            patients=[PATIENT], control_id="MSG-3", time=WHEN),
        "iti18_registry_stored_query": e.iti18_registry_stored_query(
            consumer=consumer, registry=registry, query_id=FIND_QUERY_ID, request=QUERY, patient=PATIENT,
            home="urn:oid:1.3.6.1.4.1.21367.13.70.200", human=HUMAN, time=WHEN),
        "iti51_multi_patient_query": e.iti51_multi_patient_query(
            consumer=consumer, registry=registry, query_id="urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f",
            request=QUERY, patients=[PATIENT, OTHER_PATIENT], outcome=c.SERIOUS_FAILURE,
            description="XDSRegistryError: not authorised", time=WHEN),
        "iti41_provide_and_register": e.iti41_provide_and_register(
            direction=e.IMPORT, document_source=consumer, repository=repository_in, patient=PATIENT,
            submission_set_uid="1.3.6.1.4.1.21367.2005.3.99.1", time=WHEN),
        "rad68_provide_and_register_imaging": e.rad68_provide_and_register_imaging(
            direction=e.EXPORT, imaging_source=e.source("XDSI_SOURCE", host="127.0.0.1"),
            repository=repository_in, patient=PATIENT, submission_set_uid="1.3.6.1.4.1.21367.2005.3.99.2",
            time=WHEN),
        "iti42_register": e.iti42_register(
            direction=e.EXPORT, repository=e.source("http://127.0.0.1:8020/repository", host="127.0.0.1"),
            registry=registry, patient=PATIENT, submission_set_uid="1.3.6.1.4.1.21367.2005.3.99.1", time=WHEN),
        "iti57_update_document_set": e.iti57_update_document_set(
            direction=e.IMPORT, administrator=consumer, registry=registry, patient=PATIENT,
            submission_set_uid="1.3.6.1.4.1.21367.2005.3.99.3", time=WHEN),
        "iti43_retrieve_document_set": e.iti43_retrieve_document_set(
            direction=e.EXPORT, repository=repository_out, consumer=consumer_in,
            documents=[("1.3.6.1.4.1.21367.2005.3.99.1.1", "1.3.6.1.4.1.21367.13.40.301", None),
                       ("1.3.6.1.4.1.21367.2005.3.99.1.2", "1.3.6.1.4.1.21367.13.40.301",
                        "urn:oid:1.3.6.1.4.1.21367.13.70.200")], patient=PATIENT, time=WHEN),
        "rad69_retrieve_imaging_document_set": e.rad69_retrieve_imaging_document_set(
            direction=e.IMPORT, imaging_source=e.source("http://127.0.0.1:8030/imaging-source",
                                                        host="127.0.0.1", requestor=False),
            consumer=consumer_in, studies=[STUDY], patient=PATIENT, human=HUMAN, time=WHEN),
        "instances_transferred": e.instances_transferred(
            action=c.CREATE, sender=scu, receiver=scp, studies=[STUDY], patient=PATIENT, time=WHEN),
        "begin_transferring": e.begin_transferring(
            sender=e.source("XDSI_SOURCE", host="127.0.0.1", requestor=False),
            receiver=e.destination("XDSI_CONSUMER", host="127.0.0.1"), studies=[STUDY], patient=PATIENT,
            others=[e.Participant("MOVESCU", True, host="10.0.0.8")], time=WHEN),
        "dicom_query": e.dicom_query(
            requestor=scu, responder=scp, sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
            identifier=b"\x08\x00\x52\x00\x06\x00STUDY ", transfer_syntax="1.2.840.10008.1.2.1",
            patients=[PATIENT], time=WHEN),
        "application_activity": e.application_activity(
            started=True, application="xdsi-registry", host="host1", launcher="root", time=WHEN),
        "user_authentication": e.user_authentication(
            login=True, user=e.Participant("operator-token:alice", True, host="10.0.0.3"),
            node=e.Participant("http://127.0.0.1:8050", False), outcome=c.MINOR_FAILURE,
            description="unknown bearer token", time=WHEN),
        "security_alert": e.security_alert(
            kind=c.NODE_AUTHENTICATION, reporter=e.Participant("xdsi-registry", False, host="127.0.0.1"),
            subject="10.0.0.66:51234", description="certificate not signed by the domain CA",
            performers=[e.Participant("CN=evil", True, host="10.0.0.66")], time=WHEN),
        "audit_log_used": e.audit_log_used(
            user=e.Participant("127.0.0.1:51000", True, host="127.0.0.1"),
            log="http://127.0.0.1:8060/AuditEvent?patient=IHERED-994", time=WHEN),
        "patient_record": e.patient_record(
            action=c.UPDATE, user=e.Participant("reviewer:bob", True), patients=[PATIENT],
            transaction=c.ITI_8, human=None, time=WHEN),
    }
    return {name: replace(msg, source=SOURCE) for name, msg in m.items()}
