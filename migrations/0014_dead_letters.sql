-- Dead letters (the dead_letters read model): what a worker or a projector gave up on
-- after its attempts, and where it stands (parked, retrying, resolved, dropped).
CREATE TABLE IF NOT EXISTS dead_letters (
    tenant_id      text        NOT NULL,
    letter_id      uuid        NOT NULL,
    component      text        NOT NULL,   -- worker:<stage> | projection:<read model>
    subject        text        NOT NULL,   -- document:<id> | <context>:<position>
    context        text        NOT NULL,   -- of the event that failed
    event_position bigint      NOT NULL,
    event_type     text        NOT NULL,
    aggregate_id   text        NOT NULL,
    attempts       integer     NOT NULL,
    error          text        NOT NULL,
    state          text        NOT NULL,
    parked_at      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    updated_by     text        NOT NULL,
    reason         text        NOT NULL DEFAULT '',
    position       bigint      NOT NULL,   -- of the letter's latest event (activity)
    PRIMARY KEY (tenant_id, letter_id)
);
CREATE INDEX IF NOT EXISTS dead_letters_newest
    ON dead_letters (tenant_id, parked_at DESC, letter_id DESC);
-- Readiness looks for projectors stopped on a letter, across tenants.
CREATE INDEX IF NOT EXISTS dead_letters_open
    ON dead_letters (component) WHERE state IN ('parked', 'retrying');

SELECT kf_protect_tenant_table('dead_letters');
