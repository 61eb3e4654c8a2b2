//! `GET /`: the dashboard, one HTML page with inline CSS and JS, embedded in the binary;
//! while no password is set, the first-run onboarding page instead (see [`super::setup`]).
//!
//! The pages themselves talk to `/rpc/v1` and `/api/events`; this module only serves them.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// The page, compiled in so the binary needs no asset folder.
pub const INDEX_HTML: &str = include_str!("assets/index.html");

/// The onboarding page: setup code and new password, then on to the dashboard.
pub const ONBOARDING_HTML: &str = include_str!("assets/onboarding.html");

/// Serves the dashboard (or onboarding) with headers that keep it from being framed or
/// cached stale.
pub(super) async fn index(state: web::Data<super::State>) -> HttpResponse {
    let page = if state.auth.onboarding_open() {
        ONBOARDING_HTML
    } else {
        INDEX_HTML
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(page)
}
