-- Document catalog read model: one row per document, kept by the catalog
-- projector in the same transaction as its tracked position.
CREATE TABLE IF NOT EXISTS catalog_documents (
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
    PRIMARY KEY (tenant_id, document_id)
);
CREATE INDEX IF NOT EXISTS catalog_documents_newest
    ON catalog_documents (tenant_id, uploaded_at DESC, document_id DESC);

-- Which stream sequence each projector has consumed up to: lets a restarted
-- projector resume its JetStream consumer exactly where its rows are.
CREATE TABLE IF NOT EXISTS projection_stream_offsets (
    projection  text   NOT NULL,
    stream      text   NOT NULL,
    sequence    bigint NOT NULL,
    PRIMARY KEY (projection, stream)
);
