//! How the store's types map to columns, the same way on both databases: each value type
//! to one column (read back and bound), and each stored type to its list of columns,
//! declared once.

use uuid::Uuid;

use super::backend::{Backend, Columns, Id};
use super::model::*;
use super::statement::{FromRow, Statement, ToRow};
use crate::clock::Timestamp;
use crate::key::{Environment, KeyDigest, Scope};

/// A value stored in one column.
pub(super) trait ColumnValue: Sized {
    /// The value in column `col` of `row`.
    fn read(row: &impl Columns, col: &str) -> StoreResult<Self>;
    /// Binds the value to the statement's next placeholder.
    fn bind_to<'q, DB: Backend>(&'q self, statement: Statement<'q, DB>) -> Statement<'q, DB>;
}

/// Declares a [`ColumnValue`]: the [`Columns`] method that reads the column, how that becomes
/// the value (given the column's name, for errors), and what is bound for it.
macro_rules! column_value {
    ($type:ty: $get:ident, $read:expr, $bind:expr) => {
        impl ColumnValue for $type {
            fn read(row: &impl Columns, col: &str) -> StoreResult<Self> {
                $read(row.$get(col)?, col)
            }
            fn bind_to<'q, DB: Backend>(
                &'q self,
                statement: Statement<'q, DB>,
            ) -> Statement<'q, DB> {
                statement.bind($bind(self))
            }
        }
    };
}

column_value!(String: text, |s, _| Ok(s), String::as_str);
column_value!(Option<String>: opt_text, |s, _| Ok(s), Option::as_deref);
column_value!(i64: int, |n, _| Ok(n), |n: &i64| *n);
column_value!(bool: flag, |b, _| Ok(b), |b: &bool| *b);
column_value!(Uuid: opt_id, not_null, |id: &Uuid| Id(*id));
column_value!(Option<Uuid>: opt_id, |id, _| Ok(id), |id: &Option<Uuid>| id.map(Id));
// Times are milliseconds since the Unix epoch.
column_value!(Timestamp: int, |n, _| Ok(Timestamp(n)), |t: &Timestamp| t.millis());
column_value!(Option<Timestamp>: opt_int, |n: Option<i64>, _| Ok(n.map(Timestamp)),
    |t: &Option<Timestamp>| t.map(Timestamp::millis));
// A key's rate limit, and an HTTP status.
column_value!(Option<u32>: opt_int, |n: Option<i64>, _| Ok(n.map(|n| n as u32)),
    |n: &Option<u32>| n.map(i64::from));
column_value!(Option<u16>: opt_int, |n: Option<i64>, _| Ok(n.map(|n| n as u16)),
    |n: &Option<u16>| n.map(i64::from));
column_value!(KeyDigest: bytes, digest, KeyDigest::as_bytes);

fn not_null<T>(value: Option<T>, col: &str) -> StoreResult<T> {
    value.ok_or_else(|| StoreError::Internal(format!("{col}: unexpected NULL")))
}

fn digest(bytes: Vec<u8>, _: &str) -> StoreResult<KeyDigest> {
    KeyDigest::from_slice(&bytes).ok_or_else(|| StoreError::Internal("digest length".into()))
}

/// Enumerations, stored as their `as_str` and read back with their `parse`.
macro_rules! enum_column_values {
    ($($type:ty),+) => {$(
        column_value!($type: text, |s: String, col| <$type>::parse(&s)
            .ok_or_else(|| StoreError::Internal(format!("{col} {s:?}"))), |v: &$type| v.as_str());
    )+};
}

enum_column_values!(
    Role,
    Environment,
    Scope,
    TaskStatus,
    Visibility,
    MessageRole
);

macro_rules! column_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident = $column:literal) => {
        $column
    };
}

/// Declares how a type is stored: `$columns`, its columns as statements select and insert
/// them (after `prefixed`, each column's prefix, such as a table's alias), and its
/// [`FromRow`] and [`ToRow`], each field in its column (the field's name, or the one after
/// `=`) as its type's [`ColumnValue`]. A new column is a field here and in the type.
macro_rules! stored {
    ($type:ident, $columns:ident: $($fields:tt)+) => {
        stored!($type, $columns prefixed "": $($fields)+);
    };
    ($type:ident, $columns:ident prefixed $prefix:literal:
        $first:ident $(= $first_column:literal)? $(, $field:ident $(= $column:literal)?)*) => {
        pub(super) const $columns: &str = concat!(
            $prefix,
            column_name!($first $(= $first_column)?)
            $(, ", ", $prefix, column_name!($field $(= $column)?))*
        );

        impl FromRow for $type {
            fn from_row(row: &impl Columns) -> StoreResult<Self> {
                Ok($type {
                    $first: ColumnValue::read(row, column_name!($first $(= $first_column)?))?,
                    $($field: ColumnValue::read(row, column_name!($field $(= $column)?))?,)*
                })
            }
        }

        impl ToRow for $type {
            fn bind_columns<'q, DB: Backend>(
                &'q self,
                statement: Statement<'q, DB>,
            ) -> Statement<'q, DB> {
                let statement = self.$first.bind_to(statement);
                $(let statement = self.$field.bind_to(statement);)*
                statement
            }
        }
    };
}

