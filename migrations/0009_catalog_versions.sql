-- The catalog as it stood at any time (GET /v1/documents?as_of=): every
-- version of every document's row, written by the catalog projector beside the
-- row itself, in the same transaction. A version holds the row as the event of
-- that aggregate version left it; ``updated_at`` is that event's time.
CREATE TABLE IF NOT EXISTS catalog_versions (
    tenant_id        text        NOT NULL,
    document_id      uuid        NOT NULL,
    filename         text        NOT NULL,
    media_type       text        NOT NULL,
    size_bytes       bigint      NOT NULL,
    content_sha256   text        NOT NULL,
    status           text        NOT NULL,
    page_count       integer,
    char_count       bigint,
    chunk_count      integer,
    warnings         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    failure_stage    text,
    failure_code     text,
    failure_reason   text,
    uploaded_by      text        NOT NULL,
    uploaded_at      timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    deleted_at       timestamptz,
    version          integer     NOT NULL,
    position         bigint      NOT NULL,
    PRIMARY KEY (tenant_id, document_id, version)
);
CREATE INDEX IF NOT EXISTS catalog_versions_as_of
    ON catalog_versions (tenant_id, updated_at);

SELECT kf_protect_tenant_table('catalog_versions');

-- Versions cannot be derived from the rows already projected (they hold only
-- the newest): the catalog is projected again from the event log, which its
-- projector does by itself when it next starts from position 0.
DO $$
BEGIN
    IF to_regclass('catalog_tracking') IS NOT NULL THEN
        DELETE FROM catalog_documents;
        UPDATE catalog_tracking SET notification_id = 0;
        DELETE FROM projection_stream_offsets WHERE projection = 'catalog';
    END IF;
END
$$;
