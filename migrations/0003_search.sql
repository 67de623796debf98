-- Search read models. Each keeps its own copy of the document metadata it
-- needs (filename, type, upload time), so each can be rebuilt on its own.

-- The vector/BM25 index lives in Qdrant; this table is the search projection's
-- PostgreSQL side: document metadata for point payloads, written in the same
-- transaction as the projection's tracked position.
CREATE TABLE IF NOT EXISTS search_documents (
    tenant_id    text        NOT NULL,
    document_id  uuid        NOT NULL,
    filename     text        NOT NULL,
    media_type   text        NOT NULL,
    uploaded_at  timestamptz NOT NULL,
    status       text        NOT NULL,   -- uploaded | indexed | deleted
    chunk_count  integer,
    PRIMARY KEY (tenant_id, document_id)
);

-- What the index was built with; a mismatch with the configured model fails
-- the start loudly instead of mixing incompatible vectors.
CREATE TABLE IF NOT EXISTS search_index_meta (
    index_name  text        PRIMARY KEY,
    model       text        NOT NULL,
    dimension   integer     NOT NULL,
    sparse      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Full-text read model: exact, phrase and boolean search with highlights.
CREATE TABLE IF NOT EXISTS fulltext_documents (
    tenant_id    text        NOT NULL,
    document_id  uuid        NOT NULL,
    filename     text        NOT NULL,
    media_type   text        NOT NULL,
    uploaded_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, document_id)
);

CREATE TABLE IF NOT EXISTS fulltext_chunks (
    tenant_id    text        NOT NULL,
    document_id  uuid        NOT NULL,
    chunk_index  integer     NOT NULL,
    filename     text        NOT NULL,
    media_type   text        NOT NULL,
    uploaded_at  timestamptz NOT NULL,
    page_start   integer,
    page_end     integer,
    text         text        NOT NULL,
    tsv          tsvector    GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    PRIMARY KEY (tenant_id, document_id, chunk_index)
);
CREATE INDEX IF NOT EXISTS fulltext_chunks_tsv ON fulltext_chunks USING gin (tsv);
