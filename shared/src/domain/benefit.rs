//! Benefit math: what a card would have earned on a payment, and whether
//! another of the payer's cards would have earned enough more to say so.

use uuid::Uuid;

/// Where a rule applies.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    Everywhere,
    Category(String),
    Merchant(Uuid),
}

/// A card product's benefit rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub scope: Scope,
    /// Basis points (1/100 %), 0..=10_000.
    pub rate_bp: i32,
    /// Largest benefit per payment, minor units of `currency`.
    pub cap_minor: i64,
    pub currency: String,
}

/// The payment as the rules see it.
pub struct Purchase<'a> {
    pub merchant_id: Uuid,
    pub category: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
}

impl Rule {
    pub fn applies(&self, p: &Purchase<'_>) -> bool {
        self.currency == p.currency
            && match &self.scope {
                Scope::Everywhere => true,
                Scope::Category(c) => c == p.category,
                Scope::Merchant(m) => *m == p.merchant_id,
            }
    }

    /// floor(amount × rate / 10 000), capped. Integer math only.
    pub fn benefit(&self, amount_minor: i64) -> i64 {
        debug_assert!((0..=10_000).contains(&self.rate_bp) && self.cap_minor >= 0 && amount_minor >= 0);
        let raw = i128::from(amount_minor) * i128::from(self.rate_bp) / 10_000;
        raw.min(i128::from(self.cap_minor)) as i64
    }
}

/// What a card earns: the best of its product's rules that apply.
pub fn card_benefit(rules: &[Rule], p: &Purchase<'_>) -> i64 {
    rules.iter().filter(|r| r.applies(p)).map(|r| r.benefit(p.amount_minor)).max().unwrap_or(0)
}

/// A better card the payer holds, and how much more it would have earned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tip<C> {
    pub card: C,
    pub missed_minor: i64,
}

/// Compares the card used with the payer's other cards; a tip when the best
/// other card earns at least `min_gain_minor` more (ties: the first listed).
pub fn better_card<'c, C>(used: i64, others: impl IntoIterator<Item = (&'c C, i64)>, min_gain_minor: i64) -> Option<Tip<&'c C>> {
    let mut best: Option<(&C, i64)> = None;
    for (card, earned) in others {
        if best.is_none_or(|(_, b)| earned > b) {
            best = Some((card, earned));
        }
    }
    let (card, earned) = best?;
    let missed = earned - used;
    (missed > 0 && missed >= min_gain_minor).then_some(Tip { card, missed_minor: missed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(scope: Scope, rate_bp: i32, cap_minor: i64) -> Rule {
        Rule { scope, rate_bp, cap_minor, currency: "KRW".into() }
    }

    fn cafe(amount: i64) -> Purchase<'static> {
        Purchase { merchant_id: Uuid::nil(), category: "cafe", amount_minor: amount, currency: "KRW" }
    }

    #[test]
    fn one_percent_everywhere_versus_five_percent_at_cafes() {
        let a = [rule(Scope::Everywhere, 100, 1_000_000)];
        let b = [rule(Scope::Category("cafe".into()), 500, 2_000)];
        assert_eq!(card_benefit(&a, &cafe(10_000)), 100);
        assert_eq!(card_benefit(&b, &cafe(10_000)), 500);
        let tip = better_card(100, [(&"B", 500)], 1).unwrap();
        assert_eq!((tip.card, tip.missed_minor), (&"B", 400));
        // Paying with B: A earns less, no tip.
        assert_eq!(better_card(500, [(&"A", 100)], 1), None);
    }

    #[test]
    fn caps_scopes_and_currencies() {
        let b = [rule(Scope::Category("cafe".into()), 500, 2_000)];
        assert_eq!(card_benefit(&b, &cafe(1_000_000)), 2_000, "capped");
        let other_category = Purchase { category: "fuel", ..cafe(10_000) };
        assert_eq!(card_benefit(&b, &other_category), 0);
        let usd = Purchase { currency: "USD", ..cafe(10_000) };
        assert_eq!(card_benefit(&b, &usd), 0, "a KRW rule says nothing about USD");
        let shop = Uuid::new_v4();
        let m = [rule(Scope::Merchant(shop), 1_000, 10_000)];
        assert_eq!(card_benefit(&m, &Purchase { merchant_id: shop, ..cafe(10_000) }), 1_000);
        assert_eq!(card_benefit(&m, &cafe(10_000)), 0);
        let both = [rule(Scope::Everywhere, 100, 10_000), rule(Scope::Category("cafe".into()), 300, 10_000)];
        assert_eq!(card_benefit(&both, &cafe(10_000)), 300, "the best applicable rule");
    }

    #[test]
    fn small_gains_are_not_worth_a_tip() {
        assert_eq!(better_card(100, [(&"B", 150)], 100), None);
        assert_eq!(better_card(100, [(&"B", 200)], 100).map(|t| t.missed_minor), Some(100));
        assert_eq!(better_card::<&str>(100, [], 1), None);
    }

    proptest! {
        #[test]
        fn benefit_is_bounded_by_cap_and_amount(amount in 0i64..1_000_000_000_000, rate in 0i32..=10_000, cap in 0i64..1_000_000_000) {
            let r = rule(Scope::Everywhere, rate, cap);
            let b = r.benefit(amount);
            prop_assert!(b >= 0 && b <= cap && b <= amount);
            prop_assert!(r.benefit(amount + 1) >= b, "monotone in amount");
        }

        #[test]
        fn a_tip_is_always_a_real_gain(used in 0i64..100_000, others in proptest::collection::vec(0i64..100_000, 0..5), min_gain in 1i64..1_000) {
            let cards: Vec<usize> = (0..others.len()).collect();
            let tip = better_card(used, cards.iter().zip(others.iter().copied()), min_gain);
            match tip {
                Some(t) => {
                    prop_assert!(t.missed_minor >= min_gain);
                    prop_assert_eq!(others[*t.card] - used, t.missed_minor);
                    prop_assert_eq!(others[*t.card], *others.iter().max().unwrap());
                }
                None => prop_assert!(others.iter().all(|o| o - used < min_gain)),
            }
        }
    }
}
