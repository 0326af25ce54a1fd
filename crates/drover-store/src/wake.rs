//! Wake-up hints between hubs on one PostgreSQL database: a job stored by
//! one hub (or queued again) is announced with `NOTIFY`, and every hub
//! listening claims at once rather than at its next poll. A hint only:
//! a hint lost (a listener reconnecting, a notify that failed) costs one
//! poll interval, never a job, because the runners poll the store as the
//! truth. On SQLite one hub alone uses the file and wakes itself.

use sqlx::postgres::PgListener;

use crate::{Db, JobKind, Location, Store, StoreError};

/// A channel per schema, so that stores sharing a database in schemas of
/// their own do not wake each other. PostgreSQL takes at most 63 bytes;
/// schema names are ASCII letters, digits and underscores.
fn channel(location: &Location) -> String {
    let schema = match location {
        Location::Postgres {
            schema: Some(schema),
            ..
        } => schema.as_str(),
        _ => "",
    };
    let mut name = format!("drover_jobs_{schema}");
    name.truncate(63);
    name
}

/// The hints a listening hub receives.
pub struct Wakeups {
    listener: PgListener,
}

/// What a hint says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// Jobs of this kind may be waiting.
    Stored(JobKind),
    /// The connection was lost and made again: hints may have been missed
    /// meanwhile, so whatever waits should look.
    Reconnected,
}

impl Wakeups {
    /// The next hint. An error means the server cannot be reached now; the
    /// next call tries again.
    pub async fn next(&mut self) -> Result<Wakeup, StoreError> {
        Ok(match self.listener.try_recv().await? {
            Some(n) => match JobKind::parse(n.payload()) {
                Some(kind) => Wakeup::Stored(kind),
                None => Wakeup::Reconnected,
            },
            None => Wakeup::Reconnected,
        })
    }
}

impl Store {
    /// Listens for the hints of every hub on this PostgreSQL store; `None`
    /// on SQLite, which needs none.
    pub async fn wakeups(&self) -> Result<Option<Wakeups>, StoreError> {
        let Db::Postgres(pool) = &self.inner.db else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(&channel(&self.inner.location)).await?;
        Ok(Some(Wakeups { listener }))
    }

    /// Tells every listening hub that jobs of `kind` may be waiting. The
    /// jobs are stored whether or not this reaches anyone: a failure is
    /// logged and otherwise ignored.
    pub(crate) async fn hint(&self, kind: JobKind) {
        let Db::Postgres(pool) = &self.inner.db else {
            return;
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel(&self.inner.location))
            .bind(kind.as_str())
            .execute(pool)
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "cannot send the wake-up hint; listeners find the jobs at their next poll");
        }
    }
}
