//! The bureau's web application: login and sessions, the overview, the drill-down from the
//! jurisdiction to a meter, the meter's data quality and the forms that act on it, alerts and
//! reports (docs/web.md). Server-rendered HTML with a little JavaScript and Apache ECharts
//! (vendored, embedded in the binary).
//!
//! It stands above the HTTP API (floor 6.5 in tests/tests/layers.rs): it takes the API's
//! application state (the services' handles) and its scoping rules (the [`Principal`] methods of
//! crate::auth, the same ones the API's handlers call), and calls the domain services (engine,
//! store, registry, reports) directly, never the API over HTTP.

pub mod assets;
pub mod fmt;
pub mod figures;
mod login;
mod memo;
mod pages;
pub mod period;
pub mod readings;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::{self, ApiError, ConnAuth, Shared};
use crate::auth::sessions::{same_secret, Sessions};
use crate::auth::users::{Lockout, UserEntry};
use crate::auth::Principal;

/// The session cookie.
pub const SESSION_COOKIE: &str = "energyd_session";
/// The login form's CSRF cookie (double submit: the form carries the same value).
pub const LOGIN_COOKIE: &str = "energyd_login";
/// Sessions end this long after login whatever their activity.
const SESSION_MAX_MS: i64 = 12 * 3_600_000;

/// The web layer's own state beside the API's.
pub struct Web {
    pub app: Shared,
    pub users: UsersTable,
    pub sessions: Sessions,
    pub lockout: std::sync::Mutex<Lockout>,
    /// Cookies get `Secure` (the daemon serves HTTPS).
    pub secure: bool,
    /// Figures, indicators and deadlines of the pages, kept while the data is unchanged.
    memo: Memos,
}

#[derive(Default)]
struct Memos {
    figures: memo::Memo<(figures::Figures, figures::Figures, figures::Figures)>,
    indicators: memo::Memo<Vec<crate::accounting::indicators::AgencyIndicators>>,
    deadlines: memo::Memo<crate::reports::model::Deadlines>,
}

pub type WebShared = Arc<Web>;

/// What the page needs from the configuration.
#[derive(Debug, Clone)]
pub struct WebSetup {
    pub users_file: PathBuf,
    pub session_idle_ms: i64,
    pub secure: bool,
}

impl Web {
    pub fn new(app: Shared, setup: WebSetup) -> Web {
        Web {
            users: UsersTable::new(setup.users_file, app.registry.clone()),
            sessions: Sessions::new(setup.session_idle_ms, SESSION_MAX_MS),
            lockout: std::sync::Mutex::new(Lockout::default()),
            secure: setup.secure,
            memo: Memos::default(),
            app,
        }
    }

    fn lockout(&self) -> std::sync::MutexGuard<'_, Lockout> {
        self.lockout.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The users file, re-read when it changes (its modification time, size or inode), so that a
/// user added, disabled or given a new password by `energyd user` counts at the next request.
/// A file that does not load keeps the users in force (and the log says why).
pub struct UsersTable {
    path: PathBuf,
    registry: Arc<crate::registry::Registry>,
    current: RwLock<(Option<FileStamp>, Arc<HashMap<String, UserEntry>>)>,
}

type FileStamp = (Option<std::time::SystemTime>, u64, u64);

fn stamp(p: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len(), m.ino()))
}

impl UsersTable {
    fn new(path: PathBuf, registry: Arc<crate::registry::Registry>) -> UsersTable {
        let t = UsersTable { path, registry, current: RwLock::new((None, Arc::new(HashMap::new()))) };
        t.refresh();
        t
    }

    fn refresh(&self) {
        let now = stamp(&self.path);
        if self.current.read().map(|c| c.0 == now && now.is_some()).unwrap_or(false) {
            return;
        }
        let loaded = crate::auth::users::load(&self.path, Some(&self.registry));
        let mut c = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match loaded {
            Ok(list) => *c = (now, Arc::new(list.into_iter().map(|u| (u.name.clone(), u)).collect())),
            Err(e) => {
                if c.0 != now {
                    tracing::error!("the users file does not load; the users in force stay: {e}");
                }
                c.0 = now;
            }
        }
    }

    /// The account `name` as the file says now.
    pub fn get(&self, name: &str) -> Option<UserEntry> {
        self.refresh();
        self.current.read().ok().and_then(|c| c.1.get(name).cloned())
    }
}

