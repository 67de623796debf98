-- Tenant isolation in depth, and the API-key read model.
--
-- The query API reads read models as the role kf_reader: not a superuser, not
-- the tables' owner, no BYPASSRLS. Every tenant-scoped table has row-level
-- security whose policy admits only rows of the tenant named by the
-- transaction-local setting kf.tenant_id, so a query that forgets its tenant
-- condition still sees only the caller's rows (and with no setting, none).
-- Projectors write as the owner, which RLS does not restrict (not FORCEd).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kf_reader') THEN
        CREATE ROLE kf_reader LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO kf_reader;

-- One definition of "protected", used here and by rebuilds for the tables
-- they build beside the live ones (CREATE TABLE ... LIKE copies no policies).
CREATE OR REPLACE FUNCTION kf_protect_tenant_table(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s FOR SELECT TO kf_reader'
        ' USING (tenant_id = current_setting(''kf.tenant_id'', true))',
        target
    );
    EXECUTE format('GRANT SELECT ON %s TO kf_reader', target);
END
$$;

-- API keys as an admin lists them: never the secret, nor its hash.
CREATE TABLE IF NOT EXISTS api_keys (
    tenant_id    text        NOT NULL,
    key_id       uuid        NOT NULL,
    name         text        NOT NULL,
    role         text        NOT NULL,
    issued_by    text        NOT NULL,
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_by   text,
    revoked_at   timestamptz,
    position     bigint      NOT NULL,
    PRIMARY KEY (tenant_id, key_id)
);
CREATE INDEX IF NOT EXISTS api_keys_newest ON api_keys (tenant_id, issued_at DESC, key_id DESC);

SELECT kf_protect_tenant_table('blobs');
SELECT kf_protect_tenant_table('catalog_documents');
SELECT kf_protect_tenant_table('search_documents');
SELECT kf_protect_tenant_table('fulltext_documents');
SELECT kf_protect_tenant_table('fulltext_chunks');
SELECT kf_protect_tenant_table('api_keys');