stored!(Organization, ORG_COLUMNS: id, name, created_at);
stored!(User, USER_COLUMNS: id, email, created_at);
stored!(KeyRecord, KEY_COLUMNS prefixed "k.": id, org_id, name, environment, scope, hint,
    created_by, created_at, expires_at, rate_limit, last_used_at, replaced_by, grace_ends_at);
stored!(Agent, AGENT_COLUMNS: id, name, description, instructions, model, created_at, updated_at);
stored!(Named, NAMED_COLUMNS: id, name, description, created_at, updated_at);
stored!(Task, TASK_COLUMNS: id, workspace_id, title, description, status, created_at, updated_at);
stored!(Connection, CONNECTION_COLUMNS: id, name, kind = "type", visibility, created_by,
    created_at, updated_at);
stored!(Message, MESSAGE_COLUMNS: id, role, content, created_at);
stored!(StoredFile, FILE_COLUMNS: id, name, size, content_type, created_at, expires_at);
stored!(RealtimeSession, REALTIME_COLUMNS: id, org_id, agent_id, conversation_id, continues,
    secret_digest, key_id, key_name, created_at, expires_at);
stored!(AuditRecord, AUDIT_COLUMNS: id, org_id, at, action, actor, key_id, key_name, method, path,
    status, request_id, target_id);

/// A key with its digest (`digest`), its organization's name (`org_name`) and its owner's
/// role (`owner_role`, NULL once the membership the key was created under has ended).
impl FromRow for KeyGrant {
    fn from_row(row: &impl Columns) -> StoreResult<Self> {
        Ok(KeyGrant {
            key: KeyRecord::from_row(row)?,
            digest: ColumnValue::read(row, "digest")?,
            org_name: row.text("org_name")?,
            owner_role: row
                .opt_text("owner_role")?
                .map(|r| Role::parse(&r).ok_or_else(|| StoreError::Internal(format!("role {r:?}"))))
                .transpose()?,
        })
    }
}

/// A member's role and the id of their membership (columns `role` and `id`).
pub(super) fn membership_from_row(row: &impl Columns) -> StoreResult<(Role, Uuid)> {
    Ok((Role::read(row, "role")?, Uuid::read(row, "id")?))
}

/// A conversation's row (`id`, `agent_id`, `created_at`, `updated_at`), without its
/// messages, which are read apart.
impl FromRow for Conversation {
    fn from_row(row: &impl Columns) -> StoreResult<Self> {
        Ok(Conversation {
            id: ColumnValue::read(row, "id")?,
            agent_id: ColumnValue::read(row, "agent_id")?,
            created_at: ColumnValue::read(row, "created_at")?,
            updated_at: ColumnValue::read(row, "updated_at")?,
            messages: Vec::new(),
        })
    }
}

/// A conversation's agent and the messages it holds (`agent_id`, `held`), without the
/// recent ones, which are read apart.
impl FromRow for ConversationTail {
    fn from_row(row: &impl Columns) -> StoreResult<Self> {
        Ok(ConversationTail {
            agent_id: ColumnValue::read(row, "agent_id")?,
            held: row.int("held")?,
            recent: Vec::new(),
        })
    }
}

/// A session as stored (its [`REALTIME_COLUMNS`] and `used_at`), if it may be claimed now
/// with this secret: `NotFound` for a wrong secret (which does not use the session up),
/// `Conflict` for a used or expired one.
pub(super) fn claimable_session(
    row: &impl Columns,
    secret: &KeyDigest,
    now: Timestamp,
) -> StoreResult<RealtimeSession> {
    let session = RealtimeSession::from_row(row)?;
    if !session.secret_digest.matches(secret) {
        return Err(StoreError::NotFound);
    }
    if row.opt_int("used_at")?.is_some() || session.expires_at <= now {
        return Err(StoreError::Conflict(
            "the session was used already or has expired".into(),
        ));
    }
    Ok(session)
}

/// The records of an export page (each row with its `seq`) and the cursor of the next, if
/// the page was full.
pub(super) fn audit_page<R: Columns>(
    rows: &[R],
    limit: i64,
) -> StoreResult<(Vec<AuditRecord>, Option<AuditCursor>)> {
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(AuditCursor {
            at: last.int("at")?,
            seq: last.int("seq")?,
        }),
        _ => None,
    };
    let records = rows
        .iter()
        .map(AuditRecord::from_row)
        .collect::<StoreResult<_>>()?;
    Ok((records, next))
}
