//! Trial keys in the SQLite file: each unclaimed one belongs to the reserved `trial` account and carries
//! its device's hash in `trial_device`, under a unique index over active keys, so a device never has two.
//! Issuing, replacing and claiming are each one `BEGIN IMMEDIATE` transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use super::key_cap::{Owner, count_active_in, insert_key, key_cap};
use super::{Accounts, RECORD_SELECT, SqliteStore, bump_version, infos_in, parse_id, record_from};
use crate::auth::access::KeyAccess;
use crate::auth::keys::{KeyId, KeyKind, KeyRecord};
use crate::store::{Claim, HashedKey, StoreError, TRIAL_ACCOUNT, TrialIssue};

impl SqliteStore {
    /// Every active trial key that serves a device, with the device's hash.
    pub fn trial_devices(&self) -> Result<Vec<(KeyId, [u8; 32])>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, trial_device FROM service_keys WHERE trial_device IS NOT NULL AND revoked_at IS NULL",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id = parse_id(&row.get::<_, String>(0)?)?;
            let device: Vec<u8> = row.get(1)?;
            let device: [u8; 32] =
                device.try_into().map_err(|_| StoreError::Corrupt(format!("trial device of key {id}")))?;
            out.push((id, device));
        }
        Ok(out)
    }

    /// The active trial key of `device`.
    pub fn trial_key_of_device(&self, device: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        device_key(&tx, device)
    }

    /// Writes `key` for `device` unless the device has an active trial key; either way, the device's key.
    pub fn create_trial_key(&self, device: &[u8; 32], key: &HashedKey) -> Result<TrialIssue, StoreError> {
        check_trial(key)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some(record) = device_key(&tx, device)? {
            return Ok(TrialIssue { record, created: false });
        }
        let record = insert_for_device(&tx, device, key)?;
        tx.commit()?;
        Ok(TrialIssue { record, created: true })
    }

    /// Revokes the device's active trial key at `now` and writes `key` in its place.
    pub fn replace_trial_key(&self, device: &[u8; 32], key: &HashedKey, now: i64) -> Result<TrialIssue, StoreError> {
        check_trial(key)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version = bump_version(&tx)?;
        tx.execute(
            "UPDATE service_keys SET revoked_at = ?1, version = ?2 WHERE trial_device = ?3 AND revoked_at IS NULL",
            params![now, version, device.as_slice()],
        )?;
        let record = insert_for_device(&tx, device, key)?;
        tx.commit()?;
        Ok(TrialIssue { record, created: true })
    }

    /// Moves the active trial key `id` into `account` at `now`, within the account's key cap.
    pub fn claim_trial_key(&self, id: KeyId, account: &str, now: i64) -> Result<Claim, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(current) = infos_in(&tx, "WHERE id = ?1", [id.as_str()])?.into_iter().next() else {
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
        let active = count_active_in(&tx, Owner::Account(account), now)?;
        if active >= key_cap(&tx, account)? as usize {
            return Err(StoreError::KeyCapReached(active));
        }
        let version = bump_version(&tx)?;
        // A claimed key is a key of the account like one it created: the configured default limits,
        // every scope, any provider and model, no expiry.
        tx.execute(
            "UPDATE service_keys SET account_id = ?1, trial_device = NULL, requests_per_minute = NULL,
                    requests_per_day = NULL, concurrent_requests = NULL, tokens_per_month = NULL, scopes = ?2,
                    providers = NULL, models = NULL, expires_at = NULL, version = ?3
             WHERE id = ?4",
            params![account, KeyAccess::default().scopes.to_stored(), version, id.as_str()],
        )?;
        tx.execute("UPDATE usage_daily SET account_id = ?1 WHERE key_id = ?2", params![account, id.as_str()])?;
        let claimed = infos_in(&tx, "WHERE id = ?1", [id.as_str()])?.into_iter().next();
        tx.commit()?;
        Ok(claimed.map_or(Claim::NotFound, |info| Claim::Claimed(Box::new(info))))
    }
}

fn check_trial(key: &HashedKey) -> Result<(), StoreError> {
    if key.key.kind != KeyKind::Trial || key.key.account != TRIAL_ACCOUNT {
        return Err(StoreError::Backend("a device's key must be a trial key of the trial account".into()));
    }
    Ok(())
}

