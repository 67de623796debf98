-- Answers per UTC day, model, provider and latency bucket: usage_daily_latency without
-- the actor. A report not grouped or filtered by key or user (by day and model, the
-- total, by month and provider) reads about (days x models x buckets) rows from here
-- instead of (days x keys x models x buckets) from there: a tenant with many keys
-- would otherwise pay for each of them in every such report.
CREATE TABLE IF NOT EXISTS usage_daily_model_latency (
    tenant_id  text     NOT NULL,
    day        date     NOT NULL,
    model      text     NOT NULL,
    provider   text     NOT NULL,
    bucket     smallint NOT NULL,
    n          bigint   NOT NULL,
    PRIMARY KEY (tenant_id, day, model, provider, bucket)
);

-- What the usage projector has applied so far, summed from the rollup it kept already
-- (the same events: the table starts where the projector stands).
INSERT INTO usage_daily_model_latency (tenant_id, day, model, provider, bucket, n)
SELECT tenant_id, day, model, provider, bucket, sum(n)
FROM usage_daily_latency
GROUP BY tenant_id, day, model, provider, bucket
ON CONFLICT DO NOTHING;

SELECT kf_protect_tenant_table('usage_daily_model_latency');
