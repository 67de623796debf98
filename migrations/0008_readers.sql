-- Who was shown which document (the readers read model): one row per read (or
-- answer) and document, kept by the readers projector with its position.
CREATE TABLE IF NOT EXISTS document_reads (
    tenant_id     text        NOT NULL,
    read_id       uuid        NOT NULL,   -- uuid5 of <context>:<position> of the event
    document_id   uuid        NOT NULL,
    actor         text        NOT NULL,
    route         text        NOT NULL,   -- search, document, transcript, prompt, answer, ...
    occurred_at   timestamptz NOT NULL,
    context       text        NOT NULL,
    position      bigint      NOT NULL,
    PRIMARY KEY (tenant_id, read_id, document_id)
);
CREATE INDEX IF NOT EXISTS document_reads_by_document
    ON document_reads (tenant_id, document_id, occurred_at);

-- Who asked each turn, and where each conversation came from, so that an
-- answer's passages are attributed to the person who asked.
CREATE TABLE IF NOT EXISTS reader_turns (
    tenant_id        text    NOT NULL,
    conversation_id  uuid    NOT NULL,
    turn             integer NOT NULL,
    actor            text    NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, turn)
);
CREATE TABLE IF NOT EXISTS reader_conversations (
    tenant_id        text    NOT NULL,
    conversation_id  uuid    NOT NULL,
    origin           text    NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);

-- Reading a recorded query's text checks that a read of the tenant carries its digest.
CREATE INDEX IF NOT EXISTS audit_events_query_digest
    ON audit_events (tenant_id, ((changes -> 'values' ->> 'query_sha256')))
    WHERE action = 'Read.Recorded';

SELECT kf_protect_tenant_table('document_reads');
SELECT kf_protect_tenant_table('reader_turns');
SELECT kf_protect_tenant_table('reader_conversations');
