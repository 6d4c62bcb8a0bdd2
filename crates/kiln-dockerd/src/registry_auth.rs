//! Registry credentials as the Docker CLI sends them: `X-Registry-Auth` (one registry, for
//! push) and `X-Registry-Config` (all of the client's registries, for build), both base64url
//! JSON. Docker keeps no credentials between calls, and neither does kiln.

use base64::Engine as _;
use kiln_oci::auth::normalize_host;
use kiln_oci::{Credentials, StaticCredentials};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Docker's `AuthConfig`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `user:password`, as in `config.json`.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub serveraddress: String,
    #[serde(default)]
    pub identitytoken: String,
}

impl AuthConfig {
    /// The credentials this carries, if any.
    pub fn credentials(&self) -> Option<Credentials> {
        if !self.identitytoken.is_empty() {
            return Some(Credentials::identity_token(self.identitytoken.clone()));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some(Credentials {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}

fn decode_header(value: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let v = value.trim();
    [URL_SAFE, URL_SAFE_NO_PAD, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|e| e.decode(v).ok())
        .ok_or_else(|| "not base64".to_string())
}

/// `X-Registry-Auth`; an absent or empty header means anonymous.
pub fn parse_auth_header(value: Option<&str>) -> Result<AuthConfig, String> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(AuthConfig::default());
    };
    let bytes = decode_header(v).map_err(|e| format!("X-Registry-Auth: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("X-Registry-Auth: {e}"))
}

/// `X-Registry-Config`: registry address → credentials.
pub fn parse_config_header(value: Option<&str>) -> Result<StaticCredentials, String> {
    let mut creds = StaticCredentials::default();
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(creds);
    };
    let bytes = decode_header(v).map_err(|e| format!("X-Registry-Config: {e}"))?;
    let map: BTreeMap<String, AuthConfig> =
        serde_json::from_slice(&bytes).map_err(|e| format!("X-Registry-Config: {e}"))?;
    for (host, auth) in map {
        if let Some(c) = auth.credentials() {
            creds = creds.with(&normalize_host(&host), c);
        }
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::CredentialSource;

    #[tokio::test]
    async fn headers_decode_like_the_docker_cli_encodes_them() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        let a = parse_auth_header(Some(&b64(
            r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#,
        )))
        .unwrap();
        assert_eq!(a.credentials().unwrap().password, "p?>");
        let t = parse_auth_header(Some(&b64(r#"{"identitytoken":"tok"}"#))).unwrap();
        assert!(t.credentials().unwrap().is_identity_token());
        assert!(parse_auth_header(Some(&b64("{}")))
            .unwrap()
            .credentials()
            .is_none());
        assert!(parse_auth_header(None).unwrap().credentials().is_none());
        assert!(parse_auth_header(Some("%%%")).is_err());

        let c = parse_config_header(Some(&b64(
            r#"{"https://index.docker.io/v1/":{"auth":"dTpw"},"reg:5000":{"username":"a","password":"b"}}"#,
        )))
        .unwrap();
        assert_eq!(c.credentials("docker.io").await.unwrap().username, "u");
        assert_eq!(c.credentials("reg:5000").await.unwrap().password, "b");
    }
}
