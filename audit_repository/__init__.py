"""The Audit Record Repository (ATNA): receives ITI-20 syslog over TLS and UDP, stores each record in PostgreSQL
with its fields indexed, and answers ITI-81 (FHIR AuditEvent search) and ``xdsi audit search``."""
