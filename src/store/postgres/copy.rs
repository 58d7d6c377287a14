//! The PostgreSQL side of `store copy` (store::copy): the source's rows staged in temporary tables of
//! one session, compared with the target's, written where missing, and counted again after the commit.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::{bump_version, connection_config, lock_writes, tls};
use crate::config::PostgresConfig;
use crate::store::StoreError;
use crate::store::copy::{Column, CopyOptions, CopyOutcome, Refusal, Rows, Spec, TableCount};

/// Rows sent in one statement while staging.
const CHUNK: usize = 2_000;

/// A built-in account still as the first migration created it: the copy may set it to the source's.
const PRISTINE: &str = "t.id IN ('default', 'trial') AND t.plan = 'default' AND t.email IS NULL
    AND t.password_hash IS NULL AND t.created_at = 0 AND t.token_epoch = 0 AND NOT t.disabled
    AND t.key_cap = CASE t.id WHEN 'default' THEN 10 ELSE 0 END";

/// Copies `tables` into the store `config` names, in one transaction on one connection.
pub(crate) async fn copy_in(
    config: &PostgresConfig,
    tables: &[Rows],
    options: CopyOptions,
) -> Result<CopyOutcome, StoreError> {
    let (pg, tls) = (connection_config(config)?, tls(config)?);
    let (mut client, connection) = pg.connect(tls).await?;
    let driver = tokio::spawn(connection);
    let outcome = copy_on(&mut client, tables, options).await;
    drop(client);
    let _ = driver.await;
    outcome
}

async fn copy_on(client: &mut Client, tables: &[Rows], options: CopyOptions) -> Result<CopyOutcome, StoreError> {
    let tx = client.transaction().await?;
    // Key and account writes of running instances wait for the copy (and it for them).
    lock_writes(&tx).await?;
    for rows in tables {
        stage(&tx, rows).await?;
    }
    let mut refused = Vec::new();
    for rows in tables {
        let (other, differing) = conflicts(&tx, rows.spec).await?;
        if differing > 0 || (other > 0 && !options.merge) {
            refused.push((rows.spec.name, other, differing));
        }
    }
    if !refused.is_empty() {
        // Dropping the transaction rolls it back, the staged rows with it.
        return Ok(CopyOutcome::Refused(Refusal { tables: refused }));
    }
    let mut written = Vec::with_capacity(tables.len());
    let mut version = None;
    for rows in tables {
        written.push(write(&tx, rows.spec, &mut version).await?);
    }
    tx.commit().await?;
    let mut counts = Vec::with_capacity(tables.len());
    for (rows, written) in tables.iter().zip(written) {
        let (target, equal) = count(client, rows.spec).await?;
        counts.push(TableCount { table: rows.spec.name, source: count_u64(rows.len), target, equal, written });
    }
    Ok(CopyOutcome::Copied(counts))
}

fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn names(spec: &Spec) -> impl Iterator<Item = &'static str> + '_ {
    spec.columns.iter().map(|(name, _)| *name)
}

/// `t.a = s.a AND …` over the primary key.
fn same_key(spec: &Spec) -> String {
    names(spec).take(spec.key_columns).map(|c| format!("t.{c} = s.{c}")).collect::<Vec<_>>().join(" AND ")
}

/// `(t.a, t.b, …)` or `(s.a, s.b, …)`: the whole row.
fn row_of(spec: &Spec, alias: &str) -> String {
    format!("({})", names(spec).map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", "))
}

