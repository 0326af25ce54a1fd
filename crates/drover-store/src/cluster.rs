//! Several hubs on one database: the cluster's lease, which makes one of
//! them the leader, and the list of its hubs.
//!
//! The lease's expiry is on the database's clock, never a hub's: hubs'
//! clocks may disagree by seconds, and only the one clock they share can
//! say whose lease has run out. Its epoch goes up at every change of
//! holder, so that what an earlier leader still sends can be told apart.
//! The SQL is put together only from constants: the two dialects' clocks.

use crate::{Store, StoreError, on_db};

/// The database's clock in milliseconds since the Unix epoch.
pub(crate) fn now_ms(pg: bool) -> &'static str {
    if pg {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    } else {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    }
}

/// A cluster's lease as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLease {
    /// The hub that holds it (its id, kept across its restarts).
    pub holder: String,
    /// The holder's process.
    pub instance: String,
    /// Where the other hubs reach the holder.
    pub address: String,
    pub epoch: i64,
    /// When it runs out, and the database's time as it answered: their
    /// difference is what is left of it, whatever the reader's clock says.
    pub expires_ms: i64,
    pub now_ms: i64,
}

impl ClusterLease {
    /// What is left of it, in milliseconds (0 once it has run out).
    pub fn left_ms(&self) -> i64 {
        (self.expires_ms - self.now_ms).max(0)
    }
}

/// Who asks for a cluster's lease.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub cluster: &'a str,
    /// The hub's id: a hub restarted with the same id takes its lease back
    /// at once (its earlier process is gone), in a new epoch.
    pub hub: &'a str,
    /// This process's own id: the same process renews in the same epoch.
    pub instance: &'a str,
    pub address: &'a str,
}

/// One hub of a cluster, as it last said.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HubRow {
    pub id: String,
    pub instance: String,
    pub address: String,
    pub version: String,
    /// `leader`, `follower` or `stopped`.
    pub role: String,
    pub epoch: i64,
    pub grants: i64,
    pub started_ms: i64,
    pub seen_ms: i64,
}

type LeaseRow = (String, String, String, i64, i64, i64);

fn lease(row: LeaseRow) -> ClusterLease {
    let (holder, instance, address, epoch, expires_ms, now_ms) = row;
    ClusterLease {
        holder,
        instance,
        address,
        epoch,
        expires_ms,
        now_ms,
    }
}

