-- Usage (the usage read model): one row per event that is a unit of use, kept by
-- the usage projector with its position. Questions, answers and failed answers
-- (conversations), documents and their processing (documents), searches
-- (activity). Sums over any grouping of these rows add up to the totals.
CREATE TABLE IF NOT EXISTS usage_facts (
    tenant_id         text        NOT NULL,
    context           text        NOT NULL,
    position          bigint      NOT NULL,
    kind              text        NOT NULL,  -- question | answer | failure | document
                                             -- | parsed | chunked | embedded | search
    occurred_at       timestamptz NOT NULL,
    actor             text        NOT NULL,  -- who caused it: key:<id> or jwt:<issuer#subject>
    model             text,                  -- questions: asked for; answers: answered by
    provider          text,
    mode              text,                  -- retrieval mode of a search or question
    document_id       uuid,                  -- ingestion rows
    input_tokens      bigint      NOT NULL DEFAULT 0,
    output_tokens     bigint      NOT NULL DEFAULT 0,
    cached_input_tokens bigint    NOT NULL DEFAULT 0,  -- of the input, from a prompt cache
    cost_usd          numeric,               -- answers: as charged; NULL when unpriced
    price_book_version integer,              -- answers: the book they were charged from
    latency_ms        double precision,      -- answers: provider latency
    documents         integer     NOT NULL DEFAULT 0,
    bytes             bigint      NOT NULL DEFAULT 0,
    pages             bigint      NOT NULL DEFAULT 0,
    chunks            bigint      NOT NULL DEFAULT 0,
    embedding_tokens  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, context, position)
);
CREATE INDEX IF NOT EXISTS usage_facts_by_time ON usage_facts (tenant_id, occurred_at);

-- The same facts summed per UTC day and everything a report groups by: a month's report
-- reads about (days x keys x models) rows instead of every fact. Text dimensions use ''
-- for "none" (a primary key has no NULLs).
CREATE TABLE IF NOT EXISTS usage_daily (
    tenant_id            text    NOT NULL,
    day                  date    NOT NULL,
    kind                 text    NOT NULL,
    actor                text    NOT NULL,
    model                text    NOT NULL,
    provider             text    NOT NULL,
    mode                 text    NOT NULL,
    document_id          text    NOT NULL,
    n                    bigint  NOT NULL,
    input_tokens         bigint  NOT NULL,
    output_tokens        bigint  NOT NULL,
    cached_input_tokens  bigint  NOT NULL,
    cost_usd             numeric NOT NULL,   -- as charged, priced answers only
    unpriced             bigint  NOT NULL,   -- answers without a price
    documents            bigint  NOT NULL,
    bytes                bigint  NOT NULL,
    pages                bigint  NOT NULL,
    chunks               bigint  NOT NULL,
    embedding_tokens     bigint  NOT NULL,
    PRIMARY KEY (tenant_id, day, kind, actor, model, provider, mode, document_id)
);

-- Answers per UTC day, group and latency bucket (buckets 5% wide, only those with
-- answers: projections/usage/latency.py): percentiles to within 2.5%.
CREATE TABLE IF NOT EXISTS usage_daily_latency (
    tenant_id  text     NOT NULL,
    day        date     NOT NULL,
    actor      text     NOT NULL,
    model      text     NOT NULL,
    provider   text     NOT NULL,
    bucket     smallint NOT NULL,
    n          bigint   NOT NULL,
    PRIMARY KEY (tenant_id, day, actor, model, provider, bucket)
);

-- Who asked each turn (an answer is the asker's use, though the answerer records it),
-- and who uploaded each document (its processing is the uploader's use).
CREATE TABLE IF NOT EXISTS usage_turns (
    tenant_id        text    NOT NULL,
    conversation_id  uuid    NOT NULL,
    turn             integer NOT NULL,
    actor            text    NOT NULL,
    model            text    NOT NULL,
    mode             text    NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, turn)
);
CREATE TABLE IF NOT EXISTS usage_documents (
    tenant_id    text NOT NULL,
    document_id  uuid NOT NULL,
    actor        text NOT NULL,
    PRIMARY KEY (tenant_id, document_id)
);

SELECT kf_protect_tenant_table('usage_facts');
SELECT kf_protect_tenant_table('usage_daily');
SELECT kf_protect_tenant_table('usage_daily_latency');
SELECT kf_protect_tenant_table('usage_turns');
SELECT kf_protect_tenant_table('usage_documents');

-- Every price any version of a tenant's book held (replaced ones too): the book at
-- version V is, per (provider, model, effective_from), the entry with the highest
-- (set_in_version, ordinal) not above V. model_like is the model's glob as a LIKE pattern.
CREATE TABLE IF NOT EXISTS usage_price_entries (
    tenant_id                 text        NOT NULL,
    set_in_version            integer     NOT NULL,
    ordinal                   integer     NOT NULL,  -- order within the event that set it
    provider                  text        NOT NULL,  -- * : any provider
    model                     text        NOT NULL,
    model_like                text        NOT NULL,
    effective_from            timestamptz NOT NULL,
    input_per_million         numeric     NOT NULL,
    output_per_million        numeric     NOT NULL,
    cached_input_per_million  numeric,
    currency                  text        NOT NULL,
    PRIMARY KEY (tenant_id, set_in_version, ordinal)
);

-- Re-pricing runs, and each answer's cost at the run's price book version (NULL: the
-- model had no price in that version), beside what it was charged (usage_facts).
CREATE TABLE IF NOT EXISTS usage_repricings (
    tenant_id           text        NOT NULL,
    run_id              uuid        NOT NULL,
    price_book_version  integer     NOT NULL,
    through             bigint      NOT NULL,
    actor               text        NOT NULL,
    reason              text        NOT NULL,
    requested_at        timestamptz NOT NULL,
    position            bigint      NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX IF NOT EXISTS usage_repricings_by_version
    ON usage_repricings (tenant_id, price_book_version, position);
CREATE TABLE IF NOT EXISTS usage_repriced (
    tenant_id  text    NOT NULL,
    run_id     uuid    NOT NULL,
    context    text    NOT NULL,
    position   bigint  NOT NULL,
    cost_usd   numeric,
    PRIMARY KEY (tenant_id, run_id, context, position)
);

SELECT kf_protect_tenant_table('usage_price_entries');
SELECT kf_protect_tenant_table('usage_repricings');
SELECT kf_protect_tenant_table('usage_repriced');
