//! Errors as the Docker API reports them: a status code and `{"message": "…"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to a client. The message names the input it is about.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad tar, bad parameter, bad reference).
    #[error("{0}")]
    BadRequest(String),
    /// 401: the registry refused the credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such image (or endpoint).
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the store (an image referenced by several names).
    #[error("{0}")]
    Conflict(String),
    /// 501: a Docker feature kiln does not provide (containers, BuildKit sessions).
    #[error("{0}")]
    NotImplemented(String),
    /// 500: the engine, the store or a registry failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn no_such_image(name: &str) -> ApiError {
        ApiError::NotFound(format!("No such image: {name}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}
