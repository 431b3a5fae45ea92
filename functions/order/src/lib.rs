//! `order`: flash-sale products and orders.
//!
//! An order is decided by one atomic Redis script (window, one per user,
//! stock); a reservation becomes an order only once PostgreSQL holds it
//! together with its outbox row, and only then is 202 answered. The event
//! is published to `order-stream` right away, in a batch with the other
//! invocations' events ([`publisher`]); if the broker does not take it, the
//! outbox keeps it and the scheduled relay publishes it when the broker is
//! back. So an accepted order is never lost,
//! and a broker outage does not stop sales. The same schedule returns
//! reservations whose request died before its order was committed.

mod orders;
mod products;
pub mod publisher;
mod recorder;
pub mod relay;

pub use relay::RelayReport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use paystream::http::{self, method_not_allowed, no_route, HttpApi, Request, Response, ScheduledJob};
use paystream::store::products::Product;
use paystream::{AppError, Platform};

/// Most products kept in the in-process cache (products never change once
/// created, so entries never go stale).
const PRODUCT_CACHE_MAX: usize = 10_000;

type ProductCell = Arc<OnceCell<Arc<Product>>>;

pub struct OrderApi {
    pub platform: Arc<Platform>,
    products: Mutex<HashMap<uuid::Uuid, ProductCell>>,
    recorder: paystream::batch::Batcher<recorder::RecordOrders>,
    publisher: publisher::Publisher,
}

impl OrderApi {
    pub fn new(platform: Platform) -> Self {
        let platform = Arc::new(platform);
        let recorder = recorder::RecordOrders { platform: Arc::clone(&platform) };
        Self {
            recorder: paystream::batch::Batcher::new(recorder, paystream::batch::WRITE_STEP),
            publisher: publisher::Publisher::new(Arc::clone(&platform)),
            platform,
            products: Mutex::new(HashMap::new()),
        }
    }

    /// A product, from the in-process cache or PostgreSQL. Concurrent misses
    /// for one product share a single query (a burst must not queue a
    /// thousand identical reads on the pool).
    pub(crate) async fn product(&self, id: uuid::Uuid) -> Result<Arc<Product>, AppError> {
        let cell = {
            let mut cache = self.products.lock().expect("product cache lock");
            if cache.len() >= PRODUCT_CACHE_MAX {
                cache.clear();
            }
            Arc::clone(cache.entry(id).or_default())
        };
        let product = cell
            .get_or_try_init(|| async {
                let found = paystream::store::products::get(&**self.platform.pg.get().await?, id).await?;
                found.map(Arc::new).ok_or_else(|| AppError::not_found("product"))
            })
            .await?;
        Ok(Arc::clone(product))
    }

    /// One relay run (the schedule calls it): returns reservations that
    /// never became orders and publishes what the outbox still holds.
    pub async fn relay(&self) -> Result<RelayReport, AppError> {
        relay::run(&self.platform).await
    }
}

impl HttpApi for OrderApi {
    async fn route(&self, req: Request) -> Result<Response, AppError> {
        match (http::segments(&req).as_slice(), req.method().as_str()) {
            (["products"], "POST") => products::create(self, &req).await,
            (["products"], "GET") => products::list(self, &req).await,
            (["products", id], "GET") => products::get(self, id).await,
            (["orders"], "POST") => orders::create(self, &req).await,
            (["orders", id], "GET") => orders::get(self, &req, id).await,
            (["products"] | ["products", _] | ["orders"] | ["orders", _], _) => Err(method_not_allowed()),
            _ => Err(no_route()),
        }
    }
}

impl ScheduledJob for OrderApi {
    async fn run_scheduled(&self) -> Result<serde_json::Value, AppError> {
        let report = self.relay().await?;
        serde_json::to_value(report).map_err(AppError::internal)
    }
}
