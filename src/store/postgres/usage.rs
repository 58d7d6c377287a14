//! Usage in the PostgreSQL store: daily totals per key and model, and per key and end user, each flush
//! added by one additive upsert statement per table in the transaction that records its batch id (all of
//! a batch or none of it, at most once), every count saturating at the largest `BIGINT` rather than
//! failing the flush. Also the keys' signing secrets.

use std::collections::BTreeMap;

use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::rows::parse_id;
use super::{PgStore, bump_version, sql_int};
use crate::auth::keys::KeyId;
use crate::store::{
    BATCH_RETENTION_SECONDS, EndUserAddition, EndUserTotal, EndUserUsageRow, StoreError, UsageAddition, UsageBatch,
    UsageRow, UsageTotal,
};

/// The counts of one merged row, saturating.
#[derive(Default)]
struct Counts {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Counts {
    fn add(&mut self, requests: u64, input_tokens: u64, output_tokens: u64) {
        self.requests = self.requests.saturating_add(requests);
        self.input_tokens = self.input_tokens.saturating_add(input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(output_tokens);
    }
}

/// Merged rows as the arrays `UNNEST` reads: `names` is the model or the end user.
#[derive(Default)]
struct Columns {
    keys: Vec<String>,
    accounts: Vec<String>,
    names: Vec<String>,
    days: Vec<i64>,
    requests: Vec<i64>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
}

impl Columns {
    fn push(&mut self, key: &str, account: &str, name: &str, day: i64, counts: Counts) {
        self.keys.push(key.to_owned());
        self.accounts.push(account.to_owned());
        self.names.push(name.to_owned());
        self.days.push(day);
        self.requests.push(sql_int(counts.requests));
        self.input_tokens.push(sql_int(counts.input_tokens));
        self.output_tokens.push(sql_int(counts.output_tokens));
    }
}

/// The update of an additive upsert into `table`: each count grows by the new row's, saturating.
fn add_counts(table: &str) -> String {
    ["requests", "input_tokens", "output_tokens"]
        .map(|c| {
            format!(
                "{c} = CASE WHEN {table}.{c} > 9223372036854775807 - excluded.{c}
                 THEN 9223372036854775807 ELSE {table}.{c} + excluded.{c} END"
            )
        })
        .join(", ")
}

impl PgStore {
    /// Applies `batch` unless its id was applied already (`true` if applied now): the id, the two
    /// upserts and the pruning of old ids in one transaction.
    pub(super) async fn pg_apply_usage(&self, batch: &UsageBatch) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let recorded = tx
            .execute(
                "INSERT INTO usage_batches (id, made_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&batch.id, &batch.made_at],
            )
            .await?;
        if recorded == 0 {
            return Ok(false);
        }
        if !batch.rows.is_empty() {
            add_usage_in(&tx, &batch.rows).await?;
        }
        if !batch.end_users.is_empty() {
            add_end_users_in(&tx, &batch.end_users).await?;
        }
        let horizon = batch.made_at.saturating_sub(BATCH_RETENTION_SECONDS);
        tx.execute("DELETE FROM usage_batches WHERE made_at < $1", &[&horizon]).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Per key: requests on `today` and tokens since `month_start`. PostgreSQL sums `BIGINT`s as
    /// `NUMERIC`, which cannot overflow; the totals saturate at the largest `BIGINT`.
    pub(super) async fn pg_usage_totals(&self, today: i64, month_start: i64) -> Result<Vec<UsageTotal>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key_id, account_id,
                        LEAST(SUM(CASE WHEN day = $1 THEN requests ELSE 0 END), 9223372036854775807)::BIGINT,
                        LEAST(SUM(input_tokens) + SUM(output_tokens), 9223372036854775807)::BIGINT
                 FROM usage_daily WHERE day >= $2 GROUP BY key_id, account_id",
                &[&today, &month_start],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageTotal {
                    key: parse_id(row.try_get(0)?)?,
                    account: row.try_get(1)?,
                    day_requests: row.try_get::<_, i64>(2)?.max(0) as u64,
                    month_tokens: row.try_get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .collect()
    }

