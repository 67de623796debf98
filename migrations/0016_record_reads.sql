-- A batch of recorded reads appended in one statement (infra.blobs.ReadsRecorder).
--
-- The hottest append there is, one per read served: what the library's append and
-- the reads' texts took as eight statements in a pipeline (BEGIN, the subjects'
-- locks, the sealed texts, the plain texts, the lock timeout, the table lock, the
-- notification, the events' insert, COMMIT) is one call, run by an autocommit
-- connection as a transaction of its own. The same statements in the same order
-- and transaction: each statement of a volatile function takes a new snapshot, so
-- the sealed texts' statement, run once the subjects' shared locks are held, sees
-- any erasure that committed before (crypto.destroy_keys takes the same lock
-- exclusively; docs/erasure.md); the table is locked before the insert, so
-- notification ids commit in order. A failed statement fails the call and the
-- transaction: nothing is written.
CREATE OR REPLACE FUNCTION kf_record_reads(
    -- the events (the library's columns)
    in_ids uuid[], in_versions bigint[], in_topics text[], in_states bytea[],
    -- texts stored in the clear (reads that showed no document)
    in_plain_tenants text[], in_plain_digests text[], in_plain_sizes bigint[], in_plain_contents bytea[],
    -- sealed texts, each with its data key (wrapped by the master key) and what it quotes
    in_key_ids text[], in_key_tenants text[], in_wrapped bytea[],
    in_sealed_digests text[], in_sealed_sizes bigint[], in_sealed_contents bytea[],
    in_master_key text, in_quoting text[], in_quoted text[],
    -- the quoted subjects' keys to lock (sorted, distinct), and the insert lock's timeout
    in_locked text[], in_insert_lock_timeout text
) RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF cardinality(in_locked) > 0 THEN
        PERFORM count(pg_advisory_xact_lock_shared(hashtext(k)))
        FROM unnest(in_locked) AS l (k);
    END IF;
    IF cardinality(in_plain_digests) > 0 THEN
        INSERT INTO blobs (tenant_id, key_id, sha256, size_bytes, content)
        SELECT t, '', d, s, c FROM unnest(in_plain_tenants, in_plain_digests, in_plain_sizes, in_plain_contents)
            AS p (t, d, s, c)
        ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(in_key_ids) > 0 THEN
        -- A read that quotes an erased subject keeps its record but stores no text.
        WITH made AS (
            SELECT * FROM unnest(
                in_key_ids, in_key_tenants, in_wrapped, in_sealed_digests, in_sealed_sizes, in_sealed_contents
            ) AS m (key_id, tenant_id, wrapped, sha256, size_bytes, content)
        ), quotes AS (
            SELECT * FROM unnest(in_quoting, in_quoted) AS q (key_id, quoted_key)
        ), kept AS (
            SELECT * FROM made WHERE NOT EXISTS (
                SELECT 1 FROM quotes JOIN erased_keys e ON e.key_id = quotes.quoted_key
                WHERE quotes.key_id = made.key_id
            )
        ), new_keys AS (
            INSERT INTO data_keys (key_id, tenant_id, wrapped, master_key_id)
            SELECT kept.key_id, kept.tenant_id, kept.wrapped, in_master_key FROM kept
        ), new_quotes AS (
            INSERT INTO data_key_quotes (key_id, quoted_key)
            SELECT quotes.key_id, quotes.quoted_key FROM quotes JOIN kept USING (key_id)
        )
        INSERT INTO blobs (tenant_id, key_id, sha256, size_bytes, content)
        SELECT kept.tenant_id, kept.key_id, kept.sha256, kept.size_bytes, kept.content FROM kept;
    END IF;
    PERFORM set_config('lock_timeout', in_insert_lock_timeout, true);
    LOCK TABLE activity_events IN EXCLUSIVE MODE;
    PERFORM pg_notify('activity_events', '');
    RETURN QUERY
        WITH inserted AS (
            INSERT INTO activity_events (originator_id, originator_version, topic, state)
            SELECT * FROM unnest(in_ids, in_versions, in_topics, in_states)
            RETURNING notification_id
        )
        SELECT notification_id FROM inserted ORDER BY notification_id;
END
$$;
