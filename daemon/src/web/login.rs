//! The login page, login and logout.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::fmt::{esc, Lang};
use super::{cookie, now_ms, remote_of, set_cookie, Viewer, WebShared, LOGIN_COOKIE, SESSION_COOKIE};
use crate::api::ApiError;
use crate::auth::sessions::same_secret;

/// Where to go after login: a path of this site only (no `//host`, no scheme).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") && !n.contains(['\r', '\n']) => n.to_string(),
        _ => "/".into(),
    }
}

fn page(lang: Lang, csrf: &str, next: &str, message: Option<&str>, auth_on: bool) -> String {
    let t = |zh, en| lang.t(zh, en);
    let msg = message.map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m))).unwrap_or_default();
    let off = if auth_on { String::new() } else { format!("<p class=\"note\">{}</p>", t("未配置 [auth]：本页无需登录（仅限本机访问）。", "[auth] is not configured: the page needs no login (loopback only).")) };
    format!(
        "<!doctype html><html lang=\"{code}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><link rel=\"stylesheet\" href=\"{css}\"></head><body class=\"login\"><main><h1>{title}</h1>{off}{msg}\
<form method=\"post\" action=\"/login{langq}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label>{user}<input name=\"name\" autocomplete=\"username\" required autofocus></label>\
<label>{pass}<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\">{go}</button></form><p class=\"langs\"><a href=\"/login?next={nextq}\">中文</a> · <a href=\"/login?lang=en&amp;next={nextq}\">English</a></p></main></body></html>",
        code = lang.code(),
        title = t("公共机构能源资源管理 — 登录", "Public institutions' energy — log in"),
        css = super::assets::CSS_PATH,
        langq = if lang == Lang::En { "?lang=en" } else { "" },
        csrf = esc(csrf),
        next = esc(next),
        nextq = super::fmt::url_encode(next),
        user = t("用户名", "User name"),
        pass = t("密码", "Password"),
        go = t("登录", "Log in"),
    )
}