    pub(super) async fn pg_usage_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let client = self.client().await?;
        let key = key.map(|k| k.as_str().to_owned());
        let rows = client
            .query(
                "SELECT u.key_id, COALESCE(k.key_prefix, u.key_id), u.day, u.model, u.requests, u.input_tokens,
                        u.output_tokens, k.project
                 FROM usage_daily u LEFT JOIN service_keys k ON k.id = u.key_id
                 WHERE u.day BETWEEN $1 AND $2 AND ($3::TEXT IS NULL OR u.key_id = $3)
                   AND ($4::TEXT IS NULL OR u.account_id = $4)
                 ORDER BY u.key_id, u.day, u.model",
                &[&from, &to, &key, &account],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    key: parse_id(row.try_get(0)?)?,
                    key_prefix: row.try_get(1)?,
                    day: row.try_get(2)?,
                    model: row.try_get(3)?,
                    requests: row.try_get::<_, i64>(4)?.max(0) as u64,
                    input_tokens: row.try_get::<_, i64>(5)?.max(0) as u64,
                    output_tokens: row.try_get::<_, i64>(6)?.max(0) as u64,
                    project: row.try_get(7)?,
                })
            })
            .collect()
    }

    pub(super) async fn pg_end_user_totals(
        &self,
        today: i64,
        month_start: i64,
    ) -> Result<Vec<EndUserTotal>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key_id, end_user,
                        LEAST(SUM(CASE WHEN day = $1 THEN requests ELSE 0 END), 9223372036854775807)::BIGINT,
                        LEAST(SUM(input_tokens) + SUM(output_tokens), 9223372036854775807)::BIGINT
                 FROM usage_end_users WHERE day >= $2 GROUP BY key_id, end_user",
                &[&today, &month_start],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(EndUserTotal {
                    key: parse_id(row.try_get(0)?)?,
                    end_user: row.try_get(1)?,
                    day_requests: row.try_get::<_, i64>(2)?.max(0) as u64,
                    month_tokens: row.try_get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .collect()
    }

    pub(super) async fn pg_end_user_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<EndUserUsageRow>, StoreError> {
        let client = self.client().await?;
        let key = key.map(|k| k.as_str().to_owned());
        let rows = client
            .query(
                "SELECT u.key_id, COALESCE(k.key_prefix, u.key_id), u.end_user, u.day, u.requests, u.input_tokens,
                        u.output_tokens, k.project
                 FROM usage_end_users u LEFT JOIN service_keys k ON k.id = u.key_id
                 WHERE u.day BETWEEN $1 AND $2 AND ($3::TEXT IS NULL OR u.key_id = $3)
                   AND ($4::TEXT IS NULL OR u.account_id = $4)
                 ORDER BY u.key_id, u.end_user, u.day",
                &[&from, &to, &key, &account],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(EndUserUsageRow {
                    key: parse_id(row.try_get(0)?)?,
                    key_prefix: row.try_get(1)?,
                    end_user: row.try_get(2)?,
                    day: row.try_get(3)?,
                    requests: row.try_get::<_, i64>(4)?.max(0) as u64,
                    input_tokens: row.try_get::<_, i64>(5)?.max(0) as u64,
                    output_tokens: row.try_get::<_, i64>(6)?.max(0) as u64,
                    project: row.try_get(7)?,
                })
            })
            .collect()
    }

    /// Replaces a key's sealed signing secret; `false` if no such key or it is revoked.
    pub(super) async fn pg_set_signing_secret(&self, id: KeyId, sealed: Vec<u8>, now: i64) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        let n = tx
            .execute(
                "UPDATE service_keys SET signing_secret = $1, version = $2
                 WHERE id = $3 AND (revoked_at IS NULL OR revoked_at > $4)",
                &[&sealed, &version, &id.as_str(), &now],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// One statement for a batch's key usage: the rows merged by primary key (a row may not be updated twice
/// by one `INSERT`) and sorted, so concurrent flushes from several instances lock rows in one order.
async fn add_usage_in(tx: &Transaction<'_>, rows: &[UsageAddition]) -> Result<(), StoreError> {
    let mut merged: BTreeMap<(&str, i64, &str), (&str, Counts)> = BTreeMap::new();
    for r in rows {
        let entry = merged.entry((r.key.as_str(), r.day, &*r.model)).or_insert((&*r.account, Counts::default()));
        entry.1.add(r.requests, r.input_tokens, r.output_tokens);
    }
    let mut columns = Columns::default();
    for ((key, day, model), (account, counts)) in merged {
        columns.push(key, account, model, day, counts);
    }
    let sql = format!(
        "INSERT INTO usage_daily (key_id, account_id, day, model, requests, input_tokens, output_tokens)
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[],
                              $7::BIGINT[])
         ON CONFLICT (key_id, day, model) DO UPDATE SET {}",
        add_counts("usage_daily")
    );
    let c = &columns;
    let params: [&(dyn ToSql + Sync); 7] =
        [&c.keys, &c.accounts, &c.days, &c.names, &c.requests, &c.input_tokens, &c.output_tokens];
    tx.execute(&sql, &params).await?;
    Ok(())
}

/// One statement for a batch's end-user usage, merged and sorted as [`add_usage_in`] does.
async fn add_end_users_in(tx: &Transaction<'_>, rows: &[EndUserAddition]) -> Result<(), StoreError> {
    let mut merged: BTreeMap<(&str, &str, i64), (&str, Counts)> = BTreeMap::new();
    for r in rows {
        let entry = merged.entry((r.key.as_str(), &*r.end_user, r.day)).or_insert((&*r.account, Counts::default()));
        entry.1.add(r.requests, r.input_tokens, r.output_tokens);
    }
    let mut columns = Columns::default();
    for ((key, end_user, day), (account, counts)) in merged {
        columns.push(key, account, end_user, day, counts);
    }
    let sql = format!(
        "INSERT INTO usage_end_users (key_id, account_id, end_user, day, requests, input_tokens, output_tokens)
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[],
                              $7::BIGINT[])
         ON CONFLICT (key_id, end_user, day) DO UPDATE SET {}",
        add_counts("usage_end_users")
    );
    let c = &columns;
    let params: [&(dyn ToSql + Sync); 7] =
        [&c.keys, &c.accounts, &c.names, &c.days, &c.requests, &c.input_tokens, &c.output_tokens];
    tx.execute(&sql, &params).await?;
    Ok(())
}
