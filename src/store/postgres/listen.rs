//! Listening for other instances' writes: one connection outside the pool runs `LISTEN tollgate_keys`
//! and keeps the highest version announced for this store's schema, which wakes
//! [`Store::wait_for_changes`](crate::store::Store::wait_for_changes). A lost connection is opened
//! again after a second; while it is down, waiters wait their whole interval (the poll).

use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The listening task, ended when the store is dropped.
pub(super) struct Listener {
    latest: watch::Receiver<i64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Starts listening for the versions announced in `schema`.
    pub(super) fn start(pg: tokio_postgres::Config, tls: MakeRustlsConnect, schema: String) -> Listener {
        let (tx, latest) = watch::channel(0);
        let task = tokio::spawn(async move {
            loop {
                listen_once(&pg, &tls, &schema, &tx).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Listener { latest, task }
    }

    /// Waits until a version after `since` is announced, at most `max_wait`.
    pub(super) async fn wait(&self, since: i64, max_wait: Duration) {
        let mut latest = self.latest.clone();
        let gone = matches!(tokio::time::timeout(max_wait, latest.wait_for(|v| *v > since)).await, Ok(Err(_)));
        if gone {
            // The listening task is gone (it ends only with the store): poll, never spin.
            tokio::time::sleep(max_wait).await;
        }
    }
}

/// Listens on one connection until it fails.
async fn listen_once(pg: &tokio_postgres::Config, tls: &MakeRustlsConnect, schema: &str, tx: &watch::Sender<i64>) {
    let Ok((client, mut connection)) = pg.connect(tls.clone()).await else {
        tracing::warn!("store: cannot connect to listen for key changes; polling only");
        return;
    };
    let prefix = format!("{schema}:");
    let messages = async {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            let Ok(AsyncMessage::Notification(n)) = message else {
                if message.is_err() {
                    return;
                }
                continue;
            };
            let version = n.payload().strip_prefix(&prefix).and_then(|v| v.parse::<i64>().ok());
            if let Some(version) = version {
                tx.send_if_modified(|latest| {
                    let newer = version > *latest;
                    *latest = (*latest).max(version);
                    newer
                });
            }
        }
    };
    tokio::pin!(messages);
    tokio::select! {
        listening = client.batch_execute("LISTEN tollgate_keys") => {
            if listening.is_err() {
                return;
            }
        }
        () = &mut messages => return,
    }
    messages.await;
    tracing::warn!("store: the connection listening for key changes closed; opening it again");
}
