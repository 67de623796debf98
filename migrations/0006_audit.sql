-- The audit trail read model: one entry per event of every context, kept by
-- the audit projector in the same transaction as its tracked position. An
-- entry names the fields an event recorded but shows only the values that are
-- neither content nor secrets (see projections/audit/projection.py).
CREATE TABLE IF NOT EXISTS audit_events (
    tenant_id         text        NOT NULL,
    entry_id          uuid        NOT NULL,   -- uuid5 of <context>:<position>
    context           text        NOT NULL,
    position          bigint      NOT NULL,
    occurred_at       timestamptz NOT NULL,
    actor             text        NOT NULL,
    action            text        NOT NULL,   -- the event type, e.g. Document.Uploaded
    resource_type     text        NOT NULL,
    resource_id       uuid        NOT NULL,
    resource_version  integer     NOT NULL,
    request_id        text,
    client_address    text,
    user_agent        text,
    changes           jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, entry_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS audit_events_position ON audit_events (context, position);
CREATE INDEX IF NOT EXISTS audit_events_newest
    ON audit_events (tenant_id, occurred_at DESC, entry_id DESC);
CREATE INDEX IF NOT EXISTS audit_events_by_actor
    ON audit_events (tenant_id, actor, occurred_at DESC, entry_id DESC);
CREATE INDEX IF NOT EXISTS audit_events_by_resource
    ON audit_events (tenant_id, resource_id, occurred_at DESC, entry_id DESC);

-- The role each key was issued with, joined to entries when they are read (an
-- entry never depends on whether its actor's key was projected before it).
CREATE TABLE IF NOT EXISTS audit_actors (
    tenant_id  text    NOT NULL,
    actor      text    NOT NULL,
    role       text    NOT NULL,
    position   bigint  NOT NULL,
    PRIMARY KEY (tenant_id, actor)
);

SELECT kf_protect_tenant_table('audit_events');
SELECT kf_protect_tenant_table('audit_actors');
