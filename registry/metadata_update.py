"""ITI-57 Update Document Set rules, pure: the availability-status operation on DocumentEntries.

A metadata update is a SubmissionSet plus ``UpdateAvailabilityStatus`` Associations from it to
registered DocumentEntries, each with one ``OriginalStatus`` and one ``NewStatus`` (Approved or
Deprecated, different). The registry records the SubmissionSet and the Associations and moves each
target to its new status, all in one transaction. The other ITI-57 operations (new versions of a
DocumentEntry or Folder, status of Folders or Associations, submitting Associations alone) are
refused with ``XDSMetadataUpdateOperationError`` rather than half done.
"""
from __future__ import annotations

from dataclasses import dataclass

from affinity_domain import ebrim as rim
from affinity_domain.ebrim import ObjectList, RegistryObject
from affinity_domain.errors import (DUPLICATE_UNIQUE_ID, METADATA_UPDATE_ERROR, METADATA_UPDATE_OPERATION_ERROR,
                                    PATIENT_ID_RECONCILIATION_ERROR, XdsError)

from .codes import CodeSets
from .submission import (SUBMISSION_SET_CODES, RegistryState, _check_codes, _check_ids, _check_submission_set,
                         _label, _meta, check_patient, is_uuid)

STATUSES = (rim.APPROVED, rim.DEPRECATED)
STATUS_SLOTS = {"OriginalStatus", "NewStatus"}


def _operation(context: str, location: str = "") -> XdsError:
    return XdsError(METADATA_UPDATE_OPERATION_ERROR, context, location)


@dataclass
class StatusChange:
    document: str       # entryUUID
    original: str
    new: str


def _status_slots(a: RegistryObject) -> list[XdsError]:
    errors = []
    extra = sorted({s.name for s in a.slots} - STATUS_SLOTS)
    if extra:
        errors.append(_operation(f"{_label(a)}: slot {', '.join(extra)} is not part of UpdateAvailabilityStatus",
                                 a.id))
    for name in sorted(STATUS_SLOTS):
        values = a.slot(name)
        if len(values) != 1:
            errors.append(_operation(f"{_label(a)} needs exactly one {name}", a.id))
        elif values[0] not in STATUSES:
            errors.append(_operation(f"{_label(a)}: {name} {values[0]!r} is neither Approved nor Deprecated "
                                     "(full status URNs)", a.id))
    if not errors and a.slot_value("OriginalStatus") == a.slot_value("NewStatus"):
        errors.append(_operation(f"{_label(a)}: NewStatus is the same as OriginalStatus", a.id))
    return errors


def validate(objects: ObjectList, codes: CodeSets, domain: str) -> list[XdsError]:
    """Every rule that needs only the request."""
    errors: list[XdsError] = []
    if objects.unknown:
        errors.append(_meta(f"unsupported objects in the update: {', '.join(sorted(set(objects.unknown)))}"))
    sets = objects.of_kind("submission_set")
    if len(sets) != 1:
        return errors + [_meta(f"an update must hold exactly one SubmissionSet, found {len(sets)}")]
    ss = sets[0]
    _check_ids(ss, domain, errors)
    _check_codes(ss, SUBMISSION_SET_CODES, codes, errors)
    _check_submission_set(ss, errors)
    for o in objects.objects:
        if o.kind in ("document_entry", "folder", "registry_package"):
            errors.append(_operation(f"{_label(o)}: only availability status updates are supported, not new "
                                     "versions of DocumentEntries or Folders", o.id))
    updates = [a for a in objects.of_kind("association") if a.association_type == rim.UPDATE_AVAILABILITY_STATUS]
    ids = {a.id for a in updates}
    for a in objects.of_kind("association"):
        if a.association_type == rim.UPDATE_AVAILABILITY_STATUS:
            if a.source != ss.id:
                errors.append(_operation(f"{_label(a)}: the sourceObject must be the SubmissionSet", a.id))
            if not is_uuid(a.target):
                errors.append(_operation(f"{_label(a)}: targetObject {a.target!r} is not a registered object's "
                                         "UUID", a.id))
            errors.extend(_status_slots(a))
        elif not (a.association_type == rim.HAS_MEMBER and a.source == ss.id and a.target in ids):
            errors.append(_operation(f"{_label(a)}: associationType {a.association_type.rsplit(':', 1)[-1]} is "
                                     "not an availability status update", a.id))
    if not updates:
        errors.append(_operation("the update holds no UpdateAvailabilityStatus Association"))
    return errors


def decide(objects: ObjectList, state: RegistryState) -> tuple[list[XdsError], list[StatusChange]]:
    """The status changes to make, given the registered targets ``state`` holds."""
    ss = objects.of_kind("submission_set")[0]
    errors = check_patient(ss, state)
    if ss.unique_id in state.taken_unique_ids:
        errors.append(XdsError(DUPLICATE_UNIQUE_ID, f"{_label(ss)} uniqueId {ss.unique_id} is already registered",
                               ss.id))
    changes: list[StatusChange] = []
    for a in objects.of_kind("association"):
        if a.association_type != rim.UPDATE_AVAILABILITY_STATUS:
            continue
        target = state.objects.get(a.target)
        original, new = a.slot_value("OriginalStatus"), a.slot_value("NewStatus")
        if target is None:
            errors.append(XdsError(METADATA_UPDATE_ERROR, f"{_label(a)}: {a.target} is not in the registry", a.id))
        elif target.kind != "document_entry":
            errors.append(_operation(f"{_label(a)}: the status of a {target.kind.replace('_', ' ')} cannot be "
                                     "updated here, only a DocumentEntry's", a.id))
        elif target.patient_id != ss.patient_id:
            errors.append(XdsError(PATIENT_ID_RECONCILIATION_ERROR,
                                   f"{_label(a)}: DocumentEntry {a.target} belongs to patient {target.patient_id}, "
                                   f"the SubmissionSet to {ss.patient_id}", a.id))
        elif target.status != original:
            errors.append(XdsError(METADATA_UPDATE_ERROR, f"{_label(a)}: DocumentEntry {a.target} is "
                                                          f"{target.status.rsplit(':', 1)[-1]}, not "
                                                          f"{original.rsplit(':', 1)[-1]}", a.id))
        elif target.id in {c.document for c in changes}:
            errors.append(_operation(f"{_label(a)}: DocumentEntry {a.target} is updated twice", a.id))
        else:
            changes.append(StatusChange(a.target, original, new))
    return errors, changes
