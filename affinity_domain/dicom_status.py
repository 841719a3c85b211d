"""DIMSE statuses by name. pynetdicom's ``Status`` names Success, Cancel, Pending and Move
Destination Unknown (``pynetdicom.status.Status``); the failures we answer with are named here once, in the words of the
service class's table (PS3.4 B.2.3 for C-STORE, C.4 for Query/Retrieve; PS3.7 C for the general ones)."""
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
# One code, the name each table gives it:
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900        # C-STORE
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900      # C-FIND, C-MOVE, C-GET
CANNOT_UNDERSTAND = 0xC000                        # C-STORE
UNABLE_TO_PROCESS = 0xC000                        # C-FIND, C-MOVE, C-GET
