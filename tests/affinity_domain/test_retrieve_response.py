"""The RetrieveDocumentSetResponse of ITI-43 (repository) and RAD-69 (imaging source): the bytes
both wrote before they shared one writer, so the sharing changed nothing on the wire."""
from lxml import etree

from affinity_domain.errors import XdsError
from imaging_source import rad69
from repository import retrieve

RESPONSE = ('<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="urn:ihe:iti:xds-b:2007">'
            '<rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" status="{status}"{errors}'
            '</xdsb:RetrieveDocumentSetResponse>')
ERRORS = ('><rs:RegistryErrorList highestSeverity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error">'
          '<rs:RegistryError errorCode="XDSDocumentUniqueIdError" codeContext="no document \'9\'" '
          'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error" location="9"/></rs:RegistryErrorList>'
          '</rs:RegistryResponse>')
DOCUMENT = ('<xdsb:DocumentResponse>{community}<xdsb:RepositoryUniqueId>{repository}</xdsb:RepositoryUniqueId>'
            '<xdsb:DocumentUniqueId>{uid}</xdsb:DocumentUniqueId><xdsb:mimeType>{mime}</xdsb:mimeType>'
            '<xdsb:Document><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:{cid}"/>'
            '</xdsb:Document></xdsb:DocumentResponse>')
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
MISSING = [XdsError("XDSDocumentUniqueIdError", "no document '9'", "9")]


def expected(status: str, errors: bool, documents: list[tuple[str, str, str, str]], repository: str) -> str:
    docs = "".join(DOCUMENT.format(community=f"<xdsb:HomeCommunityId>{c}</xdsb:HomeCommunityId>" if c else "",
                                   repository=repository, uid=uid, mime=mime, cid=cid)
                   for c, uid, mime, cid in documents)
    head = RESPONSE.format(status=status, errors=ERRORS if errors else "/>")
    return head.replace("</xdsb:RetrieveDocumentSetResponse>", docs + "</xdsb:RetrieveDocumentSetResponse>")


def test_iti43_response_bytes():
    served = [retrieve.Served(retrieve.DocumentRequest("urn:oid:1.2", "1.3.6.1", "1.2.3.4"), "text/plain", "doc0@xdsi"),
              retrieve.Served(retrieve.DocumentRequest("", "1.3.6.1", "1.2.3.5"), "application/pdf", "doc1@xdsi")]
    docs = [("urn:oid:1.2", "1.2.3.4", "text/plain", "doc0@xdsi"), ("", "1.2.3.5", "application/pdf", "doc1@xdsi")]
    for errors, kept, status in ((MISSING, served, PARTIAL), ([], served, SUCCESS), (MISSING, [], FAILURE)):
        got = etree.tostring(retrieve.response(errors, kept)).decode()
        assert got == expected(status, bool(errors), docs if kept else [], "1.3.6.1")


def test_rad69_response_bytes():
    served = [rad69.Served(rad69.DocumentRequest("1.9", "1.9.1", "urn:oid:1.2", "1.3.6.2", "1.9.1.1"), "ab",
                           "1.2.840.10008.1.2.1", False, "doc0@xdsi"),
              rad69.Served(rad69.DocumentRequest("1.9", "1.9.1", "", "1.3.6.2", "1.9.1.2"), "cd",
                           "1.2.840.10008.1.2", True, "doc1@xdsi")]
    docs = [("urn:oid:1.2", "1.9.1.1", "application/dicom", "doc0@xdsi"),
            ("", "1.9.1.2", "application/dicom", "doc1@xdsi")]
    for errors, kept, status in ((MISSING, served, PARTIAL), ([], served, SUCCESS), (MISSING, [], FAILURE)):
        got = etree.tostring(rad69.response(errors, kept)).decode()
        assert got == expected(status, bool(errors), docs if kept else [], "1.3.6.2")
