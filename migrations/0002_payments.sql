-- Payment intake, the FDS ledger, holders' last accepted locations,
-- SMS verifications, and delivery bookkeeping for the SMS outbox.

-- What `pay` accepted and published (written in the same transaction that
-- waits for the broker's acknowledgement, so a failed publish leaves nothing).
CREATE TABLE payments (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    card_id     uuid NOT NULL REFERENCES cards (id),
    merchant_id uuid NOT NULL REFERENCES merchants (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    currency    char(3) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_user_idx ON payments (user_id, created_at);

-- The FDS ledger: exactly one row per payment.
CREATE TABLE transactions (
    payment_id  uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    card_id     uuid NOT NULL,
    merchant_id uuid NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    currency    char(3) NOT NULL,
    country     char(2) NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    status      text NOT NULL CHECK (status IN ('COMPLETED', 'PENDING', 'DENIED')),
    reason      text,
    occurred_at timestamptz NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transactions_user_idx ON transactions (user_id, occurred_at);

-- The card holder's last accepted payment location (truth for the Redis cache).
CREATE TABLE holder_locations (
    user_id     uuid PRIMARY KEY,
    payment_id  uuid NOT NULL,
    country     char(2) NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    occurred_at timestamptz NOT NULL
);

-- One verification per PENDING payment. Only the SHA-256 of the token is kept.
CREATE TABLE verifications (
    id         uuid PRIMARY KEY,
    payment_id uuid NOT NULL UNIQUE REFERENCES transactions (payment_id),
    user_id    uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    status     text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'APPROVED', 'DENIED', 'EXPIRED')),
    expires_at timestamptz NOT NULL,
    decided_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verifications_pending_idx ON verifications (expires_at) WHERE status = 'PENDING';

-- SMS are written to the outbox in the same transaction as the decision that
-- sends them; a sender then delivers them (SNS on AWS; locally the outbox is
-- the destination) and marks them. `kind` lets rate limits count only
-- verification SMS.
ALTER TABLE sms_outbox
    ADD COLUMN kind text NOT NULL DEFAULT 'VERIFICATION',
    ADD COLUMN delivered_at timestamptz,
    -- A deliverer claims rows before sending, so two never send the same SMS.
    ADD COLUMN claimed_at timestamptz;
CREATE INDEX sms_outbox_user_idx ON sms_outbox (user_id, created_at);
CREATE INDEX sms_outbox_undelivered_idx ON sms_outbox (id) WHERE delivered_at IS NULL;
