//! The HTML the holder sees. No scripts; the two buttons are plain forms.

use paystream::domain::money::format_minor;
use paystream::error::AppError;
use paystream::http::{escape_html, html, Response};
use paystream::store::rfc3339;
use paystream::store::verifications::VerificationView;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}\
    dl{display:grid;grid-template-columns:auto 1fr;gap:.4rem 1rem}dt{color:#666}\
    form{display:inline}button{font-size:1.1rem;padding:.6rem 1.4rem;margin:1rem .5rem 0 0;border:0;border-radius:.4rem;cursor:pointer}\
    .approve{background:#1a7f37;color:#fff}.deny{background:#cf222e;color:#fff}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape_html(title)
    )
}

fn details(v: &VerificationView) -> String {
    format!(
        "<dl><dt>Merchant</dt><dd id=\"merchant\">{}</dd><dt>Amount</dt><dd id=\"amount\">{}</dd>\
         <dt>Country</dt><dd>{}</dd><dt>Time</dt><dd>{}</dd></dl>",
        escape_html(&v.merchant_name),
        escape_html(&format_minor(v.amount, &v.currency)),
        escape_html(&v.country),
        escape_html(&rfc3339(v.occurred_at)),
    )
}

pub fn approve_or_deny(v: &VerificationView) -> String {
    layout(
        "Was this you?",
        &format!(
            "<p>We held this payment because it is far from your last one.</p>{}\
             <form method=\"post\"><input type=\"hidden\" name=\"decision\" value=\"approve\">\
             <button class=\"approve\" id=\"approve\" type=\"submit\">Approve</button></form>\
             <form method=\"post\"><input type=\"hidden\" name=\"decision\" value=\"deny\">\
             <button class=\"deny\" id=\"deny\" type=\"submit\">Deny</button></form>",
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
    layout(title, &format!("<p id=\"result\">{text}</p>{}", details(v)))
}

pub fn error(err: &AppError) -> Response {
    let status = lambda_http::http::StatusCode::from_u16(err.status()).unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    html(status, layout(err.code.title(), &format!("<p id=\"error\" data-code=\"{}\">{}</p>", err.code.as_str(), escape_html(&err.detail))))
}
