//! Demo and seed data: card products with benefit rules, merchants in six
//! countries, the admin, a merchant owner and demo users with cards.
//! Fixed ids and "insert if missing" make seeding repeatable.

use uuid::{uuid, Uuid};

use crate::auth::hash_password;
use crate::config::Config;
use crate::db::PgPool;
use crate::domain::{
    CardExpiry, CardId, CardNumber, CardProductId, Coordinates, CountryCode, Currency, Email, MerchantCategory, MerchantId, Password,
    Phone, Role, UserId, Username, VipThreshold,
};
use crate::error::{AppError, ErrorCode};
use crate::secret::Secret;
use crate::store::card_products::{self, RuleScope};
use crate::store::{cards, merchants, users};

/// Password of the demo users (never of the admin, and never used on AWS).
pub const DEMO_USER_PASSWORD: &str = "demo-password";
pub const ADMIN_USERNAME: &str = "admin";

pub const EVERYDAY: CardProductId = CardProductId(uuid!("00000000-0000-4000-8000-00000000c001"));
pub const CAFE_LOVER: CardProductId = CardProductId(uuid!("00000000-0000-4000-8000-00000000c002"));
pub const GLOBETROTTER: CardProductId = CardProductId(uuid!("00000000-0000-4000-8000-00000000c003"));
pub const GROCERY_PLUS: CardProductId = CardProductId(uuid!("00000000-0000-4000-8000-00000000c004"));

pub const SEOUL_CAFE: MerchantId = MerchantId(uuid!("00000000-0000-4000-8000-00000000a001"));
pub const BUSAN_GRILL: MerchantId = MerchantId(uuid!("00000000-0000-4000-8000-00000000a002"));
pub const PARIS_CAFE: MerchantId = MerchantId(uuid!("00000000-0000-4000-8000-00000000a003"));
pub const NEW_YORK_DELI: MerchantId = MerchantId(uuid!("00000000-0000-4000-8000-00000000a004"));
pub const TOKYO_MART: MerchantId = MerchantId(uuid!("00000000-0000-4000-8000-00000000a005"));
pub const LONDON_TRAVEL: MerchantId = MerchantId(uuid!("00000000-0000-4000-8000-00000000a006"));

struct DemoMerchant {
    id: MerchantId,
    name: &'static str,
    category: MerchantCategory,
    country: &'static str,
    lat: f64,
    lon: f64,
}

const MERCHANTS: &[DemoMerchant] = &[
    DemoMerchant { id: SEOUL_CAFE, name: "Seoul Bean Cafe", category: MerchantCategory::Cafe, country: "KR", lat: 37.5665, lon: 126.9780 },
    DemoMerchant { id: BUSAN_GRILL, name: "Busan Harbor Grill", category: MerchantCategory::Restaurant, country: "KR", lat: 35.1796, lon: 129.0756 },
    DemoMerchant { id: PARIS_CAFE, name: "Paris Croissant", category: MerchantCategory::Cafe, country: "FR", lat: 48.8566, lon: 2.3522 },
    DemoMerchant { id: NEW_YORK_DELI, name: "New York Deli", category: MerchantCategory::Restaurant, country: "US", lat: 40.7128, lon: -74.0060 },
    DemoMerchant { id: TOKYO_MART, name: "Tokyo Mart", category: MerchantCategory::Convenience, country: "JP", lat: 35.6762, lon: 139.6503 },
    DemoMerchant { id: LONDON_TRAVEL, name: "London Travel Co", category: MerchantCategory::Travel, country: "GB", lat: 51.5074, lon: -0.1278 },
];

pub const ADMIN_ID: UserId = UserId(uuid!("00000000-0000-4000-8000-0000000000ad"));
pub const MERCHANT_OWNER_ID: UserId = UserId(uuid!("00000000-0000-4000-8000-0000000000e0"));
pub const ALICE: UserId = UserId(uuid!("00000000-0000-4000-8000-0000000000a1"));
pub const BOB: UserId = UserId(uuid!("00000000-0000-4000-8000-0000000000b0"));
pub const ALICE_EVERYDAY_CARD: CardId = CardId(uuid!("00000000-0000-4000-8000-0000000ca401"));
pub const ALICE_CAFE_CARD: CardId = CardId(uuid!("00000000-0000-4000-8000-0000000ca402"));
pub const BOB_GLOBETROTTER_CARD: CardId = CardId(uuid!("00000000-0000-4000-8000-0000000cb001"));

/// A demo user and the cards (test PANs) they hold. Fixed ids, so sample
/// events can name them.
pub struct DemoUser {
    pub id: UserId,
    pub username: &'static str,
    pub phone: &'static str,
    pub cards: &'static [(CardId, CardProductId, &'static str)],
}

pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        id: ALICE,
        username: "alice",
        phone: "+821000000001",
        cards: &[(ALICE_EVERYDAY_CARD, EVERYDAY, "4111111111111111"), (ALICE_CAFE_CARD, CAFE_LOVER, "5555555555554444")],
    },
    DemoUser { id: BOB, username: "bob", phone: "+821000000002", cards: &[(BOB_GLOBETROTTER_CARD, GLOBETROTTER, "4012888888881881")] },
];
pub const DEMO_MERCHANT_OWNER: &str = "merchant_demo";

#[derive(Debug, Default)]
pub struct SeedSummary {
    pub card_products: usize,
    pub merchants: usize,
    pub users: usize,
    pub cards: usize,
}

/// Seeds everything; run it as often as you like.
pub async fn seed(pg: &PgPool, config: &Config, admin_password: &Secret) -> Result<SeedSummary, AppError> {
    let db = pg.get().await?;
    let db = &**db;
    let mut summary = SeedSummary::default();
    let krw = Currency::parse("KRW")?;
    let products: [(CardProductId, &str, &[(u128, RuleScope, i32, i64)]); 4] = [
        (EVERYDAY, "Everyday 1%", &[(0xb001, RuleScope::Everywhere, 100, 10_000)]),
        (
            CAFE_LOVER,
            "Cafe Lover",
            &[(0xb002, RuleScope::Category(MerchantCategory::Cafe), 500, 2_000), (0xb003, RuleScope::Everywhere, 20, 1_000)],
        ),
        (
            GLOBETROTTER,
            "Globetrotter",
            &[
                (0xb004, RuleScope::Category(MerchantCategory::Travel), 300, 30_000),
                (0xb005, RuleScope::Category(MerchantCategory::Restaurant), 200, 5_000),
            ],
        ),
        (
            GROCERY_PLUS,
            "Grocery Plus",
            &[
                (0xb006, RuleScope::Category(MerchantCategory::Grocery), 400, 5_000),
                (0xb007, RuleScope::Category(MerchantCategory::Convenience), 300, 3_000),
            ],
        ),
    ];
    for (id, name, rules) in products {
        card_products::upsert(db, id, name, "paystream demo bank").await?;
        for (rule_id, scope, rate_bp, cap) in rules {
            card_products::upsert_rule(db, Uuid::from_u128(*rule_id), id, *scope, *rate_bp, *cap, krw).await?;
        }
        summary.card_products += 1;
    }

    ensure_user(pg, ADMIN_ID, ADMIN_USERNAME, "+821000000000", Role::Admin, admin_password).await?;
    let owner =
        ensure_user(pg, MERCHANT_OWNER_ID, DEMO_MERCHANT_OWNER, "+821000000009", Role::Merchant, &Secret::new(DEMO_USER_PASSWORD)).await?;
    summary.users += 2;
    for m in MERCHANTS {
        let merchant = merchants::NewMerchant {
            owner,
            name: m.name,
            category: m.category,
            country: CountryCode::parse(m.country)?,
            location: Coordinates::parse(m.lat, m.lon)?,
            vip_threshold: VipThreshold::parse(None)?,
        };
        merchants::insert(db, m.id, &merchant).await?;
        summary.merchants += 1;
    }

    let far_future = CardExpiry { month: 12, year: 2099 };
    for user in DEMO_USERS {
        let user_id = ensure_user(pg, user.id, user.username, user.phone, Role::User, &Secret::new(DEMO_USER_PASSWORD)).await?;
        summary.users += 1;
        for (card_id, product, pan) in user.cards {
            let pan = CardNumber::parse(&Secret::new(*pan))?;
            let card = cards::NewCard {
                user_id,
                card_product_id: *product,
                last4: &pan.last4(),
                fingerprint: &pan.fingerprint(config.auth.pan_key()?),
                expiry: far_future,
            };
            match cards::insert(db, *card_id, &card).await {
                Ok(_) => summary.cards += 1,
                Err(e) if e.code == ErrorCode::CardAlreadyRegistered => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(summary)
}

/// Creates the user with id `id` when the username is free (email
/// `<username>@paystream.local`) and returns the username's id. This is also
/// the operator's way to create an admin.
pub async fn ensure_user(pg: &PgPool, id: UserId, username: &str, phone: &str, role: Role, password: &Secret) -> Result<UserId, AppError> {
    let db = pg.get().await?;
    let username = Username::parse(username)?;
    if let Some(id) = users::find_id(&**db, &username).await? {
        return Ok(id);
    }
    let email = Email::parse(&format!("{}@paystream.local", username.as_str()))?;
    let phone = Phone::parse(phone)?;
    let password = Password::parse(password.clone())?;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(AppError::internal)??;
    match users::insert(&**db, id, &users::NewUser { username: &username, email: &email, password_hash: &hash, phone: &phone, role }).await {
        Ok(id) => Ok(id),
        // Lost a race with a concurrent seeder: the user exists now.
        Err(e) if e.code == ErrorCode::UsernameTaken => {
            users::find_id(&**db, &username).await?.ok_or_else(|| AppError::internal(e))
        }
        Err(e) => Err(e),
    }
}
