//! `POST /images/{name}/push`: upload an image from the store with kiln-oci's registry client,
//! using the credentials the CLI sends in `X-Registry-Auth`.

use crate::error::ApiError;
use crate::query::Query;
use crate::registry_auth::parse_auth_header;
use crate::store::{read_content, ImageRecord};
use crate::stream::Messages;
use crate::Shared;
use axum::http::HeaderMap;
use axum::response::Response;
use kiln_oci::{
    CredentialSource, Digest, NoCredentials, Reference, RegistryClient, StaticCredentials,
};
use serde_json::json;
use std::sync::Arc;

/// True when the last path component of `name` carries a `:tag`.
fn has_tag(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':') || name.contains('@')
}

pub async fn push(
    api: &Arc<Shared>,
    name: &str,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let auth = parse_auth_header(headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()))
        .map_err(ApiError::BadRequest)?;
    let repo = Reference::parse(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let tag = query.get("tag").filter(|t| !t.is_empty());
    let targets: Vec<(Reference, ImageRecord)> = if tag.is_some() || has_tag(name) {
        let r = match tag {
            Some(t) => repo.with_tag(t),
            None => repo.clone(),
        };
        let found = api.store.find(&r.to_string()).ok_or_else(|| {
            ApiError::NotFound(format!(
                "An image does not exist locally with the tag: {}",
                r.familiar()
            ))
        })?;
        vec![(r, found.image)]
    } else {
        let tags = api.store.tags_in_repository(&repo.repository_ref());
        if tags.is_empty() {
            return Err(ApiError::NotFound(format!(
                "An image does not exist locally with the tag: {}",
                repo.with_tag("latest").familiar()
            )));
        }
        tags.into_iter()
            .filter_map(|(r, id)| Some((r, api.store.find(&id)?.image)))
            .collect()
    };
    let creds: Arc<dyn CredentialSource> = match auth.credentials() {
        Some(c) => Arc::new(StaticCredentials::default().with(&repo.registry, c)),
        None => Arc::new(NoCredentials),
    };
    let registry = RegistryClient::new(api.engine.inner().registry_config.clone(), creds);

    let (messages, response) = Messages::response();
    let api = api.clone();
    tokio::spawn(async move {
        let work = async {
            for (r, image) in &targets {
                push_one(&api, &registry, r, image, &messages).await?;
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            result = work => {
                if let Err(e) = result {
                    messages.error(&e);
                }
            }
            _ = messages.closed() => tracing::info!("docker push client went away"),
        }
    });
    Ok(response)
}

async fn push_one(
    api: &Shared,
    registry: &RegistryClient,
    r: &Reference,
    image: &ImageRecord,
    messages: &Messages,
) -> Result<(), String> {
    let content_store = &api.engine.inner().content;
    let content = read_content(content_store, image).map_err(|e| e.to_string())?;
    messages.status(format!(
        "The push refers to repository [{}]",
        r.repository_ref()
    ));
    let short = |d: &str| {
        d.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    let parse = |d: &str| {
        d.parse::<Digest>()
            .map_err(|e| format!("{}: {e}", image.id))
    };
    for (d, _, _) in content.layers.iter().rev() {
        messages.layer_status(&short(d), "Preparing");
    }
    for (d, _, _) in content.layers.iter().rev() {
        let digest = parse(d)?;
        let from = image
            .layer_sources
            .get(d)
            .and_then(|s| Reference::parse(s).ok());
        registry
            .push_blob(r, &digest, content_store, from.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        messages.layer_status(&short(d), "Pushed");
    }
    registry
        .push_blob(r, &parse(&image.id)?, content_store, None)
        .await
        .map_err(|e| e.to_string())?;
    let digest = registry
        .push_manifest(r, &content.manifest, &image.media_type)
        .await
        .map_err(|e| e.to_string())?;
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let size = content.manifest.len();
    messages.status(format!("{tag}: digest: {digest} size: {size}"));
    messages.send(json!({
        "progressDetail": {},
        "aux": {"Tag": tag, "Digest": digest.to_string(), "Size": size},
    }));
    api.store
        .add_repo_digest(&image.id, format!("{}@{digest}", r.repository_ref()))
        .map_err(|e| e.to_string())?;
    Ok(())
}
