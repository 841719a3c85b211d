"""DICOMweb (PS3.18) at the imaging source: QIDO-RS, WADO-RS (RAD-107), WADO-URI (RAD-55) and rendered
previews, as sans-IO cores (``qido``, ``wado``, ``rendered``, ``multipart``) and a WSGI door (``door``)."""
