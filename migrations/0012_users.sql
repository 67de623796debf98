-- People (the keys read model's second table): who is invited, active or disabled,
-- with which role, and when they last signed in. Never a password hash nor a link.
CREATE TABLE IF NOT EXISTS users (
    tenant_id        text        NOT NULL,
    user_id          uuid        NOT NULL,
    email            text        NOT NULL,
    role             text        NOT NULL,
    status           text        NOT NULL,  -- invited | active | disabled
    invited_by       text        NOT NULL,
    invited_at       timestamptz NOT NULL,
    link_expires_at  timestamptz,           -- the live set-password link's expiry
    password_set_at  timestamptz,
    disabled_at      timestamptz,
    last_sign_in_at  timestamptz,
    sign_ins         bigint      NOT NULL DEFAULT 0,
    position         bigint      NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX IF NOT EXISTS users_newest ON users (tenant_id, invited_at DESC, user_id DESC);

SELECT kf_protect_tenant_table('users');
