-- The audit trail's hash chains: per tenant and context, each entry's hash
-- covers the event's stored bytes and the previous entry's hash
-- (projections/audit/chain.py). Entries projected before this migration have
-- no hash until the audit read model is rebuilt (kf rebuild-index --projection audit).
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS chain_index bigint;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS previous_hash text;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS entry_hash text;
CREATE INDEX IF NOT EXISTS audit_events_chain
    ON audit_events (tenant_id, context, chain_index);

-- Where each chain stands: how many entries, the newest one's hash and event.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    tenant_id     text    NOT NULL,
    context       text    NOT NULL,
    entries       bigint  NOT NULL,
    head          text    NOT NULL,
    position      bigint  NOT NULL,
    aggregate_id  uuid    NOT NULL,
    PRIMARY KEY (tenant_id, context)
);

SELECT kf_protect_tenant_table('audit_chain_heads');
