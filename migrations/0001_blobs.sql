-- Content-addressed blob store (the claim check): upload bytes, extracted pages,
-- chunks and embedding matrices. Immutable once written; keyed per tenant so a
-- tenant's content can be erased without touching another's.
CREATE TABLE IF NOT EXISTS blobs (
    tenant_id   text        NOT NULL,
    sha256      text        NOT NULL,
    size_bytes  bigint      NOT NULL,
    content     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);