impl Store {
    /// Takes the cluster's lease for `ttl_ms` if nobody holds it, it ran
    /// out, or it is already this hub's; renews it if it is this process's
    /// (same epoch). Either way, the lease as it now is: the caller holds
    /// it if its instance is `candidate.instance`.
    pub async fn campaign(
        &self,
        candidate: &Candidate<'_>,
        ttl_ms: i64,
    ) -> Result<ClusterLease, StoreError> {
        on_db!(self, write, |pool, pg| {
            let now = now_ms(pg);
            let take = format!(
                "INSERT INTO cluster_leases (cluster, holder, instance, address, epoch, expires_ms) \
                 VALUES ($1, $2, $3, $4, 1, {now} + $5) \
                 ON CONFLICT (cluster) DO UPDATE SET holder = excluded.holder, \
                   instance = excluded.instance, address = excluded.address, \
                   epoch = CASE WHEN cluster_leases.instance = excluded.instance \
                     THEN cluster_leases.epoch ELSE cluster_leases.epoch + 1 END, \
                   expires_ms = excluded.expires_ms \
                 WHERE cluster_leases.instance = excluded.instance \
                   OR cluster_leases.holder = excluded.holder \
                   OR cluster_leases.expires_ms <= {now} \
                 RETURNING holder, instance, address, epoch, expires_ms, {now}"
            );
            let taken: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(take))
                .bind(candidate.cluster)
                .bind(candidate.hub)
                .bind(candidate.instance)
                .bind(candidate.address)
                .bind(ttl_ms)
                .fetch_optional(pool)
                .await?;
            match taken {
                Some(row) => Ok(lease(row)),
                None => {
                    let read = format!(
                        "SELECT holder, instance, address, epoch, expires_ms, {now} \
                         FROM cluster_leases WHERE cluster = $1"
                    );
                    let row: LeaseRow = sqlx::query_as(sqlx::AssertSqlSafe(read))
                        .bind(candidate.cluster)
                        .fetch_one(pool)
                        .await?;
                    Ok(lease(row))
                }
            }
        })
    }

    /// The cluster's lease, if anyone ever held it.
    pub async fn lease(&self, cluster: &str) -> Result<Option<ClusterLease>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            let read = format!(
                "SELECT holder, instance, address, epoch, expires_ms, {} \
                 FROM cluster_leases WHERE cluster = $1",
                now_ms(pg)
            );
            sqlx::query_as(sqlx::AssertSqlSafe(read))
                .bind(cluster)
                .fetch_optional(pool)
                .await?
                .map(lease)
        }))
    }

    /// Gives the lease up at once, if this process holds it in `epoch`: a
    /// hub that stops lets the next one lead without waiting out its TTL.
    pub async fn resign(
        &self,
        cluster: &str,
        instance: &str,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE cluster_leases SET expires_ms = 0 \
                 WHERE cluster = $1 AND instance = $2 AND epoch = $3",
            )
            .bind(cluster)
            .bind(instance)
            .bind(epoch)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Whether `epoch` is the cluster's and its lease has not run out: the
    /// fence a leader's own writes check.
    pub async fn lease_holds(&self, cluster: &str, epoch: i64) -> Result<bool, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            let read = format!(
                "SELECT COUNT(*) FROM cluster_leases \
                 WHERE cluster = $1 AND epoch = $2 AND expires_ms > {}",
                now_ms(pg)
            );
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(read))
                .bind(cluster)
                .bind(epoch)
                .fetch_one(pool)
                .await?;
            n == 1
        }))
    }

    /// Says this hub is alive with what it is now; its `seen_ms` is the
    /// database's time.
    pub async fn hub_seen(&self, cluster: &str, hub: &HubRow) -> Result<(), StoreError> {
        on_db!(self, write, |pool, pg| {
            let upsert = format!(
                "INSERT INTO cluster_hubs (cluster, id, instance, address, version, role, epoch, \
                   grants, started_ms, seen_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {}) \
                 ON CONFLICT (cluster, id) DO UPDATE SET instance = excluded.instance, \
                   address = excluded.address, version = excluded.version, role = excluded.role, \
                   epoch = excluded.epoch, grants = excluded.grants, \
                   started_ms = excluded.started_ms, seen_ms = excluded.seen_ms",
                now_ms(pg)
            );
            sqlx::query(sqlx::AssertSqlSafe(upsert))
                .bind(cluster)
                .bind(&hub.id)
                .bind(&hub.instance)
                .bind(&hub.address)
                .bind(&hub.version)
                .bind(&hub.role)
                .bind(hub.epoch)
                .bind(hub.grants)
                .bind(hub.started_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The hubs of a cluster seen within `within_ms`, by id, and the
    /// database's time as it answered.
    pub async fn hubs(
        &self,
        cluster: &str,
        within_ms: i64,
    ) -> Result<(Vec<HubRow>, i64), StoreError> {
        on_db!(self, read, |pool, pg| {
            let now = now_ms(pg);
            let read = format!(
                "SELECT id, instance, address, version, role, epoch, grants, started_ms, seen_ms \
                 FROM cluster_hubs WHERE cluster = $1 AND seen_ms >= {now} - $2 ORDER BY id"
            );
            let hubs: Vec<HubRow> = sqlx::query_as(sqlx::AssertSqlSafe(read))
                .bind(cluster)
                .bind(within_ms)
                .fetch_all(pool)
                .await?;
            let at: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {now}")))
                .fetch_one(pool)
                .await?;
            Ok((hubs, at))
        })
    }

    /// Forgets the hubs of a cluster not seen for `older_than_ms`.
    pub async fn forget_hubs(&self, cluster: &str, older_than_ms: i64) -> Result<u64, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            let delete = format!(
                "DELETE FROM cluster_hubs WHERE cluster = $1 AND seen_ms < {} - $2",
                now_ms(pg)
            );
            sqlx::query(sqlx::AssertSqlSafe(delete))
                .bind(cluster)
                .bind(older_than_ms)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
