//! Card products and the benefit rules they carry.

use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::domain::{CardProductId, Currency, MerchantCategory, MerchantId};
use crate::error::AppError;

/// Where a benefit rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleScope {
    Everywhere,
    Category(MerchantCategory),
    Merchant(MerchantId),
}

/// Where a benefit rule applies: `scope` of a [`BenefitRuleView`].
pub mod scope {
    pub const EVERYWHERE: &str = "everywhere";
    pub const CATEGORY: &str = "category";
    pub const MERCHANT: &str = "merchant";
}

/// Every [`scope`].
pub const SCOPES: &[&str] = &[scope::EVERYWHERE, scope::CATEGORY, scope::MERCHANT];

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BenefitRule)]
pub struct BenefitRuleView {
    #[schema(schema_with = crate::api::responses::benefit_scope)]
    pub scope: &'static str,
    /// Present when scope is category.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::responses::category)]
    pub merchant_category: Option<String>,
    /// Present when scope is merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub merchant_id: Option<Uuid>,
    /// Rate in basis points (1/100 of a percent).
    #[schema(minimum = 0, maximum = 10000)]
    pub rate_bp: i32,
    /// Largest benefit one payment can earn, in minor units of `currency`.
    pub cap_amount: i64,
    #[schema(schema_with = crate::api::responses::currency)]
    pub currency: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CardProduct)]
pub struct CardProductView {
    pub card_product_id: Uuid,
    pub name: String,
    pub issuer: String,
    pub benefit_rules: Vec<BenefitRuleView>,
}

/// Every card product with its rules (a small, admin-curated list).
pub async fn list_with_rules(db: &impl GenericClient) -> Result<Vec<CardProductView>, AppError> {
    let products = db.query("SELECT id, name, issuer FROM card_products ORDER BY name", &[]).await?;
    let rules = db
        .query(
            "SELECT card_product_id, merchant_category, merchant_id, rate_bp, cap_minor, currency
             FROM benefit_rules ORDER BY card_product_id, rate_bp DESC, id",
            &[],
        )
        .await?;
    let mut views: Vec<CardProductView> = products
        .iter()
        .map(|p| CardProductView { card_product_id: p.get(0), name: p.get(1), issuer: p.get(2), benefit_rules: Vec::new() })
        .collect();
    for rule in rules {
        let product: Uuid = rule.get(0);
        let category: Option<String> = rule.get(1);
        let merchant: Option<Uuid> = rule.get(2);
        let scope = match (&category, &merchant) {
            (Some(_), _) => scope::CATEGORY,
            (None, Some(_)) => scope::MERCHANT,
            (None, None) => scope::EVERYWHERE,
        };
        if let Some(view) = views.iter_mut().find(|v| v.card_product_id == product) {
            view.benefit_rules.push(BenefitRuleView {
                scope,
                merchant_category: category,
                merchant_id: merchant,
                rate_bp: rule.get(3),
                cap_amount: rule.get(4),
                currency: rule.get::<_, String>(5),
            });
        }
    }
    Ok(views)
}

pub async fn exists(db: &impl GenericClient, id: CardProductId) -> Result<bool, AppError> {
    Ok(db.query_opt("SELECT 1 FROM card_products WHERE id = $1", &[&id.0]).await?.is_some())
}

/// Inserts or keeps a product with a fixed id (seeding is repeatable).
pub async fn upsert(db: &impl GenericClient, id: CardProductId, name: &str, issuer: &str) -> Result<(), AppError> {
    db.execute(
        "INSERT INTO card_products (id, name, issuer) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        &[&id.0, &name, &issuer],
    )
    .await?;
    Ok(())
}

/// Inserts or keeps a rule with a fixed id.
pub async fn upsert_rule(
    db: &impl GenericClient,
    rule_id: Uuid,
    product: CardProductId,
    scope: RuleScope,
    rate_bp: i32,
    cap_minor: i64,
    currency: Currency,
) -> Result<(), AppError> {
    assert!((0..=10_000).contains(&rate_bp), "rate in basis points");
    let (category, merchant) = match scope {
        RuleScope::Everywhere => (None, None),
        RuleScope::Category(c) => (Some(c.as_str()), None),
        RuleScope::Merchant(m) => (None, Some(m.0)),
    };
    db.execute(
        "INSERT INTO benefit_rules (id, card_product_id, merchant_category, merchant_id, rate_bp, cap_minor, currency)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        &[&rule_id, &product.0, &category, &merchant, &rate_bp, &cap_minor, &currency.code()],
    )
    .await?;
    Ok(())
}
