-- Flash sales: products, orders (one per user and product), the order
-- outbox (durable until the broker has the event), settlements (one per order).

CREATE TABLE products (
    id         uuid PRIMARY KEY,
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    price      bigint NOT NULL CHECK (price > 0),
    currency   char(3) NOT NULL,
    stock      integer NOT NULL CHECK (stock > 0),
    start_time timestamptz NOT NULL,
    end_time   timestamptz NOT NULL,
    created_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (start_time < end_time)
);

CREATE TABLE orders (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    product_id uuid NOT NULL REFERENCES products (id),
    amount     bigint NOT NULL CHECK (amount > 0),
    currency   char(3) NOT NULL,
    status     text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED')),
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_user_product_key UNIQUE (user_id, product_id)
);
CREATE INDEX orders_product_status_idx ON orders (product_id, status);

-- Written in the order's own transaction; published to order-stream right
-- after, or later by the relay when the broker was unreachable.
CREATE TABLE order_outbox (
    order_id     uuid PRIMARY KEY REFERENCES orders (id),
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX order_outbox_unpublished_idx ON order_outbox (created_at) WHERE published_at IS NULL;

CREATE TABLE settlements (
    id         uuid PRIMARY KEY,
    order_id   uuid NOT NULL REFERENCES orders (id),
    user_id    uuid NOT NULL,
    product_id uuid NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    currency   char(3) NOT NULL,
    settled_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT settlements_order_key UNIQUE (order_id)
);
CREATE INDEX settlements_user_idx ON settlements (user_id, settled_at DESC, id DESC);
CREATE INDEX settlements_product_idx ON settlements (product_id, settled_at DESC, id DESC);
CREATE INDEX settlements_time_idx ON settlements (settled_at DESC, id DESC);
