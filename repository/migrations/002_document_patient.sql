-- The patient each document is about (its DocumentEntry's patientId), so that a retrieve's audit record names
-- the patient whose document was read (ITI-43, ITI TF-2 3.43.4.1.4). Rows from before have none.
ALTER TABLE document ADD COLUMN patient_id text;
