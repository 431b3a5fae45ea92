-- Accounts, cards, card products with benefit rules, merchants, notifications,
-- the local SMS outbox, idempotency keys and processed events.
-- Constraints carry the invariants; the code relies on them.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL,
    email         text NOT NULL,
    password_hash text NOT NULL,
    phone         text NOT NULL,
    role          text NOT NULL CHECK (role IN ('USER', 'MERCHANT', 'ADMIN')),
    -- LOCKED: the holder denied a suspicious payment; FDS denies until unlocked.
    status        text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'LOCKED')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email),
    CHECK (username = lower(username) AND email = lower(email))
);

CREATE TABLE card_products (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    issuer     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE merchants (
    id            uuid PRIMARY KEY,
    owner_id      uuid NOT NULL REFERENCES users (id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
    category      text NOT NULL,
    country       char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    lat           double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon           double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    vip_threshold integer NOT NULL DEFAULT 10 CHECK (vip_threshold > 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchants_owner_idx ON merchants (owner_id);

-- A rule applies to one merchant, to one category, or (both NULL) everywhere.
CREATE TABLE benefit_rules (
    id                uuid PRIMARY KEY,
    card_product_id   uuid NOT NULL REFERENCES card_products (id),
    merchant_category text,
    merchant_id       uuid REFERENCES merchants (id),
    rate_bp           integer NOT NULL CHECK (rate_bp BETWEEN 0 AND 10000),
    cap_minor         bigint NOT NULL CHECK (cap_minor >= 0),
    currency          char(3) NOT NULL,
    CHECK (merchant_category IS NULL OR merchant_id IS NULL)
);
CREATE INDEX benefit_rules_product_idx ON benefit_rules (card_product_id);

CREATE TABLE cards (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id),
    card_product_id uuid NOT NULL REFERENCES card_products (id),
    last4           char(4) NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    -- HMAC-SHA256 of the PAN under PAN_FINGERPRINT_KEY; the PAN itself is never stored.
    fingerprint     bytea NOT NULL CHECK (length(fingerprint) = 32),
    expiry_month    smallint NOT NULL CHECK (expiry_month BETWEEN 1 AND 12),
    expiry_year     smallint NOT NULL CHECK (expiry_year BETWEEN 2000 AND 2099),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cards_user_fingerprint_key UNIQUE (user_id, fingerprint)
);
CREATE INDEX cards_user_idx ON cards (user_id, created_at);

CREATE TABLE notifications (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    kind       text NOT NULL,
    payload    jsonb NOT NULL,
    -- Consumers derive this from the event id, so a redelivered event cannot
    -- notify twice.
    dedupe_key text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC, id DESC);

-- Local stand-in for SNS: tests and the demo read SMS from here.
CREATE TABLE sms_outbox (
    id         bigserial PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    phone      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Stripe-style idempotency: (scope, key) -> the first response.
CREATE TABLE idempotency_keys (
    scope         text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status_code   smallint,
    response_body jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Events a consumer has already applied, for exactly-once effects under
-- at-least-once delivery.
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