/// The source's rows in `pg_temp.copy_<table>`, a chunk per statement.
async fn stage(tx: &Transaction<'_>, rows: &Rows) -> Result<(), StoreError> {
    let (spec, list) = (rows.spec, names(rows.spec).collect::<Vec<_>>().join(", "));
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS pg_temp.copy_{0};
         CREATE TEMP TABLE copy_{0} AS SELECT {list} FROM {0} WITH NO DATA",
        spec.name
    ))
    .await?;
    let casts: Vec<String> = rows
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = match c {
                Column::Int(_) => "BIGINT[]",
                Column::Bool(_) => "BOOLEAN[]",
                Column::Text(_) => "TEXT[]",
                Column::Bytes(_) => "BYTEA[]",
            };
            format!("${}::{ty}", i + 1)
        })
        .collect();
    let sql = format!("INSERT INTO pg_temp.copy_{} ({list}) SELECT * FROM UNNEST({})", spec.name, casts.join(", "));
    let statement = tx.prepare(&sql).await?;
    let mut start: usize = 0;
    while start < rows.len {
        let end = rows.len.min(start.saturating_add(CHUNK));
        let params: Vec<Box<dyn ToSql + Sync + '_>> = rows
            .columns
            .iter()
            .map(|c| -> Box<dyn ToSql + Sync + '_> {
                match c {
                    Column::Int(v) => Box::new(&v[start..end]),
                    Column::Bool(v) => Box::new(&v[start..end]),
                    Column::Text(v) => Box::new(&v[start..end]),
                    Column::Bytes(v) => Box::new(&v[start..end]),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        tx.execute(&statement, &refs).await?;
        start = end;
    }
    Ok(())
}

/// Rows of the target the source lacks, and rows of the same key that differ (a built-in account still
/// as created aside).
async fn conflicts(tx: &Transaction<'_>, spec: &Spec) -> Result<(u64, u64), StoreError> {
    let (table, keys) = (spec.name, same_key(spec));
    let other: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM pg_temp.copy_{table} s WHERE {keys})"
            ),
            &[],
        )
        .await?
        .get(0);
    let pristine = if table == "accounts" { format!("AND NOT ({PRISTINE})") } else { String::new() };
    let differing: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {table} t JOIN pg_temp.copy_{table} s ON {keys}
                 WHERE {} IS DISTINCT FROM {} {pristine}",
                row_of(spec, "t"),
                row_of(spec, "s")
            ),
            &[],
        )
        .await?
        .get(0);
    Ok((other.max(0) as u64, differing.max(0) as u64))
}

/// Inserts the source's rows the target lacks (and sets built-in accounts still as created to the
/// source's); the rows written. Keys get one new store version, taken when the first is written, so
/// running servers follow them.
async fn write(tx: &Transaction<'_>, spec: &Spec, version: &mut Option<i64>) -> Result<u64, StoreError> {
    let (table, keys) = (spec.name, same_key(spec));
    let list = names(spec).collect::<Vec<_>>().join(", ");
    let source = names(spec).map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", ");
    let missing = format!("FROM pg_temp.copy_{table} s WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {keys})");
    let mut written = 0;
    if table == "accounts" {
        written += tx
            .execute(
                &format!(
                    "UPDATE accounts t SET ({list}) = ({source}) FROM pg_temp.copy_accounts s
                     WHERE t.id = s.id AND {PRISTINE} AND {} IS DISTINCT FROM {}",
                    row_of(spec, "t"),
                    row_of(spec, "s")
                ),
                &[],
            )
            .await?;
    }
    if table == "service_keys" {
        let any: bool = tx.query_one(&format!("SELECT EXISTS (SELECT 1 {missing})"), &[]).await?.get(0);
        if !any {
            return Ok(written);
        }
        let v = match *version {
            Some(v) => v,
            None => *version.insert(bump_version(tx).await?),
        };
        let sql = format!("INSERT INTO service_keys ({list}, version) SELECT {source}, $1::BIGINT {missing}");
        return Ok(written + tx.execute(&sql, &[&v]).await?);
    }
    written += tx.execute(&format!("INSERT INTO {table} ({list}) SELECT {source} {missing}"), &[]).await?;
    Ok(written)
}

/// After the commit: the target's rows, and those equal to a source row.
async fn count(client: &Client, spec: &Spec) -> Result<(u64, u64), StoreError> {
    let table = spec.name;
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {table}),
                        (SELECT count(*) FROM {table} t JOIN pg_temp.copy_{table} s ON {}
                         WHERE {} IS NOT DISTINCT FROM {})",
                same_key(spec),
                row_of(spec, "t"),
                row_of(spec, "s")
            ),
            &[],
        )
        .await?;
    let (target, equal): (i64, i64) = (row.get(0), row.get(1));
    Ok((target.max(0) as u64, equal.max(0) as u64))
}
