-- Patient opt-out: the latest choice per patient id (the audit trail keeps each change).
CREATE TABLE consent (
    patient_id  text PRIMARY KEY,          -- CX in the affinity domain
    opted_out   boolean NOT NULL,
    by_whom     text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
-- RAD-69's question "whose study is this?" goes by a manifest's referenceIdList, across patients.
CREATE INDEX document_entry_reference_id ON document_entry USING gin (reference_id);