fn device_key(tx: &Transaction<'_>, device: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
    let mut stmt =
        tx.prepare_cached(&format!("{RECORD_SELECT} WHERE trial_device = ?1 AND revoked_at IS NULL LIMIT 1"))?;
    let mut rows = stmt.query([device.as_slice()])?;
    rows.next()?.map(|row| record_from(row, &mut Accounts::default())).transpose()
}

fn insert_for_device(tx: &Transaction<'_>, device: &[u8; 32], key: &HashedKey) -> Result<KeyRecord, StoreError> {
    let version = bump_version(tx)?;
    insert_key(tx, key, version)?;
    tx.execute(
        "UPDATE service_keys SET trial_device = ?1 WHERE id = ?2",
        params![device.as_slice(), key.identity.id.as_str()],
    )?;
    let mut stmt = tx.prepare_cached(&format!("{RECORD_SELECT} WHERE id = ?1"))?;
    let record = stmt
        .query_row([key.identity.id.as_str()], |row| Ok(record_from(row, &mut Accounts::default())))
        .optional()?
        .transpose()?;
    record.ok_or_else(|| StoreError::Backend("the trial key just written is missing".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::service::mint;
    use crate::auth::keys::KeyHasher;
    use crate::store::{NewKey, UsageAddition};

    fn trial() -> HashedKey {
        let (_, identity) = mint("tg", &KeyHasher::new(None), KeyKind::Trial).unwrap();
        let key = NewKey { kind: KeyKind::Trial, account: TRIAL_ACCOUNT.into(), ..NewKey::live("trial", 1) };
        HashedKey { identity, key }
    }

    #[test]
    fn a_device_has_one_active_key_however_often_it_is_issued() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let device = [9u8; 32];
        let first = store.create_trial_key(&device, &trial()).unwrap();
        assert!(first.created);
        let second = store.create_trial_key(&device, &trial()).unwrap();
        assert!(!second.created, "the device's key already exists");
        assert_eq!(second.record.id, first.record.id);
        assert_eq!(store.trial_devices().unwrap(), vec![(first.record.id, device)]);

        let replaced = store.replace_trial_key(&device, &trial(), 5).unwrap();
        assert!(replaced.created && replaced.record.id != first.record.id);
        assert_eq!(store.key_info(first.record.id).unwrap().unwrap().revoked_at, Some(5));
        assert_eq!(store.trial_key_of_device(&device).unwrap().unwrap().id, replaced.record.id);
        assert_eq!(store.trial_devices().unwrap().len(), 1);
        // Only trial keys of the trial account are a device's.
        let live = HashedKey { key: NewKey::live("x", 1), ..trial() };
        assert!(store.create_trial_key(&[1; 32], &live).is_err());
    }

    #[test]
    fn a_claim_moves_the_key_and_its_usage_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let issued = store.create_trial_key(&[3; 32], &trial()).unwrap().record;
        let usage = UsageAddition {
            key: issued.id,
            account: "trial:0011".into(),
            day: 1,
            model: "m".into(),
            requests: 2,
            input_tokens: 5,
            output_tokens: 3,
        };
        store.add_usage(&[usage]).unwrap();
        let claimed = match store.claim_trial_key(issued.id, "default", 10).unwrap() {
            Claim::Claimed(info) => info,
            other => panic!("{other:?}"),
        };
        assert_eq!((claimed.account.as_str(), claimed.kind), ("default", KeyKind::Trial));
        assert_eq!(claimed.limits, Default::default(), "the account's defaults");
        assert_eq!(store.usage_rows(Some("default"), Some(issued.id), 0, 9).unwrap()[0].requests, 2);
        assert!(store.trial_devices().unwrap().is_empty(), "the device link is gone");
        assert!(matches!(store.claim_trial_key(issued.id, "default", 11).unwrap(), Claim::AlreadyClaimed));
        let live = store.create_keys(&[HashedKey { key: NewKey::live("l", 1), ..trial() }]).unwrap();
        assert!(matches!(store.claim_trial_key(live[0].id, "default", 11).unwrap(), Claim::NotTrial));
        let gone = store.create_trial_key(&[4; 32], &trial()).unwrap().record.id;
        store.revoke_key(gone, 12).unwrap();
        assert!(matches!(store.claim_trial_key(gone, "default", 13).unwrap(), Claim::NotFound));
    }
}
