//! The knowledge base over HTTP: a tenant's documents (plain text or Markdown) and a BM25
//! search over their chunks (`voxide_runtime::ai::kb`). The index is built from the stored
//! documents for each search: they are the whole truth, and a tenant's base is small.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use voxide_runtime::ai::kb::{self, ChunkOptions, Index};
use voxide_store::{KbDocument, Role};

use crate::{ApiError, ApiResult, ApiState, Auth, ErrorBody, read_limited};

/// Largest document (4 MiB of text).
pub const MAX_DOCUMENT: usize = 4 << 20;
/// Most hits one search returns.
pub const MAX_HITS: usize = 50;

#[utoipa::path(get, path = "/api/v1/kb/documents", tag = "kb",
    responses((status = 200, body = [KbDocument])))]
pub(crate) async fn list_documents(
    State(s): State<ApiState>,
    auth: Auth,
) -> ApiResult<Json<Vec<KbDocument>>> {
    Ok(Json(s.store.kb_documents(auth.tenant()).await?))
}

/// Add a document, or replace its text: the body is UTF-8 text (plain or Markdown).
#[utoipa::path(put, path = "/api/v1/kb/documents/{name}", tag = "kb",
    params(("name" = String, Path, description = "1-64 of a-z 0-9 - _ .")),
    request_body(content = String, content_type = "text/markdown"),
    responses((status = 201, body = KbDocument, description = "added"),
        (status = 200, body = KbDocument, description = "replaced"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub(crate) async fn put_document(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
    request: Request,
) -> ApiResult<(StatusCode, Json<KbDocument>)> {
    auth.require(Role::Deploy)?;
    let body = read_limited(request.into_body(), MAX_DOCUMENT).await?;
    let text = String::from_utf8(body).map_err(|e| {
        ApiError::invalid(format!(
            "the document is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid("the document is empty"));
    }
    let (doc, created) = s.store.put_kb_document(auth.tenant(), &name, &text).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(doc)))
}

#[utoipa::path(delete, path = "/api/v1/kb/documents/{name}", tag = "kb",
    params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_document(
    State(s): State<ApiState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Deploy)?;
    s.store.delete_kb_document(auth.tenant(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct SearchQuery {
    /// The question.
    q: String,
    /// Hits wanted (default 5, at most 50).
    k: Option<usize>,
}

/// A chunk that matched.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KbHit {
    pub document: String,
    /// The chunk's place in its document, from 0.
    pub chunk: usize,
    pub heading: Option<String>,
    pub text: String,
    /// BM25 score: higher is better; comparable within one search only.
    pub score: f64,
}

/// The chunks that best answer `q`, best first.
#[utoipa::path(get, path = "/api/v1/kb/search", tag = "kb", params(SearchQuery),
    responses((status = 200, body = [KbHit]), (status = 400, body = ErrorBody)))]
pub(crate) async fn search(
    State(s): State<ApiState>,
    auth: Auth,
    Query(query): Query<SearchQuery>,
) -> ApiResult<Json<Vec<KbHit>>> {
    if query.q.trim().is_empty() {
        return Err(ApiError::invalid("q: give the question to search for"));
    }
    let k = query.k.unwrap_or(5).clamp(1, MAX_HITS);
    let mut index = Index::default();
    for (name, text) in s.store.kb_texts(auth.tenant()).await? {
        for c in kb::chunk(&name, &text, ChunkOptions::default()) {
            index.add(c);
        }
    }
    let hits = index
        .search(&query.q, k)
        .into_iter()
        .map(|h| KbHit {
            document: h.chunk.document.clone(),
            chunk: h.chunk.ordinal,
            heading: h.chunk.heading.clone(),
            text: h.chunk.text.clone(),
            score: (h.score * 1000.0).round() / 1000.0,
        })
        .collect();
    Ok(Json(hits))
}
