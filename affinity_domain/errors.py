"""XDS error codes and the RegistryResponse / AdhocQueryResponse that carry them (ITI TF-3 4.2.4)."""
from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from .ebrim import q
from .exceptions import XdsiError
from .ns import QUERY, RIM, RS

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

# The codes this stack emits; names are the profile's own.
REGISTRY_ERROR = "XDSRegistryError"
REGISTRY_METADATA_ERROR = "XDSRegistryMetadataError"
REGISTRY_BUSY = "XDSRegistryBusy"
REGISTRY_OUT_OF_RESOURCES = "XDSRegistryOutOfResources"
UNKNOWN_PATIENT_ID = "XDSUnknownPatientId"
PATIENT_ID_DOES_NOT_MATCH = "XDSPatientIdDoesNotMatch"
NON_IDENTICAL_HASH = "XDSNonIdenticalHash"
NON_IDENTICAL_SIZE = "XDSNonIdenticalSize"
DUPLICATE_UNIQUE_ID = "XDSDuplicateUniqueIdInRegistry"
UNKNOWN_STORED_QUERY = "XDSUnknownStoredQuery"
STORED_QUERY_MISSING_PARAM = "XDSStoredQueryMissingParam"
STORED_QUERY_PARAM_NUMBER = "XDSStoredQueryParamNumber"
RESULT_NOT_SINGLE_PATIENT = "XDSResultNotSinglePatient"
TOO_MANY_RESULTS = "XDSTooManyResults"
DEPRECATED_DOCUMENT = "XDSRegistryDeprecatedDocumentError"
REPLACE_FAILED = "XDSReplaceFailed"   # legacy name; ITI TF-3 now uses XDSRegistryMetadataError
UNKNOWN_COMMUNITY = "XDSUnknownCommunity"
# ITI TF-3 Table 4.2.4.1-2: the repository's own (the Imaging Document Source's too, for RAD-69)
REPOSITORY_ERROR = "XDSRepositoryError"
REPOSITORY_METADATA_ERROR = "XDSRepositoryMetadataError"
REPOSITORY_OUT_OF_RESOURCES = "XDSRepositoryOutOfResources"
REPOSITORY_BUSY = "XDSRepositoryBusy"
REGISTRY_NOT_AVAILABLE = "XDSRegistryNotAvailable"
MISSING_DOCUMENT = "XDSMissingDocument"
MISSING_DOCUMENT_METADATA = "XDSMissingDocumentMetadata"
DOCUMENT_UNIQUE_ID_ERROR = "XDSDocumentUniqueIdError"
UNKNOWN_REPOSITORY_ID = "XDSUnknownRepositoryId"
# ITI-57 Update Document Set
METADATA_UPDATE_ERROR = "XDSMetadataUpdateError"
METADATA_UPDATE_OPERATION_ERROR = "XDSMetadataUpdateOperationError"
PATIENT_ID_RECONCILIATION_ERROR = "XDSPatientIDReconciliationError"


# The codes that say "not now" rather than "not this": the same request may succeed later.
TRANSIENT = frozenset({REGISTRY_BUSY, REGISTRY_OUT_OF_RESOURCES, REGISTRY_NOT_AVAILABLE, REPOSITORY_BUSY,
                       REPOSITORY_OUT_OF_RESOURCES})


@dataclass
class XdsError(XdsiError):
    """One RegistryError; raising it aborts the transaction with this code."""

    code: str
    context: str
    location: str = ""
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.code}: {self.context}"

    @property
    def retryable(self) -> bool:
        return self.code in TRANSIENT

    @property
    def permanent(self) -> bool:
        return self.code not in TRANSIENT


class XdsErrors(XdsiError):
    """Several RegistryErrors found together (validation reports all it can)."""

    permanent = True

    def __init__(self, errors: list[XdsError]):
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


def error_list(errors: list[XdsError]) -> etree._Element:
    el = etree.Element(q(RS, "RegistryErrorList"), nsmap={"rs": RS})
    severities = {e.severity for e in errors}
    el.set("highestSeverity", ERROR if ERROR in severities else WARNING)
    for e in errors:
        attrs = {"errorCode": e.code, "codeContext": e.context, "severity": e.severity}
        if e.location:
            attrs["location"] = e.location
        etree.SubElement(el, q(RS, "RegistryError"), attrs)
    return el


def _status(errors: list[XdsError], partial: bool) -> str:
    if not any(e.severity == ERROR for e in errors):
        return SUCCESS
    return PARTIAL_SUCCESS if partial else FAILURE


def registry_response(errors: list[XdsError] = (), partial: bool = False) -> etree._Element:
    errors = list(errors)
    el = etree.Element(q(RS, "RegistryResponse"), {"status": _status(errors, partial)}, nsmap={"rs": RS})
    if errors:
        el.append(error_list(errors))
    return el


def adhoc_query_response(errors: list[XdsError] = (), objects: list[etree._Element] = (),
                         partial: bool = False) -> etree._Element:
    errors = list(errors)
    el = etree.Element(q(QUERY, "AdhocQueryResponse"), {"status": _status(errors, partial)},
                       nsmap={"query": QUERY, "rim": RIM, "rs": RS})
    if errors:
        el.append(error_list(errors))
    objs = etree.SubElement(el, q(RIM, "RegistryObjectList"))
    objs.extend(objects)
    return el
