//! `GET /`: the dashboard, one HTML page with inline CSS and JS, embedded in the binary.
//!
//! The page itself talks to `/rpc/v1` and `/api/events`; this module only serves it.

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page, compiled in so the binary needs no asset folder.
pub const INDEX_HTML: &str = include_str!("assets/index.html");

/// Serves the page with headers that keep it from being framed or cached stale.
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(INDEX_HTML)
}
