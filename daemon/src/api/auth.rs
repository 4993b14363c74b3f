//! Authentication and the per-route access rules, as an axum middleware that puts a
//! [`Principal`] in the request's extensions; handlers take it as an extractor and call its
//! `require_*` helpers (crate::auth) for the scope rules only they can check (which agency,
//! building or meter a request is about).
//!
//! Credentials: `Authorization: Bearer <token>` everywhere; on the line-protocol endpoints
//! (`/write`, `/api/v2/write`, and `/query` for the start-up statements of InfluxDB clients)
//! also `Authorization: Token <token>` (InfluxDB 2), Basic auth with the token as password and
//! the v1 query parameters `u`/`p` (`p` is the token).
//!
//! Route classes ([`access`]): a route not listed there is readable (GET) by admin, bureau and
//! engineer only, and writable by admin only, so a new endpoint never opens data to agency or
//! gateway tokens by accident. To open one to agency tokens, list it as [`Access::Scoped`] and call
//! `principal.require_agency(..)` / `require_building` / `require_meter` (or filter lists with
//! `sees_*`) in its handler.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Shared};
use crate::auth::{Forbidden, MetricsAccess, Principal, Role};

/// Who may call a route, before any scope check in its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Open,
    /// `/metrics`: open, or a token with read rights, per `auth.metrics` (the handler filters
    /// the agency series to what the principal may read).
    Metrics,
    /// Posting readings: admin and gateway tokens.
    Ingest,
    /// Any reader (not gateways); the handler checks which agency, building or meter.
    Scoped,
    /// Admin, bureau and engineer.
    ReadAll,
    /// These roles (and admin).
    Roles(&'static [Role]),
    /// Admin only.
    Admin,
    /// A read under `/api/v1/agencies/{id}/...`, `/buildings/{id}/...` or `/meters/{id}/...`:
    /// any reader who may see that agency, building or meter (checked here, from the path).
    InPath(PathScope),
}

/// Which registry id a route's path carries (its fifth segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathScope {
    Agency,
    Building,
    Meter,
}

/// The access class of a route (its matched path, e.g. `/api/v1/meters/{id}/events`).
pub fn access(method: &Method, route: Option<&str>) -> Access {
    let read = method == Method::GET || method == Method::HEAD;
    match route {
        // InfluxDB answers /ping and /health without credentials; /query (its start-up
        // statements only, see influx_api) takes the credentials and roles of /write.
        Some("/healthz" | "/ping" | "/health") => Access::Open,
        Some("/metrics") => Access::Metrics,
        Some("/api/v1/ingest" | "/write" | "/api/v2/write" | "/query") => Access::Ingest,
        Some(
            "/" | "/api/v1/agencies"
            | "/api/v1/buildings"
            | "/api/v1/meters"
            | "/api/v1/series"
            | "/api/v1/consumption"
            | "/api/v1/quantities"
            | "/api/v1/indicators"
            | "/api/v1/reports/annual"
            | "/api/v1/reports/assessment"
            | "/api/v1/reports/statistics"
            | "/api/v1/plans/energy"
            | "/api/v1/deadlines"
            | "/api/v1/alerts",
        ) if read => {
            Access::Scoped
        }
        Some("/api/v1/audit") if read => Access::Roles(&[Role::Bureau]),
        // Acknowledging and silencing: any reader; the handler checks the alert's agency.
        Some(r) if r.starts_with("/api/v1/alerts/{") => Access::Scoped,
        Some(r) if !read && r.starts_with("/api/v1/meters/{") && (r.ends_with("/events") || r.ends_with("/corrections")) => Access::Roles(&[Role::Engineer]),
        Some(r) if read && r.starts_with("/api/v1/agencies/{") => Access::InPath(PathScope::Agency),
        Some(r) if read && r.starts_with("/api/v1/buildings/{") => Access::InPath(PathScope::Building),
        Some(r) if read && r.starts_with("/api/v1/meters/{") => Access::InPath(PathScope::Meter),
        _ if read => Access::ReadAll,
        _ => Access::Admin,
    }
}

