//! `POST /auth` (`docker login`): check the credentials against the registry the way Docker
//! does — `GET /v2/`, then answer its challenge (basic auth, or a token request at the bearer
//! realm). Nothing is remembered: the CLI stores the credentials and sends them with each call.

use crate::error::ApiError;
use crate::registry_auth::AuthConfig;
use crate::Shared;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_oci::auth::normalize_host;
use kiln_oci::{Credentials, NoCredentials, RegistryClient, RegistryConfig};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub async fn login(api: &Shared, req: Request) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::BadRequest(format!("login: reading the request: {e}")))?;
    let auth: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("login: invalid request: {e}")))?;
    let address = if auth.serveraddress.is_empty() {
        "docker.io"
    } else {
        auth.serveraddress.as_str()
    };
    let host = normalize_host(address);
    let creds = auth.credentials().ok_or_else(|| {
        ApiError::BadRequest(format!("login to {host}: no username or token given"))
    })?;
    check(&api.engine.inner().registry_config, &host, &creds).await?;
    tracing::info!(%host, user = %creds.username, "docker login succeeded");
    Ok(Json(json!({"Status": "Login Succeeded", "IdentityToken": ""})).into_response())
}

fn http_client(config: &RegistryConfig, host: &str) -> Result<reqwest::Client, ApiError> {
    let hc = config.hosts.get(host).cloned().unwrap_or_default();
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(hc.insecure);
    for path in &hc.ca_certs {
        let fail = |e: &dyn std::fmt::Display| {
            ApiError::Internal(format!(
                "registry {host}: CA certificate {}: {e}",
                path.display()
            ))
        };
        let pem = std::fs::read(path).map_err(|e| fail(&e))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(&e))? {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| ApiError::Internal(format!("registry {host}: {e}")))
}

/// Verify `creds` for `host`; `Unauthorized` when the registry refuses them.
pub async fn check(
    config: &RegistryConfig,
    host: &str,
    creds: &Credentials,
) -> Result<(), ApiError> {
    let base = RegistryClient::new(config.clone(), Arc::new(NoCredentials)).base_url(host);
    let url = format!("{base}/v2/");
    let http = http_client(config, host)?;
    let unreachable =
        |e: reqwest::Error| ApiError::Internal(format!("login to {host}: cannot reach {url}: {e}"));
    let refused = || {
        ApiError::Unauthorized(format!(
            "login to {host} failed: unauthorized: incorrect username or password"
        ))
    };
    let resp = http.get(&url).send().await.map_err(unreachable)?;
    if resp.status().is_success() {
        // The registry wants no authentication at all; Docker reports success too.
        return Ok(());
    }
    if resp.status() != StatusCode::UNAUTHORIZED {
        return Err(ApiError::Internal(format!(
            "login to {host}: unexpected status {} from {url}",
            resp.status()
        )));
    }
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (scheme, params) = parse_challenge(&challenge);
    let resp = match scheme.as_str() {
        "basic" => {
            if creds.is_identity_token() {
                return Err(refused());
            }
            http.get(&url)
                .basic_auth(&creds.username, Some(&creds.password))
                .send()
                .await
                .map_err(unreachable)?
        }
        "bearer" => {
            let realm = params.get("realm").cloned().ok_or_else(|| {
                ApiError::Internal(format!("login to {host}: bearer challenge without a realm"))
            })?;
            let service = params.get("service").cloned().unwrap_or_default();
            if creds.is_identity_token() {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", creds.password.as_str()),
                    ("service", service.as_str()),
                    ("client_id", "kiln"),
                ];
                http.post(&realm).form(&form).send().await
            } else {
                http.get(&realm)
                    .query(&[("service", service.as_str()), ("account", &creds.username)])
                    .basic_auth(&creds.username, Some(&creds.password))
                    .send()
                    .await
            }
            .map_err(|e| {
                ApiError::Internal(format!("login to {host}: token server {realm}: {e}"))
            })?
        }
        other => {
            return Err(ApiError::Internal(format!(
                "login to {host}: unsupported authentication scheme {other:?}"
            )))
        }
    };
    match resp.status() {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(refused()),
        s => Err(ApiError::Internal(format!(
            "login to {host}: unexpected status {s} from {}",
            resp.url()
        ))),
    }
}

/// `Bearer realm="https://auth/token",service="reg"` → (`bearer`, {realm, service}).
fn parse_challenge(header: &str) -> (String, BTreeMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_ascii_lowercase(), params)
}

#[cfg(test)]
mod tests {
    use super::parse_challenge;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="a,b""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "a,b");
        let (s, p) = parse_challenge(r#"Basic realm="kiln-test""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "kiln-test");
    }
}
