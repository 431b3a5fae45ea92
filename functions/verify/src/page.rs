//! The HTML the holder sees, on the phone the SMS reached: no scripts (the
//! two buttons are plain forms), one column, large touch targets, and the
//! payment as a person reads it: the amount in its currency's symbol, the
//! card's last four digits, the country's name and the time with its zone.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use paystream::domain::country::country_name;
use paystream::domain::money::{format_grouped, format_with_symbol};
use paystream::error::AppError;
use paystream::http::{escape_html, html, Response};
use paystream::store::rfc3339;
use paystream::store::verifications::VerificationView;

const STYLE: &str = "*{box-sizing:border-box}\
    body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f3f4f6;color:#111827;\
    font-size:17px;line-height:1.4;-webkit-text-size-adjust:100%}\
    main{max-width:30rem;margin:0 auto;padding:1.25rem 1rem 2rem}\
    h1{font-size:1.5rem;margin:.5rem 0 .25rem}\
    .lead{color:#4b5563;margin:0 0 1rem}\
    .sheet{background:#fff;border-radius:1rem;padding:1.25rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}\
    .amount{font-size:2.4rem;font-weight:700;letter-spacing:-.02em;margin:0}\
    .code{color:#6b7280;margin:0 0 .25rem}\
    .merchant{font-size:1.2rem;font-weight:600;margin:0 0 1rem}\
    dl{margin:0;border-top:1px solid #e5e7eb}\
    dl div{display:flex;justify-content:space-between;gap:1rem;padding:.7rem 0;border-bottom:1px solid #e5e7eb}\
    dt{color:#6b7280}dd{margin:0;text-align:right;font-weight:500}\
    .actions{display:flex;flex-direction:column;gap:.75rem;margin-top:1.25rem}\
    form{margin:0}button{width:100%;font-size:1.15rem;font-weight:600;padding:1rem;border:0;border-radius:.75rem;cursor:pointer}\
    .approve{background:#1a7f37;color:#fff}.deny{background:#fff;color:#cf222e;border:2px solid #cf222e}\
    .result{font-size:1.1rem;margin:0 0 1rem}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape_html(title)
    )
}

/// `Mon 30 Nov 2026, 13:15 UTC`: the moment of the payment, in UTC (a page
/// without scripts cannot know the phone's zone, so it names the one it uses).
fn readable_time(at: OffsetDateTime) -> String {
    const FORMAT: &[FormatItem<'static>] =
        format_description!("[weekday repr:short] [day padding:none] [month repr:short] [year], [hour]:[minute] UTC");
    at.to_offset(time::UtcOffset::UTC).format(FORMAT).unwrap_or_else(|_| rfc3339(at))
}

/// `Shinhan Deep Dream •••• 4242`, or what is known of the card.
fn card(v: &VerificationView) -> String {
    match (&v.card_product, &v.card_last4) {
        (Some(product), Some(last4)) => format!("{product} •••• {last4}"),
        (None, Some(last4)) => format!("Card •••• {last4}"),
        _ => "a card no longer on file".to_owned(),
    }
}

fn details(v: &VerificationView) -> String {
    let country = match country_name(&v.country) {
        Some(name) => name.to_owned(),
        None => v.country.clone(),
    };
    format!(
        "<section class=\"sheet\"><p class=\"amount\" id=\"amount\">{amount}</p><p class=\"code\" id=\"amount-code\">{code}</p>\
         <p class=\"merchant\" id=\"merchant\">{merchant}</p>\
         <dl><div><dt>Card</dt><dd id=\"card\">{card}</dd></div>\
         <div><dt>Where</dt><dd id=\"country\">{country}</dd></div>\
         <div><dt>When</dt><dd><time id=\"time\" datetime=\"{iso}\">{when}</time></dd></div></dl>",
        amount = escape_html(&format_with_symbol(v.amount, &v.currency)),
        code = escape_html(&format_grouped(v.amount, &v.currency)),
        merchant = escape_html(&v.merchant_name),
        card = escape_html(&card(v)),
        country = escape_html(&country),
        iso = escape_html(&rfc3339(v.occurred_at)),
        when = escape_html(&readable_time(v.occurred_at)),
    )
}

pub fn approve_or_deny(v: &VerificationView) -> String {
    layout(
        "Was this you?",
        &format!(
            "<p class=\"lead\">We held this payment because it is far from your last one.</p>{}\
             <div class=\"actions\">\
             <form method=\"post\"><input type=\"hidden\" name=\"decision\" value=\"approve\">\
             <button class=\"approve\" id=\"approve\" type=\"submit\">Approve: it was me</button></form>\
             <form method=\"post\"><input type=\"hidden\" name=\"decision\" value=\"deny\">\
             <button class=\"deny\" id=\"deny\" type=\"submit\">Deny: lock my card</button></form>\
             </div></section>",
            details(v)
        ),
    )
}

pub fn decided(v: &VerificationView, approved: bool) -> String {
    let (title, text) = if approved {
        ("Payment approved", "Thank you. The payment is complete.")
    } else {
        ("Payment denied", "The payment was denied and your card is locked. Contact your bank to unlock it.")
    };
    layout(title, &format!("<p class=\"result\" id=\"result\">{text}</p>{}</section>", details(v)))
}

pub fn error(err: &AppError) -> Response {
    let status = lambda_http::http::StatusCode::from_u16(err.status()).unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    html(status, layout(err.code.title(), &format!("<p id=\"error\" data-code=\"{}\">{}</p>", err.code.as_str(), escape_html(&err.detail))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_time_reads_with_its_zone() {
        assert_eq!(readable_time(datetime!(2026-11-30 13:15:11.318745 UTC)), "Mon 30 Nov 2026, 13:15 UTC");
        assert_eq!(readable_time(datetime!(2026-12-01 01:05 +09:00)), "Mon 30 Nov 2026, 16:05 UTC");
    }
}
