-- What a key quotes is written with the key (kf_record_reads, KeyStore.insert_key) and
-- deleted with it (crypto.destroy_keys), in the same transactions; the foreign key's
-- check, a trigger per row, cost every recorded search ten of them (one per document
-- shown), about a fifth of PostgreSQL's share of recording it.
ALTER TABLE data_key_quotes DROP CONSTRAINT IF EXISTS data_key_quotes_key_id_fkey;
