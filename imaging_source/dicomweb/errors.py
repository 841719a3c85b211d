"""The one error a DICOMweb core raises: answered with its HTTP status and a JSON reason."""
from __future__ import annotations

from affinity_domain.exceptions import XdsiError
from affinity_domain.uids import uid_problem


class DicomWebError(XdsiError):
    permanent = True

    def __init__(self, status: str, message: str, headers: list[tuple[str, str]] = ()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, list(headers)


def bad(message: str) -> DicomWebError:
    return DicomWebError("400 Bad Request", message)


def not_found(message: str) -> DicomWebError:
    return DicomWebError("404 Not Found", message)


def not_acceptable(message: str) -> DicomWebError:
    return DicomWebError("406 Not Acceptable", message)


def checked_uid(value: str, what: str) -> str:
    """A UID from a URL or a parameter, refused (400) unless it is one; it is only ever looked up."""
    problem = uid_problem(value, what)
    if problem:
        raise bad(problem)
    return value
