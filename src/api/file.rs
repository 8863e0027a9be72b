//! Temporary files: uploaded as multipart, described by id, given to agents as context,
//! gone from disk and database once they expire.

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::call::Call;
use crate::audit::audited;
use crate::auth::{Guard, Policy};
use crate::error::{ApiError, Code, Result};
use crate::http::PathId;
use crate::state::AppState;
use crate::store::StoredFile;

/// The multipart form of an upload.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FileUpload {
    /// The file, in a part named `file`; its filename and content type are kept.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

fn unreadable(e: impl std::fmt::Display) -> ApiError {
    tracing::debug!(error = %e, "multipart body not readable");
    ApiError::invalid(
        "file",
        "send a multipart/form-data body with the file in a part named file",
    )
}

/// A part other than the one file: refused by name, so a client learns what was ignored.
fn extra_part(name: Option<&str>) -> ApiError {
    ApiError::invalid(
        &crate::http::field_label(name.unwrap_or("")),
        "is not a part of this request: send only the file, in a part named file",
    )
}

fn too_large(max: u64) -> ApiError {
    ApiError::with_detail(
        Code::PayloadTooLarge,
        format!("Files are limited to {max} bytes."),
    )
}

/// The longest file name kept, in characters.
pub(crate) const NAME_MAX: usize = 255;
/// The longest content type kept, in bytes (ASCII: as many characters).
pub(crate) const CONTENT_TYPE_MAX: usize = 255;

/// A file name as kept: its last path component, printable, at most [`NAME_MAX`] characters.
fn clean_name(raw: Option<&str>) -> String {
    let base = raw.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = base
        .chars()
        .filter(|c| !c.is_control() && !crate::http::is_bidi_control(*c))
        .take(NAME_MAX)
        .collect();
    if name.trim().is_empty() {
        "upload".to_owned()
    } else {
        name.trim().to_owned()
    }
}

/// Upload a temporary file.
///
/// The file expires (by default after 24 hours) and is then removed. Text files (text/*,
/// JSON, CSV, Markdown) reach an agent as context when named in `fileIds`.
#[utoipa::path(
    post, path = "/api/v1/File",
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = StoredFile)),
)]
async fn upload(
    Call(state, caller): Call,
    headers: axum::http::HeaderMap,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Response> {
    let max = state.settings.max_file_bytes;
    // Refused before the body is read, so before hyper sends `100 Continue`.
    let declared = crate::http::declared_length(&headers);
    if declared.is_some_and(|n| n > max.saturating_add(MULTIPART_ROOM)) {
        return Err(too_large(max));
    }
    let mut multipart = multipart.map_err(unreadable)?;
    // The one part is the file; anything else is named back.
    let field = match multipart.next_field().await {
        Ok(Some(f)) if f.name() == Some("file") => f,
        Ok(Some(f)) => return Err(extra_part(f.name())),
        Ok(None) => {
            return Err(ApiError::invalid(
                "file",
                "is required: send it in a multipart part named file",
            ))
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large(max)),
        Err(e) => return Err(unreadable(e)),
    };
    let id = Uuid::now_v7();
    let name = clean_name(field.file_name());
    let content_type = field
        .content_type()
        .filter(|c| !c.is_empty() && c.len() <= CONTENT_TYPE_MAX)
        .unwrap_or("application/octet-stream")
        .to_owned();
    let saved = match save(&state, id, field, max).await {
        Ok(size) => match multipart.next_field().await {
            Ok(None) => Ok(size),
            Ok(Some(f)) => Err(extra_part(f.name())),
            Err(e) => Err(unreadable(e)),
        },
        Err(e) => Err(e),
    };
    let size = match saved {
        Ok(size) => size,
        Err(e) => {
            state.files.remove(id).await;
            return Err(e);
        }
    };
    let now = state.settings.clock.now();
    let file = StoredFile {
        id,
        name,
        size: size as i64,
        content_type,
        created_at: now,
        expires_at: now.plus(state.settings.file_ttl),
    };
    if let Err(e) = state
        .store
        .create_file(caller.org_id, &file, caller.audit("file.uploaded", id))
        .await
    {
        state.files.remove(id).await;
        return Err(e.into());
    }
    Ok(audited((StatusCode::CREATED, Json(file))))
}

/// Streams the part to disk, counting; the file is in place and synced before it is
/// acknowledged, so an answered upload survives a crash.
async fn save(state: &AppState, id: Uuid, mut field: Field<'_>, max: u64) -> Result<u64> {
    let partial = state.files.partial_path(id);
    let io = |e: std::io::Error| ApiError::internal("writing an upload", e);
    let mut out = tokio::fs::File::create(&partial).await.map_err(io)?;
    let mut size: u64 = 0;
    loop {
        match field.chunk().await {
            Ok(Some(bytes)) => {
                size += bytes.len() as u64;
                if size > max {
                    return Err(too_large(max));
                }
                out.write_all(&bytes).await.map_err(io)?;
            }
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large(max)),
            Err(e) => return Err(unreadable(e)),
        }
    }
    out.sync_all().await.map_err(io)?;
    drop(out);
    tokio::fs::rename(&partial, state.files.path(id))
        .await
        .map_err(io)?;
    Ok(size)
}

/// Get a file's metadata.
#[utoipa::path(get, path = "/api/v1/File/{fileId}", responses((status = 200, body = StoredFile)))]
async fn get_file(Call(state, caller): Call, PathId(id): PathId) -> Result<Json<StoredFile>> {
    Ok(Json(
        state
            .store
            .get_file(caller.org_id, id, state.settings.clock.now())
            .await?,
    ))
}

/// Uploads may be larger than JSON bodies: up to `max_file_bytes` plus room for the form.
/// Room for the multipart framing around the file: boundaries and part headers.
const MULTIPART_ROOM: u64 = 64 * 1024;

pub fn router(max_file_bytes: u64) -> OpenApiRouter<AppState> {
    let limit =
        usize::try_from(max_file_bytes.saturating_add(MULTIPART_ROOM)).unwrap_or(usize::MAX);
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::max(limit))
        .routes(routes!(get_file))
        .guard(Policy::STANDARD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_their_paths_and_control_characters() {
        assert_eq!(clean_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(
            clean_name(Some("C:\\\\Users\\\\me\\\\notes.txt")),
            "notes.txt"
        );
        assert_eq!(clean_name(Some("a\u{0}b.txt")), "ab.txt");
        assert_eq!(clean_name(Some("invoice\u{202E}fdp.exe")), "invoicefdp.exe");
        assert_eq!(clean_name(None), "upload");
    }
}
