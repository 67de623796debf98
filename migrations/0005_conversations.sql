-- Conversations read model: transcripts with citations, kept by the
-- conversations projector in the same transaction as its tracked position.
-- Citations keep the chunk's identity (document, chunk index, page) but not its
-- text: the read API reads the text from the full-text table at query time, so
-- a deleted document's passages are not shown again through a transcript.
CREATE TABLE IF NOT EXISTS conversations (
    tenant_id        text        NOT NULL,
    conversation_id  uuid        NOT NULL,
    title            text        NOT NULL,
    origin           text        NOT NULL,
    started_by       text        NOT NULL,
    started_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    turn_count       integer     NOT NULL DEFAULT 0,
    version          integer     NOT NULL,
    position         bigint      NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS conversations_newest
    ON conversations (tenant_id, started_at DESC, conversation_id DESC);
CREATE INDEX IF NOT EXISTS conversations_by_starter
    ON conversations (tenant_id, started_by, started_at DESC, conversation_id DESC);

CREATE TABLE IF NOT EXISTS conversation_turns (
    tenant_id        text        NOT NULL,
    conversation_id  uuid        NOT NULL,
    turn             integer     NOT NULL,
    question         text        NOT NULL,
    asked_by         text        NOT NULL,
    asked_at         timestamptz NOT NULL,
    requested_model  text        NOT NULL,
    mode             text        NOT NULL,
    k                integer     NOT NULL,
    flags            jsonb       NOT NULL,
    prompt_sha256    text,
    history_turns    integer     NOT NULL,
    status           text        NOT NULL,   -- pending | answered | failed
    answer           text,
    citations        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    retrieval        jsonb,
    prompt_template  text,
    provider         text,
    model            text,
    parameters       jsonb,
    input_tokens     integer,
    output_tokens    integer,
    cost_usd         numeric,
    latency_ms       double precision,
    attempts         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    failure_code     text,
    failure_reason   text,
    answered_at      timestamptz,
    position         bigint      NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, turn)
);

SELECT kf_protect_tenant_table('conversations');
SELECT kf_protect_tenant_table('conversation_turns');
