//! The page's static files, embedded in the binary (the page works with no internet).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Apache ECharts 6.1.0 (`dist/echarts.min.js` of the npm package), Apache-2.0; its licence and
/// notice are served beside it.
const ECHARTS: &[u8] = include_bytes!("vendor/echarts.min.js");
const ECHARTS_LICENSE: &str = include_str!("vendor/echarts-LICENSE");
const ECHARTS_NOTICE: &str = include_str!("vendor/echarts-NOTICE");
const CSS: &str = include_str!("static/web.css");
const JS: &str = include_str!("static/web.js");

/// Versioned names (the version in the name), so a year's cache is safe: a new build changes
/// the name the page links to.
pub const ECHARTS_PATH: &str = "/static/echarts-6.1.0.min.js";
pub const CSS_PATH: &str = concat!("/static/web-", env!("CARGO_PKG_VERSION"), ".css");
pub const JS_PATH: &str = concat!("/static/web-", env!("CARGO_PKG_VERSION"), ".js");

/// `GET /static/{file}`
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    let path = format!("/static/{file}");
    let (body, kind): (&[u8], &str) = match path.as_str() {
        ECHARTS_PATH => (ECHARTS, "text/javascript; charset=utf-8"),
        CSS_PATH => (CSS.as_bytes(), "text/css; charset=utf-8"),
        JS_PATH => (JS.as_bytes(), "text/javascript; charset=utf-8"),
        "/static/echarts-LICENSE.txt" => (ECHARTS_LICENSE.as_bytes(), "text/plain; charset=utf-8"),
        "/static/echarts-NOTICE.txt" => (ECHARTS_NOTICE.as_bytes(), "text/plain; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], body).into_response()
}
