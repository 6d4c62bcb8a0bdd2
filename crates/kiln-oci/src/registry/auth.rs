//! Registry authentication: `WWW-Authenticate` challenges, bearer tokens from a token server
//! (cached per host and scope until they expire) and basic auth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde::Deserialize;

use super::{error_body, Access, RegistryClient, RegistryError};
use crate::auth::Credentials;

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Unknown,
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
    pub(crate) fn parse(header: &str) -> Challenge {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Challenge::Basic,
            "bearer" => match params.get("realm") {
                Some(realm) => Challenge::Bearer {
                    realm: realm.clone(),
                    service: params.get("service").cloned(),
                    scope: params.get("scope").cloned(),
                },
                None => Challenge::Unknown,
            },
            _ => Challenge::Unknown,
        }
    }
}

/// `key="value", key2=value2` with quoted commas and `\"` escapes.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
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
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

struct CachedToken {
    header: String,
    expires: Instant,
}

/// Authorization headers known so far. Tokens are per host and scope set; basic auth per host.
#[derive(Default)]
pub(crate) struct AuthCache {
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
    basic: Mutex<HashMap<String, String>>,
}

impl AuthCache {
    pub(crate) fn header(&self, host: &str, scopes: &[String]) -> Option<String> {
        let key = (host.to_string(), scopes.join(" "));
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tokens.get(&key).filter(|t| t.expires > Instant::now()) {
            return Some(t.header.clone());
        }
        drop(tokens);
        let basic = self.basic.lock().unwrap_or_else(|e| e.into_inner());
        basic.get(host).cloned()
    }
}

fn basic_header(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl RegistryClient {
    /// Answers a 401 challenge by caching a header that the retried request will carry.
    pub(super) async fn authenticate(
        &self,
        registry: &str,
        access: &Access,
        client: &reqwest::Client,
        challenge: Challenge,
    ) -> Result<(), RegistryError> {
        let creds = self.inner.creds.credentials(registry).await;
        let denied = |reason: String| RegistryError::Unauthorized {
            reference: access.reference.clone(),
            action: access.action,
            reason,
        };
        let no_creds =
            || format!("authentication required and no credentials configured for {registry}");
        match challenge {
            Challenge::Basic => {
                let c = creds.ok_or_else(|| denied(no_creds()))?;
                if c.is_identity_token() {
                    return Err(denied(
                        "an identity token cannot be used for basic auth".into(),
                    ));
                }
                tracing::debug!(%registry, "using basic auth");
                self.inner
                    .auth
                    .basic
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(registry.to_string(), basic_header(&c));
                Ok(())
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut scopes = access.scopes.clone();
                if let Some(s) = scope.filter(|s| !scopes.contains(s)) {
                    scopes.push(s);
                }
                let realm_url =
                    reqwest::Url::parse(&realm).map_err(|e| RegistryError::Protocol {
                        url: realm.clone(),
                        reason: format!("bad token realm: {e}"),
                    })?;
                let realm_host = realm_url.host_str().unwrap_or_default().to_string();
                let resp = self
                    .send_retrying(&realm_host, || {
                        let rb = match &creds {
                            Some(c) if c.is_identity_token() => {
                                let mut form = vec![
                                    ("grant_type", "refresh_token".to_string()),
                                    ("refresh_token", c.password.clone()),
                                    ("client_id", "kiln".to_string()),
                                    ("scope", scopes.join(" ")),
                                ];
                                if let Some(s) = &service {
                                    form.push(("service", s.clone()));
                                }
                                client.post(realm_url.clone()).form(&form)
                            }
                            _ => {
                                let mut q: Vec<(&str, &str)> =
                                    scopes.iter().map(|s| ("scope", s.as_str())).collect();
                                if let Some(s) = &service {
                                    q.push(("service", s));
                                }
                                let rb = client.get(realm_url.clone()).query(&q);
                                match &creds {
                                    Some(c) => {
                                        rb.header(reqwest::header::AUTHORIZATION, basic_header(c))
                                    }
                                    None => rb,
                                }
                            }
                        };
                        Ok(rb)
                    })
                    .await?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(denied(match creds {
                        Some(_) => "authorization failed".into(),
                        None => no_creds(),
                    }));
                }
                if !status.is_success() {
                    return Err(RegistryError::Server {
                        status: status.as_u16(),
                        url: realm_url.to_string(),
                        body: error_body(resp).await,
                    });
                }
                let body: TokenResponse =
                    resp.json().await.map_err(|_| RegistryError::Protocol {
                        url: realm_url.to_string(),
                        reason: "token response is not the expected JSON".into(),
                    })?;
                let token = body
                    .token
                    .or(body.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| RegistryError::Protocol {
                        url: realm_url.to_string(),
                        reason: "token response has no token".into(),
                    })?;
                let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(60));
                tracing::debug!(%registry, scopes = %scopes.join(" "), "obtained registry token");
                self.inner
                    .auth
                    .tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        (registry.to_string(), access.scopes.join(" ")),
                        CachedToken {
                            header: format!("Bearer {token}"),
                            expires: Instant::now() + lifetime - Duration::from_secs(10),
                        },
                    );
                Ok(())
            }
            Challenge::Unknown => Err(denied("unsupported authentication scheme".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_by_table() {
        let cases = [
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
                Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/busybox:pull".into()),
                },
            ),
            (
                r#"Bearer realm="http://127.0.0.1:1/t", scope="repository:a:pull,push""#,
                Challenge::Bearer {
                    realm: "http://127.0.0.1:1/t".into(),
                    service: None,
                    scope: Some("repository:a:pull,push".into()),
                },
            ),
            (
                r#"bearer realm=http://x/t,service=reg"#,
                Challenge::Bearer {
                    realm: "http://x/t".into(),
                    service: Some("reg".into()),
                    scope: None,
                },
            ),
            (r#"Basic realm="Registry Realm""#, Challenge::Basic),
            ("Bearer service=\"x\"", Challenge::Unknown),
            ("Negotiate", Challenge::Unknown),
            ("", Challenge::Unknown),
        ];
        for (input, want) in cases {
            assert_eq!(Challenge::parse(input), want, "{input}");
        }
    }

    #[test]
    fn cached_headers_expire_and_basic_is_per_host() {
        let cache = AuthCache::default();
        let scopes = vec!["repository:a:pull".to_string()];
        assert_eq!(cache.header("h", &scopes), None);
        cache.tokens.lock().unwrap().insert(
            ("h".into(), scopes.join(" ")),
            CachedToken {
                header: "Bearer old".into(),
                expires: Instant::now() - Duration::from_secs(1),
            },
        );
        assert_eq!(cache.header("h", &scopes), None);
        cache
            .basic
            .lock()
            .unwrap()
            .insert("h".into(), "Basic x".into());
        assert_eq!(cache.header("h", &scopes).as_deref(), Some("Basic x"));
        assert_eq!(cache.header("other", &scopes), None);
    }
}