/// Who a page request acts as, and how it authenticated (a session's CSRF token, or none for a
/// bearer token or with authentication off, which are not cookie-borne).
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Principal,
    pub csrf: Option<String>,
    /// Logged in with a session (a logout button is shown).
    pub session: bool,
}

impl Viewer {
    /// A state-changing request from the page must carry the session's CSRF token.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), ApiError> {
        match &self.csrf {
            None => Ok(()),
            Some(want) if presented.is_some_and(|p| same_secret(p, want)) => Ok(()),
            Some(_) => Err(ApiError::forbidden("the form's CSRF token is missing or stale: reload the page and try again")),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The `Set-Cookie` value of a session-style cookie (HttpOnly, SameSite=Strict, Secure under
/// HTTPS); `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<i64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    c
}

fn remote_of(req: &Request) -> Option<String> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// The middleware of every page: a session cookie, else a bearer token (as the API takes it),
/// else, without `[auth]`, the implicit admin. Nothing valid: a browser is sent to the login
/// page, any other client gets 401. Gateway tokens are refused (they may only ingest).
async fn require_viewer(State(w): State<WebShared>, mut req: Request, next: Next) -> Response {
    let remote = remote_of(&req);
    let s = &w.app;
    let viewer = match &s.auth {
        None => Some(Viewer { principal: Principal { remote: remote.clone(), ..Principal::open() }, csrf: None, session: false }),
        Some(tokens) => {
            let from_session = cookie(req.headers(), SESSION_COOKIE).and_then(|id| {
                let sess = w.sessions.touch(&id, now_ms())?;
                match w.users.get(&sess.user) {
                    Some(u) if !u.disabled && crate::auth::hash_token(&u.password) == sess.stamp => {
                        Some(Viewer { principal: u.principal(remote.clone()), csrf: Some(sess.csrf), session: true })
                    }
                    _ => {
                        // Disabled, removed, or a new password: the session ends.
                        w.sessions.remove(&id);
                        None
                    }
                }
            });
            from_session.or_else(|| {
                let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())?.trim().strip_prefix("Bearer ")?.trim().to_string();
                tokens.authenticate(&bearer).map(|p| Viewer { principal: Principal { remote: remote.clone(), ..p }, csrf: None, session: false })
            })
        }
    };
    let Some(viewer) = viewer else {
        if wants_html(req.headers()) && req.method() == axum::http::Method::GET {
            let next_path = req.uri().path_and_query().map_or("/".to_string(), |p| p.as_str().to_string());
            return Redirect::to(&format!("/login?next={}", fmt::url_encode(&next_path))).into_response();
        }
        s.metrics.auth_refused.with_label_values(&["missing"]).inc();
        return ApiError::unauthorized("log in at /login, or send `Authorization: Bearer <token>`").into_response();
    };
    if let Err(e) = viewer.principal.require_read() {
        return ApiError::from(e).into_response();
    }
    if let Some(c) = req.extensions().get::<ConnAuth>() {
        c.mark();
    }
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Viewer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Viewer>().cloned().ok_or_else(|| ApiError { status: StatusCode::UNAUTHORIZED, message: "not authenticated".into() })
    }
}

/// The daemon's router: the API's, and the page's routes beside it.
pub fn app(state: Shared, setup: WebSetup) -> Router {
    let w: WebShared = Arc::new(Web::new(state.clone(), setup));
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/agencies/{id}", get(pages::agency))
        .route("/buildings/{id}", get(pages::building))
        .route("/meters/{id}", get(pages::meter))
        .route("/meters/{id}/events", post(pages::post_event))
        .route("/agencies/{id}/readings", get(readings::form).post(readings::save))
        .route("/agencies/{id}/readings.xlsx", get(readings::template).post(readings::import))
        .route("/reports", get(pages::reports))
        .route("/alerts", get(pages::alerts))
        .route("/alerts/{id}/{what}", post(pages::alert_action))
        .route("/logout", post(login::logout))
        .route_layer(axum::middleware::from_fn_with_state(w.clone(), require_viewer))
        .with_state(w.clone());
    let open = Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/static/{file}", get(assets::serve))
        .with_state(w);
    api::app(state).merge(pages).merge(open)
}

#[cfg(test)]
mod tests;
