//! `docker images`, `inspect`, `history`, `tag` and `rmi` over the local image store.

use crate::error::ApiError;
use crate::query::Query;
use crate::store::{read_content, ImageContent, ImageRecord};
use crate::Shared;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_oci::Reference;
use serde_json::{json, Value};

fn familiar(refs: &[Reference]) -> Vec<String> {
    refs.iter().map(Reference::familiar).collect()
}

fn repo_digests(image: &ImageRecord) -> Vec<String> {
    image
        .repo_digests
        .iter()
        .filter_map(|d| Reference::parse(d).ok())
        .map(|r| r.familiar())
        .collect()
}

fn content(api: &Shared, image: &ImageRecord) -> Result<ImageContent, ApiError> {
    Ok(read_content(&api.engine.inner().content, image)?)
}

fn created_secs(content: &ImageContent, image: &ImageRecord) -> i64 {
    content.config_json["created"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(image.stored_at as i64)
}

/// `GET /images/json`, with the `reference` and `dangling` filters.
pub fn list(api: &Shared, query: &Query) -> Result<Response, ApiError> {
    let filters: Value = match query.get("filters") {
        Some(f) if !f.is_empty() => serde_json::from_str(f)
            .map_err(|e| ApiError::BadRequest(format!("invalid filters {f:?}: {e}")))?,
        _ => json!({}),
    };
    let keys = |name: &str| -> Vec<String> {
        match &filters[name] {
            Value::Object(m) => m.keys().cloned().collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    };
    let references = keys("reference");
    let dangling = keys("dangling").first().map(|v| v == "true" || v == "1");
    let mut out = Vec::new();
    for (image, tags) in api.store.list() {
        if dangling.is_some_and(|d| d != tags.is_empty()) {
            continue;
        }
        let mut shown = familiar(&tags);
        if !references.is_empty() {
            shown.retain(|t| references.iter().any(|p| reference_matches(p, t)));
            if shown.is_empty() {
                continue;
            }
        }
        let Ok(c) = content(api, &image) else {
            tracing::warn!(id = %image.id, "image content missing from the content store");
            continue;
        };
        out.push(json!({
            "Id": image.id,
            "ParentId": "",
            "RepoTags": shown,
            "RepoDigests": repo_digests(&image),
            "Created": created_secs(&c, &image),
            "Size": c.size(),
            "VirtualSize": c.size(),
            "SharedSize": -1,
            "Labels": labels(&c),
            "Containers": -1,
        }));
    }
    out.sort_by_key(|i| std::cmp::Reverse(i["Created"].as_i64().unwrap_or(0)));
    Ok(Json(out).into_response())
}

fn labels(c: &ImageContent) -> Value {
    match &c.config_json["config"]["Labels"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    }
}

/// Docker's `reference` filter: `repo` matches any tag of it, `repo:tag` one tag; `*` globs.
fn reference_matches(pattern: &str, familiar: &str) -> bool {
    let has_tag = pattern
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'));
    let subject = if has_tag {
        familiar
    } else {
        let last_slash = familiar.rfind('/').map_or(0, |i| i + 1);
        match familiar[last_slash..].rfind(':') {
            Some(i) => &familiar[..last_slash + i],
            None => familiar,
        }
    };
    glob(pattern.as_bytes(), subject.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

fn find(api: &Shared, name: &str) -> Result<crate::store::Found, ApiError> {
    api.store
        .find(name)
        .ok_or_else(|| ApiError::no_such_image(name))
}

/// `GET /images/{name}/json`.
pub fn inspect(api: &Shared, name: &str) -> Result<Response, ApiError> {
    let found = find(api, name)?;
    let image = found.image;
    let c = content(api, &image)?;
    let cfg = &c.config_json;
    let tags = api.store.tags_of(&image.id);
    let mut body = json!({
        "Id": image.id,
        "RepoTags": familiar(&tags),
        "RepoDigests": repo_digests(&image),
        "Parent": "",
        "Comment": "",
        "Created": cfg["created"].as_str().unwrap_or("1970-01-01T00:00:00Z"),
        "DockerVersion": "",
        "Author": cfg["author"].as_str().unwrap_or(""),
        "Config": cfg["config"].clone(),
        "Architecture": cfg["architecture"].clone(),
        "Os": cfg["os"].clone(),
        "Size": c.size(),
        "VirtualSize": c.size(),
        "GraphDriver": {"Name": "kiln", "Data": null},
        "RootFS": {"Type": "layers", "Layers": cfg["rootfs"]["diff_ids"].clone()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": {"mediaType": image.media_type, "digest": image.manifest, "size": c.manifest.len()},
    });
    if let Some(v) = cfg["variant"].as_str() {
        body["Variant"] = json!(v);
    }
    Ok(Json(body).into_response())
}

/// `GET /images/{name}/history`, newest first like Docker.
pub fn history(api: &Shared, name: &str) -> Result<Response, ApiError> {
    let found = find(api, name)?;
    let c = content(api, &found.image)?;
    let tags = familiar(&api.store.tags_of(&found.image.id));
    let history = c.config_json["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut layer_sizes = c.layers.iter().map(|l| l.1);
    let mut out: Vec<Value> = history
        .iter()
        .map(|h| {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            let size = if empty {
                0
            } else {
                layer_sizes.next().unwrap_or(0)
            };
            json!({
                "Id": "<missing>",
                "Created": h["created"].as_str().and_then(parse_rfc3339).unwrap_or(0),
                "CreatedBy": h["created_by"].as_str().unwrap_or(""),
                "Tags": null,
                "Size": size,
                "Comment": h["comment"].as_str().unwrap_or(""),
            })
        })
        .collect();
    out.reverse();
    if let Some(top) = out.first_mut() {
        top["Id"] = json!(found.image.id);
        top["Tags"] = json!(tags);
    }
    Ok(Json(out).into_response())
}

/// `POST /images/{name}/tag?repo=…&tag=…`.
pub fn tag(api: &Shared, name: &str, query: &Query) -> Result<Response, ApiError> {
    let found = find(api, name)?;
    let repo = query
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::BadRequest("tag: repo is required".into()))?;
    let tag = query.get("tag").filter(|t| !t.is_empty());
    let text = match tag {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let target = Reference::parse(&text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if target.digest.is_some() {
        return Err(ApiError::BadRequest(format!(
            "refusing to create a tag with a digest reference: {text}"
        )));
    }
    api.store.tag(&found.image.id, &target)?;
    Ok(StatusCode::CREATED.into_response())
}

/// `DELETE /images/{name}`: untag a name, deleting the image with its last name; by ID,
/// delete the image (with `force` when several names point at it).
pub fn remove(api: &Shared, name: &str, query: &Query) -> Result<Response, ApiError> {
    let found = find(api, name)?;
    let id = found.image.id.clone();
    let mut out = Vec::new();
    match found.tag {
        Some(tag) => {
            api.store.untag(&tag)?;
            out.push(json!({"Untagged": tag.familiar()}));
            if api.store.tags_of(&id).is_empty() {
                api.store.remove(&id)?;
                out.push(json!({"Deleted": id}));
            }
        }
        None => {
            let tags = api.store.tags_of(&id);
            if tags.len() > 1 && !query.flag("force") {
                let short = &id.trim_start_matches("sha256:")[..12.min(id.len() - 7)];
                return Err(ApiError::Conflict(format!(
                    "conflict: unable to delete {short} (must be forced) - image is referenced \
                     in multiple repositories"
                )));
            }
            for t in api.store.remove(&id)? {
                out.push(json!({"Untagged": t.familiar()}));
            }
            out.push(json!({"Deleted": id}));
        }
    }
    Ok(Json(out).into_response())
}

/// `2024-01-02T03:04:05(.123)Z` (or `+00:00`) → seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        tz => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let hh: i64 = tz.get(1..3)?.parse().ok()?;
            let mm: i64 = tz.get(4..6)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("2025-11-25T22:33:20.5Z"), Some(1_764_110_000));
        assert_eq!(
            parse_rfc3339("2025-11-25T23:33:20+01:00"),
            Some(1_764_110_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn reference_filter_matches_like_docker() {
        for (pattern, name, want) in [
            ("app", "app:1", true),
            ("app:1", "app:1", true),
            ("app:2", "app:1", false),
            ("127.0.0.1:5000/x", "127.0.0.1:5000/x:1", true),
            ("127.0.0.1:5000/*", "127.0.0.1:5000/x:1", true),
            ("ap", "app:1", false),
        ] {
            assert_eq!(reference_matches(pattern, name), want, "{pattern} {name}");
        }
    }
}
