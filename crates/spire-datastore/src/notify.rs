//! Change-log wake-ups. On PostgreSQL every transaction that appends to the change log also
//! runs `pg_notify` on [`crate::store::CHANGE_LOG_CHANNEL`]; one `LISTEN` connection per store
//! (opened on the first [`DataStore::change_notifications`] call) turns those into wake-ups, so
//! followers in other server processes read new changes at once instead of on their next poll.
//!
//! A wake-up carries no data: the follower still reads the log (and so still sees gaps and
//! changes from writers that did not notify). When the listening connection is lost, listeners
//! are woken once (changes may have been missed meanwhile) and it reconnects. Other backends
//! never wake; their followers poll.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{CHANGE_LOG_CHANNEL, DataStore};

/// Per-store notification state.
pub(crate) struct Notifications {
    /// PostgreSQL URL to listen on; `None` when the backend has no notifications.
    url: Option<String>,
    tx: watch::Sender<u64>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Notifications {
    pub(crate) fn none() -> Self {
        Notifications {
            url: None,
            tx: watch::channel(0).0,
            task: Mutex::new(None),
        }
    }

    pub(crate) fn postgres(url: String) -> Self {
        Notifications {
            url: Some(url),
            tx: watch::channel(0).0,
            task: Mutex::new(None),
        }
    }

    /// The PostgreSQL URL of the store (`None` on other backends).
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    pub(crate) fn stop(&self) {
        if let Some(t) = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }

    fn subscribe(&self) -> ChangeNotifications {
        let rx = self.tx.subscribe();
        if let Some(url) = &self.url {
            let mut task = self
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if task.is_none() {
                *task = Some(tokio::spawn(listen(url.clone(), self.tx.clone())));
            }
        }
        ChangeNotifications {
            rx,
            live: self.url.is_some(),
        }
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn listen(url: String, tx: watch::Sender<u64>) {
    use sqlx::postgres::PgListener;
    let bump = |tx: &watch::Sender<u64>| tx.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot open the change-log LISTEN connection; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANGE_LOG_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN on the change-log channel failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tracing::debug!(
            channel = CHANGE_LOG_CHANNEL,
            "Listening for change-log notifications"
        );
        // Changes may have committed before LISTEN took effect.
        bump(&tx);
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => bump(&tx),
                Ok(None) => {
                    // Connection lost: sqlx reconnects on the next call; wake followers for
                    // whatever was missed meanwhile.
                    tracing::debug!("Change-log LISTEN connection lost; reconnecting");
                    bump(&tx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Change-log LISTEN connection failed; reconnecting");
                    bump(&tx);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Wake-ups for change-log followers (see the module docs).
#[derive(Debug, Clone)]
pub struct ChangeNotifications {
    rx: watch::Receiver<u64>,
    live: bool,
}

impl ChangeNotifications {
    /// Whether this backend delivers notifications (PostgreSQL). When `false`,
    /// [`ChangeNotifications::changed`] never resolves and followers must poll.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Resolves when changes may have been committed since the last call (or since this
    /// handle was created). Several commits may be folded into one wake-up.
    pub async fn changed(&mut self) {
        if !self.live || self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl DataStore {
    /// Wake-ups for change-log followers: on PostgreSQL, LISTEN/NOTIFY (the first call opens
    /// the listening connection, so call it before reading the log's position); elsewhere a
    /// handle that never fires. Must be called inside a tokio runtime.
    pub fn change_notifications(&self) -> ChangeNotifications {
        self.inner.notifications.subscribe()
    }
}
