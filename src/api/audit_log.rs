//! `GET /api/v1/AuditLog`: what happened in the organization, newest first, as JSON pages
//! or (with `Accept: text/csv`) every matching record as one streamed CSV file.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::call::Call;
use crate::auth::{Guard, Policy};
use crate::error::Result;
use crate::http::{FieldErrors, List, Paging, Params};
use crate::state::AppState;
use crate::store::{AuditCursor, AuditFilter, AuditRecord, Store};

/// Records read from the database for each chunk of a CSV export.
const EXPORT_CHUNK: i64 = 1_000;
const CSV_HEADER: &str =
    "id,at,action,actor,keyId,keyName,method,path,status,requestId,targetId\r\n";

/// List audit records: key lifecycle events, changes, and every authenticated request.
///
/// With `Accept: text/csv` the answer is every matching record (not one page: `Offset` and
/// `Limit` apply to JSON only) as CSV, streamed as it is read.
#[utoipa::path(
    get, path = "/api/v1/AuditLog",
    params(
        ("From" = Option<String>, Query, format = DateTime, description = "Only records at or after this RFC 3339 time"),
        ("To" = Option<String>, Query, format = DateTime, description = "Only records before this RFC 3339 time"),
        ("Action" = Option<String>, Query, description = "Only records of this action, such as `api_key.created`"),
        Paging,
    ),
    responses(
        (status = 200, description = "A page of records, or with `Accept: text/csv` every matching record", content(
            (List<AuditRecord> = "application/json"),
            (String = "text/csv"),
        )),
    ),
)]
async fn list_audit(
    Call(state, caller): Call,
    headers: HeaderMap,
    params: Params,
) -> Result<Response> {
    let mut errors = FieldErrors::default();
    let page = params.page(&mut errors);
    let filter = AuditFilter {
        from: params.time("From", &mut errors),
        to: params.time("To", &mut errors),
        action: params.search("Action", &mut errors).map(str::to_owned),
    };
    errors.check()?;
    if wants_csv(&headers) {
        return Ok(csv_export(Arc::clone(&state.store), caller.org_id, filter));
    }
    let listed = state.store.list_audit(caller.org_id, &filter, page).await?;
    Ok(Json(List::new(listed, page)).into_response())
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
        })
}

/// Streams the export a chunk at a time; a failure part-way ends the stream with an error,
/// so the client sees a broken transfer rather than a file that looks complete.
fn csv_export(store: Arc<dyn Store>, org_id: Uuid, filter: AuditFilter) -> Response {
    struct Walk {
        store: Arc<dyn Store>,
        org_id: Uuid,
        filter: AuditFilter,
        cursor: Option<AuditCursor>,
        started: bool,
        done: bool,
    }
    let walk = Walk {
        store,
        org_id,
        filter,
        cursor: None,
        started: false,
        done: false,
    };
    let body = stream::unfold(walk, |mut walk| async move {
        if walk.done {
            return None;
        }
        let mut chunk = String::new();
        if !walk.started {
            walk.started = true;
            chunk.push_str(CSV_HEADER);
        }
        match walk
            .store
            .export_audit(walk.org_id, &walk.filter, walk.cursor, EXPORT_CHUNK)
            .await
        {
            Ok((records, next)) => {
                for r in &records {
                    csv_row(&mut chunk, r);
                }
                walk.cursor = next;
                walk.done = next.is_none();
                Some((Ok::<_, std::io::Error>(chunk), walk))
            }
            Err(e) => {
                tracing::error!(error = %e, "audit export failed part-way");
                walk.done = true;
                Some((Err(std::io::Error::other("audit export failed")), walk))
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit-log.csv\""),
    );
    response
}

fn csv_row(out: &mut String, r: &AuditRecord) {
    let status = r.status.map(|s| s.to_string());
    let cells = [
        Some(r.id.to_string()),
        Some(r.at.to_string()),
        Some(r.action.clone()),
        Some(r.actor.clone()),
        r.key_id.map(|k| k.to_string()),
        r.key_name.clone(),
        r.method.clone(),
        r.path.clone(),
        status,
        r.request_id.clone(),
        r.target_id.clone(),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell.as_deref().unwrap_or(""));
    }
    out.push_str("\r\n");
}

/// RFC 4180 quoting, and a leading `'` on cells a spreadsheet would run as a formula.
fn csv_cell(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || value.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .guard(Policy::ADMIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let cell = |v: &str| {
            let mut s = String::new();
            csv_cell(&mut s, v);
            s
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=SUM(A1)"), "\"'=SUM(A1)\"");
    }

    #[test]
    fn csv_is_chosen_from_the_accept_header() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static(v));
            wants_csv(&h)
        };
        assert!(with("text/csv"));
        assert!(with("application/json;q=0.5, TEXT/CSV;q=1"));
        assert!(!with("application/json"));
        assert!(!wants_csv(&HeaderMap::new()));
    }
}
