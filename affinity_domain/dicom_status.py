"""DIMSE statuses by name. pynetdicom's ``Status`` names Success, Cancel, Pending and Move Destination
Unknown (``pynetdicom.status.Status``); the failures we answer with and the warnings we read are named
here once, in the words of the service class's table (PS3.4 B.2.3 for C-STORE, C.4 for Query/Retrieve;
PS3.7 C for the general ones)."""
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
# One code, the name each table gives it:
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900        # C-STORE
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900      # C-FIND, C-MOVE, C-GET
CANNOT_UNDERSTAND = 0xC000                        # C-STORE: a dataset that cannot be read
# C-STORE: an instance for a study of another patient. Cxxx is the table's range for failures of
# the implementation's own naming (dcm4chee-arc answers the same case in A7xx, Out of Resources).
STUDY_OF_ANOTHER_PATIENT = 0xC001
UNABLE_TO_PROCESS = 0xC000                        # C-FIND, C-MOVE, C-GET
# C-STORE warnings (PS3.4 B.2.3): the instance was stored.
COERCION_OF_DATA_ELEMENTS = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
# C-MOVE, C-GET (PS3.4 C.4.2.1.5, C.4.3.1.4): done, with one or more sub-operations failed or warned
SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
# The SOP Instance UID breaks the UID construction rules (a general status, PS3.7 Annex C).
INVALID_SOP_INSTANCE = 0x0117
# N-ACTION (PS3.7 C, as PS3.4 J.3.2 uses them for a Storage Commitment request)
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_ACTION = 0x0123
RESOURCE_LIMITATION = 0x0213
# Storage Commitment Failure Reasons (PS3.3 C.14.1.1), per instance in the N-EVENT-REPORT;
# PROCESSING_FAILURE and NO_SUCH_OBJECT_INSTANCE are two of them.
CLASS_INSTANCE_CONFLICT = 0x0119
# A general status (PS3.7 C.5.x "Refused: Not Authorized"): the peer may not invoke this operation.
NOT_AUTHORIZED = 0x0124
