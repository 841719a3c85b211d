"""A peer nobody here wrote: zeep, loaded with IHE's published repository WSDL, retrieves a
document (ITI-43) and reads the MTOM answer."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from affinity_domain import ns
from tests.repository.pnr import REPOSITORY_UNIQUE_ID, provide, with_hash
from tests.shared import IHE, needs
from tests.xds import Doc, feed, new_patient


@needs(IHE)
def test_zeep_retrieves_a_document(repository, registry_service):
    zeep = pytest.importorskip("zeep")
    from zeep.transports import Transport

    wsdl = IHE / "wsdl" / "XDS.b_DocumentRepository.wsdl"
    xml_xsd = IHE / "schema" / "ebRS" / "xml.xsd"

    class LocalTransport(Transport):
        """No network here: xml.xsd from the shared copy."""

        def load(self, url):
            if url.endswith("xml.xsd"):
                return Path(xml_xsd).read_bytes()
            return super().load(url)

    pid = new_patient()
    feed(registry_service, pid)
    data = os.urandom(100_000)
    doc = with_hash(Doc(), data)
    assert provide(repository.url, pid, [(doc, data)]).status_name == "Success"

    client = zeep.Client(str(wsdl), transport=LocalTransport(), settings=zeep.Settings(strict=False))
    binding = f"{{{ns.XDSB}}}DocumentRepository_Binding"
    service = client.create_service(binding, repository.url)
    result = service.DocumentRepository_RetrieveDocumentSet(DocumentRequest=[
        {"RepositoryUniqueId": REPOSITORY_UNIQUE_ID, "DocumentUniqueId": doc.unique_id}])
    assert result.RegistryResponse.status.endswith(":Success")
    [response] = result.DocumentResponse
    assert response.DocumentUniqueId == doc.unique_id and response.mimeType == "text/plain"
    assert response.Document == data
