//! Where an MQTT broker is and how the gateway proves who it is: the `mqtt://` / `mqtts://` URL
//! rules and passwords given inline or in a file. The uplink (`[uplink]` with an MQTT URL) and
//! the MQTT meter input (`[mqtt_input]`) follow the same rules, so both take them from here.
//!
//! The messages name the `uplink` keys for both sections, as they always have; the
//! configuration check puts `mqtt_input` in front of those about the meter input.

use std::path::{Path, PathBuf};

/// What is wrong with a broker URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("uplink.url `{0}` is not an mqtt:// or mqtts:// URL")]
    NotMqtt(String),
    #[error("uplink.url `{url}`: bad port `{port}`")]
    BadPort { url: String, port: String },
    #[error("uplink.url `{0}` has no host")]
    NoHost(String),
}

/// A secret that could not be read (the message names the file, never the secret).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("uplink.password_file {}: {source}", .path.display())]
    PasswordFile { path: PathBuf, source: std::io::Error },
    #[error("uplink.token_file {} is empty", .0.display())]
    EmptyTokenFile(PathBuf),
    #[error("uplink.token_file {}: {source}", .path.display())]
    TokenFile { path: PathBuf, source: std::io::Error },
}

/// Whether `url` names an MQTT broker.
pub fn is_mqtt(url: &str) -> bool {
    url.starts_with("mqtt://") || url.starts_with("mqtts://")
}

/// (host, port, tls) of an MQTT URL; the port defaults to 1883, or 8883 with TLS.
pub fn mqtt_endpoint(url: &str) -> Result<(String, u16, bool), UrlError> {
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else {
        return Err(UrlError::NotMqtt(url.to_string()));
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => {
            let port = p.parse::<u16>().map_err(|_| UrlError::BadPort { url: url.to_string(), port: p.to_string() })?;
            Ok((h.trim_start_matches('[').trim_end_matches(']').to_string(), port, tls))
        }
        _ if !rest.is_empty() && !rest.contains('/') => Ok((rest.to_string(), default_port, tls)),
        _ => Err(UrlError::NoHost(url.to_string())),
    }
}

/// The password: `password` if given, else the first line of `password_file` (line end
/// removed), else none.
pub fn password(password: Option<&str>, password_file: Option<&Path>) -> Result<Option<String>, SecretError> {
    if let Some(p) = password {
        return Ok(Some(p.to_string()));
    }
    match password_file {
        None => Ok(None),
        Some(f) => std::fs::read_to_string(f)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|source| SecretError::PasswordFile { path: f.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls_worked_by_hand() {
        assert_eq!(mqtt_endpoint("mqtt://broker"), Ok(("broker".into(), 1883, false)));
        assert_eq!(mqtt_endpoint("mqtts://broker/"), Ok(("broker".into(), 8883, true)));
        assert_eq!(mqtt_endpoint("mqtt://[::1]:1884"), Ok(("::1".into(), 1884, false)));
        assert_eq!(mqtt_endpoint("http://x").unwrap_err().to_string(), "uplink.url `http://x` is not an mqtt:// or mqtts:// URL");
        assert_eq!(mqtt_endpoint("mqtt://h:x").unwrap_err().to_string(), "uplink.url `mqtt://h:x`: bad port `x`");
        assert_eq!(mqtt_endpoint("mqtt://").unwrap_err(), UrlError::NoHost("mqtt://".into()));
    }
}