/// The id in a path such as `/api/v1/agencies/prov-drc/indicators`, percent-decoded.
fn path_id(path: &str) -> Option<String> {
    path.split('/').nth(4).filter(|s| !s.is_empty()).map(percent_decode)
}

fn is_line_protocol(route: Option<&str>) -> bool {
    matches!(route, Some("/write" | "/api/v2/write" | "/query"))
}

/// The token a request presents, if any. Only the forms its route accepts are looked at.
fn presented_token(headers: &HeaderMap, query: Option<&str>, line_protocol: bool) -> Option<String> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.to_string());
        }
        if line_protocol && scheme.eq_ignore_ascii_case("token") {
            return Some(rest.to_string());
        }
        if line_protocol && scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64_decode(rest)?;
            let text = String::from_utf8(decoded).ok()?;
            return text.split_once(':').map(|(_, p)| p.to_string());
        }
        // Some other scheme: no token (401 below names the accepted ones).
        return Some(String::new());
    }
    if line_protocol {
        for pair in query.unwrap_or("").split('&') {
            if let Some(p) = pair.strip_prefix("p=") {
                return Some(percent_decode(p));
            }
        }
    }
    None
}

/// Standard base64 (with or without padding); `None` for anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            x => out.push(x),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Put in each request by the serve loop (`crate::serve`): marks its connection as
/// authenticated; [`authenticate`] calls [`ConnAuth::mark`] when a request presented a valid
/// token, and the connection no longer counts against the per-client limit of unauthenticated
/// connections.
#[derive(Clone, Debug, Default)]
pub struct ConnAuth(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ConnAuth {
    pub fn new() -> ConnAuth {
        ConnAuth::default()
    }

    pub fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a request on the connection presented a valid token.
    pub fn is_marked(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn refuse(s: &Shared, remote: Option<String>, route: &str, reason: &'static str, message: &str) -> Response {
    s.metrics.auth_refused.with_label_values(&[reason]).inc();
    s.audit.record_refusal(remote, reason, route);
    ApiError::unauthorized(message).into_response()
}

/// The middleware: authenticates, applies the route's [`Access`] class, and puts the
/// [`Principal`] in the request's extensions.
pub(super) async fn authenticate(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string());
    let class = access(req.method(), route.as_deref());
    let route_name = route.clone().unwrap_or_else(|| "unmatched".into());
    let principal = match &s.auth {
        None => Principal { remote: remote.clone(), ..Principal::open() },
        Some(tokens) => {
            let open = class == Access::Open || (class == Access::Metrics && tokens.metrics == MetricsAccess::Open);
            match presented_token(req.headers(), req.uri().query(), is_line_protocol(route.as_deref())) {
                None if open => return next.run(req).await,
                None => {
                    let how = if is_line_protocol(route.as_deref()) {
                        "missing credentials: send `Authorization: Bearer <token>` (or `Token <token>`, Basic auth with the token as password, or ?p=<token>)"
                    } else {
                        "missing credentials: send `Authorization: Bearer <token>`"
                    };
                    return refuse(&s, remote, &route_name, "missing", how);
                }
                Some(t) if t.is_empty() && open => return next.run(req).await,
                Some(t) if t.is_empty() => {
                    return refuse(&s, remote, &route_name, "malformed", "the Authorization header is not `Bearer <token>`");
                }
                Some(t) => match tokens.authenticate(&t) {
                    Some(p) => {
                        // Its connection no longer counts against the unauthenticated limit.
                        if let Some(c) = req.extensions().get::<ConnAuth>() {
                            c.mark();
                        }
                        Principal { remote: remote.clone(), ..p }
                    }
                    None if open => return next.run(req).await,
                    None => return refuse(&s, remote, &route_name, "invalid", "invalid token"),
                },
            }
        }
    };
    let allowed: Result<(), Forbidden> = match class {
        Access::Open => Ok(()),
        Access::Metrics => match &s.auth {
            Some(t) if t.metrics == MetricsAccess::Token => principal.require_read(),
            _ => Ok(()),
        },
        Access::Ingest => principal.require_ingest(),
        Access::Scoped => principal.require_read(),
        Access::ReadAll => principal.require_read_all(),
        Access::Roles(roles) => principal.require_any(roles),
        Access::Admin => principal.require_role(Role::Admin),
        Access::InPath(scope) => match path_id(req.uri().path()) {
            None => principal.require_read_all(),
            Some(id) => match scope {
                PathScope::Agency => principal.require_agency(&s.registry, &id),
                PathScope::Building => principal.require_building(&s.registry, &id),
                PathScope::Meter => principal.require_meter(&s.registry, &id),
            },
        },
    };
    if let Err(e) = allowed {
        s.metrics.auth_forbidden.with_label_values(&[principal.role.name()]).inc();
        return ApiError::from(e).into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Handlers take `principal: Principal` as an argument. Without the middleware in front (a
/// router built without it) the request is refused, never let through.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError { status: StatusCode::UNAUTHORIZED, message: "not authenticated (the auth middleware did not run for this route)".into() })
    }
}

impl From<Forbidden> for ApiError {
    fn from(e: Forbidden) -> Self {
        ApiError::forbidden(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_every_accepted_form() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("authorization", v.parse().unwrap());
            m
        };
        assert_eq!(presented_token(&h("Bearer abc"), None, false).as_deref(), Some("abc"));
        assert_eq!(presented_token(&h("bearer  abc "), None, false).as_deref(), Some("abc"));
        assert_eq!(presented_token(&h("Token abc"), None, true).as_deref(), Some("abc"));
        assert_eq!(presented_token(&h("Token abc"), None, false).as_deref(), Some(""));
        // "telegraf:edt_x" in base64.
        assert_eq!(presented_token(&h("Basic dGVsZWdyYWY6ZWR0X3g="), None, true).as_deref(), Some("edt_x"));
        assert_eq!(presented_token(&h("Basic !!!"), None, true), None);
        assert_eq!(presented_token(&HeaderMap::new(), Some("db=x&u=t&p=edt%5Fy"), true).as_deref(), Some("edt_y"));
        assert_eq!(presented_token(&HeaderMap::new(), Some("p=edt_y"), false), None);
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn unlisted_routes_fail_closed() {
        assert_eq!(access(&Method::GET, Some("/api/v1/alerts")), Access::Scoped);
        assert_eq!(access(&Method::POST, Some("/api/v1/alerts/{id}/ack")), Access::Scoped);
        assert_eq!(access(&Method::DELETE, Some("/api/v1/alerts/{id}/silence")), Access::Scoped);
        assert_eq!(access(&Method::GET, Some("/api/v1/reports/annual")), Access::Scoped);
        assert_eq!(access(&Method::POST, Some("/api/v1/plans/energy")), Access::Admin);
        assert_eq!(access(&Method::POST, Some("/api/v1/meters/{id}/events")), Access::Roles(&[Role::Engineer]));
        assert_eq!(access(&Method::POST, Some("/api/v1/consumption")), Access::Admin);
        assert_eq!(access(&Method::GET, None), Access::ReadAll);
        assert_eq!(access(&Method::POST, Some("/api/v1/meters/{meter}/corrections")), Access::Roles(&[Role::Engineer]));
        assert_eq!(access(&Method::GET, Some("/api/v1/agencies/{id}/indicators")), Access::InPath(PathScope::Agency));
        assert_eq!(access(&Method::GET, Some("/api/v1/meters/{id}/events")), Access::InPath(PathScope::Meter));
        assert_eq!(path_id("/api/v1/agencies/prov%2Ddrc/indicators").as_deref(), Some("prov-drc"));
        assert_eq!(path_id("/api/v1/agencies/"), None);
    }
}
