"""The profile's XML namespaces and the ``wsa:Action`` of every transaction served or sent.

One name per URI: every module and test says ``ns.XDSB`` rather than spelling the URI again."""

# SOAP 1.2, WS-Addressing, XOP (MTOM)
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"     # only to refuse it
WSA = "http://www.w3.org/2005/08/addressing"
WSA_ANONYMOUS = WSA + "/anonymous"
WSA_FAULT_ACTION = WSA + "/fault"
XOP = "http://www.w3.org/2004/08/xop/include"
XML = "http://www.w3.org/XML/1998/namespace"              # xml:lang

# ebXML RegRep 3.0 (ITI TF-3 4.2)
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"

# IHE
XDSB = "urn:ihe:iti:xds-b:2007"
IHERAD = "urn:ihe:rad:xdsi-b:2009"

# wsa:Action of each request, and of its response
PROVIDE_AND_REGISTER = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"   # ITI-41; RAD-68 travels as ITI-41
PROVIDE_AND_REGISTER_RESPONSE = PROVIDE_AND_REGISTER + "Response"
REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"                          # ITI-42
REGISTER_RESPONSE = REGISTER + "Response"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"                            # ITI-43
RETRIEVE_RESPONSE = RETRIEVE + "Response"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"                        # ITI-18
STORED_QUERY_RESPONSE = STORED_QUERY + "Response"
MULTI_PATIENT_QUERY = "urn:ihe:iti:2009:MultiPatientStoredQuery"             # ITI-51
MULTI_PATIENT_QUERY_RESPONSE = MULTI_PATIENT_QUERY + "Response"
UPDATE = "urn:ihe:iti:2010:UpdateDocumentSet"                                # ITI-57
UPDATE_RESPONSE = UPDATE + "Response"
RETRIEVE_IMAGING = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"             # RAD-69
RETRIEVE_IMAGING_RESPONSE = RETRIEVE_RESPONSE                                # RAD-69 answers as ITI-43 does

# The transaction each request action is, as metrics and logs name it. A Provide and Register
# carrying a KOS manifest is RAD-68 (the repository tells them apart by content).
TRANSACTIONS = {PROVIDE_AND_REGISTER: "ITI-41", REGISTER: "ITI-42", RETRIEVE: "ITI-43", STORED_QUERY: "ITI-18",
                MULTI_PATIENT_QUERY: "ITI-51", UPDATE: "ITI-57", RETRIEVE_IMAGING: "RAD-69"}
