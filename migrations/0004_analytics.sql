-- Loyalty (visits, per-pair counts, VIPs) and benefit tips.

-- One row per payment: the durable record of a visit.
CREATE TABLE loyalty_visits (
    payment_id  uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    merchant_id uuid NOT NULL,
    visited_at  timestamptz NOT NULL
);
CREATE INDEX loyalty_visits_pair_idx ON loyalty_visits (merchant_id, user_id);

-- Visits per (customer, merchant): the truth Redis mirrors.
CREATE TABLE loyalty_counts (
    merchant_id uuid NOT NULL,
    user_id     uuid NOT NULL,
    visits      integer NOT NULL CHECK (visits > 0),
    PRIMARY KEY (merchant_id, user_id)
);
CREATE INDEX loyalty_counts_top_idx ON loyalty_counts (merchant_id, visits DESC);

-- A customer becomes a merchant's VIP once.
CREATE TABLE loyalty_vips (
    merchant_id uuid NOT NULL,
    user_id     uuid NOT NULL,
    visits      integer NOT NULL,
    became_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, user_id)
);
CREATE INDEX loyalty_vips_recent_idx ON loyalty_vips (merchant_id, became_at DESC);

-- At most one tip per payment.
CREATE TABLE benefit_tips (
    payment_id     uuid PRIMARY KEY,
    user_id        uuid NOT NULL,
    merchant_id    uuid NOT NULL,
    used_card_id   uuid NOT NULL,
    better_card_id uuid NOT NULL,
    missed_amount  bigint NOT NULL CHECK (missed_amount > 0),
    currency       char(3) NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX benefit_tips_merchant_idx ON benefit_tips (merchant_id);
