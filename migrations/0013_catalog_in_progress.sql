-- The documents still on their way through the stages, in upload order: GET
-- /v1/documents/{id} counts those uploaded before one in progress ("ahead"). A partial
-- index stays as small as the backlog however large the library grows.
CREATE INDEX IF NOT EXISTS catalog_in_progress
    ON catalog_documents (tenant_id, uploaded_at, document_id)
    WHERE status IN ('uploaded', 'parsed', 'chunked');
