//! `tollgate store copy`: moves a single machine's SQLite file into a PostgreSQL database, so a
//! deployment joins the shared mode without re-issuing a key. Every row is copied as it is: accounts
//! (password hashes, token epochs, disabled), projects, keys of every kind (hashes, scopes, limits,
//! policies, sealed signing secrets, expiry, revocation, the pending revocation of a rotated key, trial
//! devices, last use) and the usage rows of keys and of end users, as values (never added).
//!
//! The whole copy is one PostgreSQL transaction, taken under the store's write lock, and it never
//! changes a row that is there already: a row of the same key that differs (a key revoked since, usage
//! counted since) refuses the copy, and so does any other row in the target unless the operator asks
//! for a merge. Copying again once it succeeded finds every row equal and writes nothing. Afterwards the
//! rows are counted again, per table, in the source and in the target.

mod source;

use std::path::Path;

use super::StoreError;

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Bool,
    Text,
    Bytes,
}

/// One table to copy: its columns and, among the first of them, those of its primary key.
pub(crate) struct Spec {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    pub key_columns: usize,
}

use Kind::{Bool, Bytes, Int, Text};

/// The tables, in the order their rows are written (accounts before the projects and keys that name
/// them). A key's `version` is not copied: the copy gives its keys a version of the target's.
pub(crate) const TABLES: &[Spec] = &[
    Spec {
        name: "accounts",
        columns: &[
            ("id", Text),
            ("email", Text),
            ("password_hash", Text),
            ("plan", Text),
            ("key_cap", Int),
            ("created_at", Int),
            ("token_epoch", Int),
            ("disabled", Bool),
        ],
        key_columns: 1,
    },
    Spec {
        name: "projects",
        columns: &[("id", Text), ("account_id", Text), ("name", Text), ("key_cap", Int), ("created_at", Int)],
        key_columns: 1,
    },
    Spec {
        name: "service_keys",
        columns: &[
            ("id", Text),
            ("key_prefix", Text),
            ("kind", Text),
            ("name", Text),
            ("hash", Bytes),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("account_id", Text),
            ("requests_per_minute", Int),
            ("requests_per_day", Int),
            ("concurrent_requests", Int),
            ("tokens_per_month", Int),
            ("scopes", Text),
            ("providers", Text),
            ("models", Text),
            ("project", Text),
            ("last_used_at", Int),
            ("policy", Text),
            ("description", Text),
            ("metadata", Text),
            ("public_key", Text),
            ("signing_secret", Bytes),
            ("trial_device", Bytes),
        ],
        key_columns: 1,
    },
    Spec {
        name: "usage_daily",
        columns: &[
            ("key_id", Text),
            ("day", Int),
            ("model", Text),
            ("account_id", Text),
            ("requests", Int),
            ("input_tokens", Int),
            ("output_tokens", Int),
        ],
        key_columns: 3,
    },
    Spec {
        name: "usage_end_users",
        columns: &[
            ("key_id", Text),
            ("end_user", Text),
            ("day", Int),
            ("account_id", Text),
            ("requests", Int),
            ("input_tokens", Int),
            ("output_tokens", Int),
        ],
        key_columns: 3,
    },
];

/// One column's values, as the arrays PostgreSQL's `UNNEST` reads.
#[derive(Debug)]
pub(crate) enum Column {
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Int => Column::Int(Vec::new()),
            Kind::Bool => Column::Bool(Vec::new()),
            Kind::Text => Column::Text(Vec::new()),
            Kind::Bytes => Column::Bytes(Vec::new()),
        }
    }
}

/// A table's rows read from the source, column by column.
pub(crate) struct Rows {
    pub spec: &'static Spec,
    pub columns: Vec<Column>,
    pub len: usize,
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Let the target hold rows the source does not have (kept as they are). Rows of the same key
    /// must still be equal.
    pub merge: bool,
}

/// One table after the copy: its rows in the source, in the target, and the target's rows equal to a
/// source row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub source: u64,
    pub target: u64,
    pub equal: u64,
    /// Rows this run wrote (inserted, or a built-in account still as created, set to the source's).
    pub written: u64,
}

impl TableCount {
    /// Whether every source row is in the target as it is (and, without a merge, nothing else is).
    pub fn verified(&self, options: CopyOptions) -> bool {
        self.equal == self.source && (options.merge || self.target == self.source)
    }
}

/// Why the copy wrote nothing: per table, rows of the target the source does not have and rows of the
/// same key that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub tables: Vec<(&'static str, u64, u64)>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the target holds data the copy would not leave as it is; nothing was written:")?;
        for (table, other, differing) in &self.tables {
            write!(f, " {table}: {other} other row(s), {differing} differing row(s);")?;
        }
        Ok(())
    }
}

/// The outcome of a copy that ran: per table, counts (or the refusal, when it wrote nothing).
#[derive(Debug)]
pub enum CopyOutcome {
    Copied(Vec<TableCount>),
    Refused(Refusal),
}

/// Copies the SQLite file at `from` into the PostgreSQL store `to` (its migrations applied first).
pub async fn copy_sqlite_to_postgres(
    from: &Path,
    to: &crate::config::PostgresConfig,
    options: CopyOptions,
) -> Result<CopyOutcome, StoreError> {
    let path = from.to_owned();
    let tables = tokio::task::spawn_blocking(move || source::read(&path))
        .await
        .map_err(|e| StoreError::Unavailable(format!("reading the SQLite file failed: {e}")))??;
    super::PgStore::migrate(to).await?;
    super::postgres::copy_in(to, &tables, options).await
}