/// `GET /login[?next=..][&lang=en]`: the form, with a fresh login CSRF cookie.
pub(super) async fn form(State(w): State<WebShared>, Query(p): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let lang = Lang::of(&p);
    let token = crate::auth::new_token().map_err(|e| ApiError::internal("login form", e))?;
    let next = safe_next(p.get("next").map(String::as_str));
    let body = page(lang, &token, &next, None, w.app.auth.is_some());
    Ok(([(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, w.secure, Some(3600))), (header::CACHE_CONTROL, "no-store".to_string())], Html(body)).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: checks the CSRF pair, the lockouts (of the user and of the address), then the
/// password; a success starts a session. Every outcome is audited (never the password).
pub(super) async fn submit(State(w): State<WebShared>, Query(p): Query<HashMap<String, String>>, req: Request) -> Result<Response, ApiError> {
    let lang = Lang::of(&p);
    let remote = remote_of(&req);
    let from_cookie = cookie(req.headers(), LOGIN_COOKIE);
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024).await.map_err(|_| ApiError::bad_request("the login form is too large"))?;
    let f: LoginForm = parse_form(&body)?;
    let next = safe_next(f.next.as_deref());
    let again = |status: StatusCode, message: &str| -> Result<Response, ApiError> {
        let token = crate::auth::new_token().map_err(|e| ApiError::internal("login form", e))?;
        let body = page(lang, &token, &next, Some(message), w.app.auth.is_some());
        Ok((status, [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, w.secure, Some(3600)))], Html(body)).into_response())
    };
    if !from_cookie.as_deref().is_some_and(|c| !c.is_empty() && same_secret(c, &f.csrf)) {
        return again(StatusCode::FORBIDDEN, lang.t("表单已过期，请重新登录。", "The form expired; please log in again."));
    }
    if w.app.auth.is_none() {
        return Ok(Redirect::to(&next).into_response());
    }
    let now = now_ms();
    let (user_key, addr_key) = (format!("user:{}", f.name), format!("addr:{}", remote.clone().unwrap_or_default()));
    let locked = {
        let l = w.lockout();
        l.locked_until(&user_key, now).into_iter().chain(l.locked_until(&addr_key, now)).max()
    };
    // Refused logins go to the audit log as refused authentications (rate-limited there).
    let refused = |why: String| {
        let (audit, remote) = (w.app.audit.clone(), remote.clone());
        async move {
            let _ = tokio::task::spawn_blocking(move || audit.record_refusal(remote, &why, "/login")).await;
        }
    };
    if let Some(until) = locked {
        let secs = (until - now + 999) / 1000;
        refused(format!("web login as {:?}: locked for {secs} s more", f.name)).await;
        let msg = match lang {
            Lang::Zh => format!("登录失败次数过多，请 {secs} 秒后再试。"),
            Lang::En => format!("Too many failed logins; try again in {secs} s."),
        };
        return again(StatusCode::TOO_MANY_REQUESTS, &msg);
    }
    let user = w.users.get(&f.name);
    let hash = user.as_ref().map_or_else(|| crate::auth::users::dummy_hash().to_string(), |u| u.password.clone());
    let password = f.password.clone();
    let ok = tokio::task::spawn_blocking(move || crate::auth::users::verify_password(&hash, &password)).await.unwrap_or(false);
    match user {
        Some(u) if ok && !u.disabled => {
            {
                let mut l = w.lockout();
                l.clear(&user_key);
                l.clear(&addr_key);
            }
            let (id, _) = w.sessions.create(&u.name, &crate::auth::hash_token(&u.password), now).map_err(|e| ApiError::internal("starting the session", e))?;
            w.app.record(&u.principal(remote), "web.login", &u.name, serde_json::json!({})).await;
            let mut r = Redirect::to(&next).into_response();
            r.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, w.secure, None).parse().map_err(|e| ApiError::internal("cookie", e))?);
            r.headers_mut().append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", w.secure, Some(0)).parse().map_err(|e| ApiError::internal("cookie", e))?);
            Ok(r)
        }
        u => {
            {
                let mut l = w.lockout();
                l.fail(&user_key, now);
                l.fail(&addr_key, now);
            }
            let why = match u {
                Some(u) if u.disabled && ok => "disabled",
                Some(_) => "wrong password",
                None => "unknown user",
            };
            w.app.metrics.auth_refused.with_label_values(&["invalid"]).inc();
            refused(format!("web login as {:?}: {why}", f.name)).await;
            again(StatusCode::UNAUTHORIZED, lang.t("用户名或密码不正确，或账户已停用。", "Wrong user name or password, or the account is disabled."))
        }
    }
}

pub(super) fn parse_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{}", String::from_utf8_lossy(body)).parse().map_err(|_| ApiError::bad_request("the form is not URL-encoded"))?)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("form: {e}")))
}

#[derive(serde::Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session (with its CSRF token, so no other site can log one out).
pub(super) async fn logout(State(w): State<WebShared>, viewer: Viewer, req: Request) -> Result<Response, ApiError> {
    let id = cookie(req.headers(), SESSION_COOKIE);
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024).await.map_err(|_| ApiError::bad_request("the form is too large"))?;
    let f: CsrfForm = parse_form(&body)?;
    viewer.check_csrf(Some(&f.csrf))?;
    if let Some(id) = id {
        w.sessions.remove(&id);
    }
    w.app.record(&viewer.principal, "web.logout", &viewer.principal.name, serde_json::json!({})).await;
    Ok(([(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", w.secure, Some(0)))], Redirect::to("/login")).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_stays_on_this_site() {
        for (given, want) in [(Some("/agencies/a?x=1"), "/agencies/a?x=1"), (Some("//evil.example/"), "/"), (Some("https://evil.example/"), "/"), (Some("/\\evil"), "/"), (None, "/")] {
            assert_eq!(super::safe_next(given), want, "{given:?}");
        }
    }
}
