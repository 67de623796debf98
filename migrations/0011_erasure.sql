-- Erasure by crypto-shredding (docs/erasure.md).
--
-- Content a person may want erased is encrypted with a data key of its own
-- subject (a document, a conversation, a conversation's turn), wrapped by the
-- master key from config. Erasing a subject deletes its data key, in the same
-- transaction as the event that records the erasure; what was encrypted with
-- it (event fields, blobs) can no longer be read. No role but the owner reads
-- these tables: the query API's kf_reader is granted nothing here.
CREATE TABLE IF NOT EXISTS data_keys (
    key_id         text        PRIMARY KEY,   -- document:<id>, conversation:<id>, turn:<id>:<n>
    tenant_id      text        NOT NULL,
    wrapped        bytea       NOT NULL,      -- nonce || AES-256-GCM(master, data key)
    master_key_id  text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- What a key's plaintext quotes: a turn's answer and prompt quote the documents
-- its passages came from. Erasing a document destroys every key that quotes it.
CREATE TABLE IF NOT EXISTS data_key_quotes (
    key_id      text NOT NULL REFERENCES data_keys (key_id) ON DELETE CASCADE,
    quoted_key  text NOT NULL,
    PRIMARY KEY (key_id, quoted_key)
);
CREATE INDEX IF NOT EXISTS data_key_quotes_quoted ON data_key_quotes (quoted_key);

-- Keys that were destroyed: a key of an erased subject is never made again.
CREATE TABLE IF NOT EXISTS erased_keys (
    key_id     text        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    erased_at  timestamptz NOT NULL DEFAULT now(),
    cause      text        NOT NULL         -- the key whose erasure destroyed it
);

-- Which master key wraps the data keys: a program started with another one
-- stops at once instead of failing on the first read.
CREATE TABLE IF NOT EXISTS crypto_master (
    singleton      boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    master_key_id  text        NOT NULL,
    probe          bytea       NOT NULL,      -- a known value wrapped by the master key
    rotated_at     timestamptz NOT NULL DEFAULT now()
);

-- Blobs sealed with a data key are kept per key: the same bytes uploaded again
-- as another document are sealed with that document's key, and erasing one
-- deletes only its own. '' is a blob sealed with no key (access records' texts).
ALTER TABLE blobs ADD COLUMN IF NOT EXISTS key_id text NOT NULL DEFAULT '';
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
        WHERE c.relname = 'blobs' AND i.indisprimary AND a.attname = 'key_id'
    ) THEN
        ALTER TABLE blobs DROP CONSTRAINT blobs_pkey;
        ALTER TABLE blobs ADD PRIMARY KEY (tenant_id, key_id, sha256);
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS blobs_by_key ON blobs (key_id) WHERE key_id <> '';

-- What each read model did on an erasure: the certificate lists these.
CREATE TABLE IF NOT EXISTS erasure_confirmations (
    tenant_id    text        NOT NULL,
    subject      text        NOT NULL,      -- document:<id> or conversation:<id>
    read_model   text        NOT NULL,
    position     bigint      NOT NULL,      -- the erasure event's position it applied
    detail       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    confirmed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject, read_model)
);

-- Legal hold and the trash, as the catalog shows them.
ALTER TABLE catalog_documents ADD COLUMN IF NOT EXISTS legal_hold boolean NOT NULL DEFAULT false;
ALTER TABLE catalog_versions ADD COLUMN IF NOT EXISTS legal_hold boolean NOT NULL DEFAULT false;
-- The retention job looks for what the trash and the tenants' retention let go.
CREATE INDEX IF NOT EXISTS catalog_documents_trash
    ON catalog_documents (deleted_at) WHERE status = 'deleted';
-- Conversations erased (kept, their texts marked): retention skips them.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS erased_at timestamptz;

-- The query API's role reads what erasures did (ids and positions), never a key.
ALTER TABLE data_keys ENABLE ROW LEVEL SECURITY;
SELECT kf_protect_tenant_table('erased_keys');
SELECT kf_protect_tenant_table('erasure_confirmations');
