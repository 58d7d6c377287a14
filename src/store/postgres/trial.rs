//! Trial keys in the PostgreSQL store: each unclaimed one belongs to the reserved `trial` account and
//! carries its device's hash in `trial_device`, under a unique index over active keys. Issuing,
//! replacing and claiming each take the version lock first, then check and write in one transaction.

use tokio_postgres::Transaction;

use super::keys::{count_active, infos, insert_key, key_cap};
use super::rows::{RECORD_SELECT, parse_id, record_from};
use super::{PgStore, bump_version};
use crate::auth::access::KeyAccess;
use crate::auth::keys::{KeyId, KeyKind, KeyRecord};
use crate::store::{Claim, HashedKey, StoreError, TRIAL_ACCOUNT, TrialIssue};

impl PgStore {
    pub(super) async fn pg_trial_devices(&self) -> Result<Vec<(KeyId, [u8; 32])>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, trial_device FROM service_keys WHERE trial_device IS NOT NULL AND revoked_at IS NULL",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id = parse_id(row.try_get(0)?)?;
                let device: [u8; 32] = row
                    .try_get::<_, &[u8]>(1)?
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("trial device of key {id}")))?;
                Ok((id, device))
            })
            .collect()
    }

    pub(super) async fn pg_trial_key_of_device(&self, device: [u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        let client = self.client().await?;
        let sql = format!("{RECORD_SELECT} WHERE trial_device = $1 AND revoked_at IS NULL LIMIT 1");
        let row = client.query_opt(&sql, &[&device.as_slice()]).await?;
        row.map(|r| record_from(&r, &mut Default::default())).transpose()
    }

    pub(super) async fn pg_create_trial_key(&self, device: [u8; 32], key: HashedKey) -> Result<TrialIssue, StoreError> {
        check_trial(&key)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        let sql = format!("{RECORD_SELECT} WHERE trial_device = $1 AND revoked_at IS NULL LIMIT 1");
        if let Some(row) = tx.query_opt(&sql, &[&device.as_slice()]).await? {
            // The device has its key: the rollback leaves the version alone.
            return Ok(TrialIssue { record: record_from(&row, &mut Default::default())?, created: false });
        }
        let record = insert_for_device(&tx, &device, &key, version).await?;
        tx.commit().await?;
        Ok(TrialIssue { record, created: true })
    }

    pub(super) async fn pg_replace_trial_key(
        &self,
        device: [u8; 32],
        key: HashedKey,
        now: i64,
    ) -> Result<TrialIssue, StoreError> {
        check_trial(&key)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        tx.execute(
            "UPDATE service_keys SET revoked_at = $1, version = $2 WHERE trial_device = $3 AND revoked_at IS NULL",
            &[&now, &version, &device.as_slice()],
        )
        .await?;
        let record = insert_for_device(&tx, &device, &key, version).await?;
        tx.commit().await?;
        Ok(TrialIssue { record, created: true })
    }

    pub(super) async fn pg_claim_trial_key(&self, id: KeyId, account: String, now: i64) -> Result<Claim, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        let Some(current) = infos(&tx, "WHERE id = $1", &[&id.as_str()]).await?.into_iter().next() else {
            return Ok(Claim::NotFound);
        };
        if current.kind != KeyKind::Trial {
            return Ok(Claim::NotTrial);
        }
        if !matches!(current.status_at(now), "active" | "disabled") {
            return Ok(Claim::NotFound);
        }
        if current.account != TRIAL_ACCOUNT {
            return Ok(Claim::AlreadyClaimed);
        }
        let active = count_active(&tx, "account_id", &account, now).await?;
        if active >= key_cap(&tx, &account).await? as usize {
            return Err(StoreError::KeyCapReached(active));
        }
        // A claimed key is a key of the account like one it created: the configured default limits,
        // every scope, any provider and model, no expiry.
        tx.execute(
            "UPDATE service_keys SET account_id = $1, trial_device = NULL, requests_per_minute = NULL,
                    requests_per_day = NULL, concurrent_requests = NULL, tokens_per_month = NULL, scopes = $2,
                    providers = NULL, models = NULL, expires_at = NULL, version = $3
             WHERE id = $4",
            &[&account, &KeyAccess::default().scopes.to_stored(), &version, &id.as_str()],
        )
        .await?;
        tx.execute("UPDATE usage_daily SET account_id = $1 WHERE key_id = $2", &[&account, &id.as_str()]).await?;
        let claimed = infos(&tx, "WHERE id = $1", &[&id.as_str()]).await?.into_iter().next();
        tx.commit().await?;
        Ok(claimed.map_or(Claim::NotFound, |info| Claim::Claimed(Box::new(info))))
    }
}

fn check_trial(key: &HashedKey) -> Result<(), StoreError> {
    if key.key.kind != KeyKind::Trial || key.key.account != TRIAL_ACCOUNT {
        return Err(StoreError::Backend("a device's key must be a trial key of the trial account".into()));
    }
    Ok(())
}

async fn insert_for_device(
    tx: &Transaction<'_>,
    device: &[u8; 32],
    key: &HashedKey,
    version: i64,
) -> Result<KeyRecord, StoreError> {
    insert_key(tx, key, version).await?;
    let id = key.identity.id.as_str();
    tx.execute("UPDATE service_keys SET trial_device = $1 WHERE id = $2", &[&device.as_slice(), &id]).await?;
    let row = tx.query_opt(&format!("{RECORD_SELECT} WHERE id = $1"), &[&id]).await?;
    let row = row.ok_or_else(|| StoreError::Backend("the trial key just written is missing".into()))?;
    record_from(&row, &mut Default::default())
}
