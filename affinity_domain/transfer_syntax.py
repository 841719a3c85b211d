"""The transfer syntaxes the stack takes and offers, by pydicom's names (PS3.5 10 and Annex A)."""
from pydicom import uid

# Every AE takes these; an instance in one of them may be re-encoded into the other.
UNCOMPRESSED = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)
# Kept and sent as they came: never decoded to re-encode.
COMPRESSED = (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
              uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000, uid.RLELossless)
