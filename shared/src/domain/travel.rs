//! The impossible-travel rule: a payment far from the holder's last accepted
//! payment, in another country, sooner than a plane could get there.

use time::OffsetDateTime;

/// Mean Earth radius (IUGG), kilometres.
const EARTH_RADIUS_KM: f64 = 6_371.0088;

/// Where and when a payment happened.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentPlace {
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub at: OffsetDateTime,
}

/// Great-circle distance (haversine), kilometres.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let d_phi = (lat2 - lat1).to_radians();
    let d_lambda = (lon2 - lon1).to_radians();
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TravelVerdict {
    /// Plausible (or nothing to compare with).
    Plausible,
    /// Another country, faster than `max_speed_kmh`.
    Impossible { distance_km: f64, speed_kmh: f64 },
}

/// Compares a payment with the holder's last accepted one.
pub fn assess(last: Option<&PaymentPlace>, next: &PaymentPlace, max_speed_kmh: f64) -> TravelVerdict {
    debug_assert!(max_speed_kmh > 0.0);
    let Some(last) = last else { return TravelVerdict::Plausible };
    if last.country == next.country {
        return TravelVerdict::Plausible;
    }
    let distance_km = haversine_km(last.lat, last.lon, next.lat, next.lon);
    let elapsed_h = (next.at - last.at).as_seconds_f64() / 3_600.0;
    // Same instant (or out of order) in two countries: infinitely fast,
    // unless the two places are in fact the same point on a border.
    let speed_kmh = if elapsed_h > 0.0 { distance_km / elapsed_h } else if distance_km > 0.0 { f64::INFINITY } else { 0.0 };
    if speed_kmh > max_speed_kmh {
        TravelVerdict::Impossible { distance_km, speed_kmh }
    } else {
        TravelVerdict::Plausible
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const SEOUL: (f64, f64) = (37.5665, 126.9780);
    const BUSAN: (f64, f64) = (35.1796, 129.0756);
    const PARIS: (f64, f64) = (48.8566, 2.3522);

    fn place(country: &str, (lat, lon): (f64, f64), at: OffsetDateTime) -> PaymentPlace {
        PaymentPlace { country: country.into(), lat, lon, at }
    }

    #[test]
    fn known_distances() {
        let seoul_paris = haversine_km(SEOUL.0, SEOUL.1, PARIS.0, PARIS.1);
        assert!((8_900.0..9_050.0).contains(&seoul_paris), "{seoul_paris}");
        let seoul_busan = haversine_km(SEOUL.0, SEOUL.1, BUSAN.0, BUSAN.1);
        assert!((320.0..330.0).contains(&seoul_busan), "{seoul_busan}");
    }

    #[test]
    fn seoul_then_paris_an_hour_later_is_impossible() {
        let t = datetime!(2026-11-22 09:00 UTC);
        let verdict = assess(Some(&place("KR", SEOUL, t)), &place("FR", PARIS, t + time::Duration::hours(1)), 900.0);
        assert!(matches!(verdict, TravelVerdict::Impossible { speed_kmh, .. } if speed_kmh > 8_000.0));
    }

    #[test]
    fn same_country_first_payment_and_slow_travel_are_plausible() {
        let t = datetime!(2026-11-22 09:00 UTC);
        assert_eq!(assess(None, &place("FR", PARIS, t), 900.0), TravelVerdict::Plausible);
        // Seoul -> Busan in an hour is ~325 km/h but domestic.
        assert_eq!(assess(Some(&place("KR", SEOUL, t)), &place("KR", BUSAN, t + time::Duration::minutes(5)), 900.0), TravelVerdict::Plausible);
        // Seoul -> Paris in 12 hours is ~750 km/h: a flight.
        assert_eq!(assess(Some(&place("KR", SEOUL, t)), &place("FR", PARIS, t + time::Duration::hours(12)), 900.0), TravelVerdict::Plausible);
        assert!(matches!(assess(Some(&place("KR", SEOUL, t)), &place("FR", PARIS, t), 900.0), TravelVerdict::Impossible { .. }));
    }

    proptest! {
        #[test]
        fn haversine_is_a_bounded_symmetric_distance(
            lat1 in -90.0f64..90.0, lon1 in -180.0f64..180.0, lat2 in -90.0f64..90.0, lon2 in -180.0f64..180.0
        ) {
            let d = haversine_km(lat1, lon1, lat2, lon2);
            prop_assert!(d >= 0.0 && d <= std::f64::consts::PI * EARTH_RADIUS_KM + 1e-6);
            prop_assert!((d - haversine_km(lat2, lon2, lat1, lon1)).abs() < 1e-6);
            prop_assert!(haversine_km(lat1, lon1, lat1, lon1) < 1e-6);
        }

        #[test]
        fn waiting_longer_never_makes_travel_less_plausible(minutes in 1i64..10_000, extra in 0i64..10_000) {
            let t = datetime!(2026-11-22 09:00 UTC);
            let last = place("KR", SEOUL, t);
            let sooner = assess(Some(&last), &place("FR", PARIS, t + time::Duration::minutes(minutes)), 900.0);
            let later = assess(Some(&last), &place("FR", PARIS, t + time::Duration::minutes(minutes + extra)), 900.0);
            if sooner == TravelVerdict::Plausible {
                prop_assert_eq!(later, TravelVerdict::Plausible);
            }
        }
    }
}
