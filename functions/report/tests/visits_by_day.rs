//! The dashboard's visits series: the last DASHBOARD_DAYS UTC days, oldest
//! first, today last, quiet days 0, older visits left out; only for the
//! merchant's owner or an admin. Real handler, real PostgreSQL.

use paystream::demo::{DEMO_MERCHANT_OWNER, SEOUL_CAFE};
use paystream::store::loyalty::DASHBOARD_DAYS;
use paystream::testing::{call, fresh_config, seed, user};
use paystream::Platform;
use report::ReportApi;
use time::{Duration, OffsetDateTime};

#[tokio::test]
async fn visits_by_day_covers_the_window_with_zeros_and_only_for_the_owner() {
    let api = ReportApi::new(Platform::from_config("report", fresh_config().await).unwrap());
    seed(&api.platform).await;
    let alice = user(&api.platform, "alice").await;
    let now = OffsetDateTime::now_utc();
    let db = api.platform.pg.get().await.unwrap();
    // Two visits today, one three days ago, one just outside the window.
    let outside = Duration::days(i64::from(DASHBOARD_DAYS)) + Duration::hours(1);
    for at in [now, now - Duration::minutes(1), now - Duration::days(3), now - outside] {
        db.execute(
            "INSERT INTO loyalty_visits (payment_id, user_id, merchant_id, visited_at) VALUES (gen_random_uuid(), $1, $2, $3)",
            &[&alice.id.0, &SEOUL_CAFE.0, &at],
        )
        .await
        .unwrap();
    }

    let owner = user(&api.platform, DEMO_MERCHANT_OWNER).await;
    let (status, board) = call(&api, "GET", &format!("/merchants/{}/dashboard", SEOUL_CAFE.0), &owner.token, None, None).await;
    assert_eq!(status, 200, "{board}");
    let days = board["visits_by_day"].as_array().unwrap();
    assert_eq!(days.len(), DASHBOARD_DAYS as usize);
    let day = |d: OffsetDateTime| d.date().to_string();
    assert_eq!(days.last().unwrap()["day"], day(now), "today last");
    assert_eq!(days[0]["day"], day(now - Duration::days(i64::from(DASHBOARD_DAYS) - 1)), "oldest first");
    let visits_on = |d: OffsetDateTime| days.iter().find(|e| e["day"] == day(d)).map(|e| e["visits"].as_i64().unwrap());
    // Minutes apart can straddle midnight UTC; both are in the window.
    assert_eq!(visits_on(now).unwrap() + visits_on(now - Duration::minutes(1)).filter(|_| day(now) != day(now - Duration::minutes(1))).unwrap_or(0), 2);
    assert_eq!(visits_on(now - Duration::days(3)), Some(1));
    assert_eq!(days.iter().map(|e| e["visits"].as_i64().unwrap()).sum::<i64>(), 3, "the visit outside the window is left out");

    let (status, _) = call(&api, "GET", &format!("/merchants/{}/dashboard", SEOUL_CAFE.0), &alice.token, None, None).await;
    assert_eq!(status, 404, "a customer cannot read the merchant's dashboard");
    let admin = user(&api.platform, "admin").await;
    assert_eq!(call(&api, "GET", &format!("/merchants/{}/dashboard", SEOUL_CAFE.0), &admin.token, None, None).await.0, 200);
}
