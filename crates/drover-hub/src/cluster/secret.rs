//! The cluster's secret: what a follower's link shows the leader. Made by
//! the first hub on the store and kept there (`settings`), so every hub of
//! the cluster, and only they, know it.

use std::sync::OnceLock;

use drover_store::{Store, StoreError};

const SETTING: &str = "cluster_secret";

pub struct Secret {
    store: Option<Store>,
    known: OnceLock<String>,
}

impl Secret {
    pub fn new(store: Option<Store>) -> Self {
        Secret {
            store,
            known: OnceLock::new(),
        }
    }

    /// The secret, if it has been read.
    pub fn known(&self) -> Option<&str> {
        self.known.get().map(String::as_str)
    }

    /// Whether `headers` show the cluster's secret: they come from one of
    /// its hubs.
    pub fn shown_in(&self, headers: &http::HeaderMap) -> bool {
        let Some(secret) = self.known() else {
            return false;
        };
        let given = headers
            .get(drover_proto::cluster::link::SECRET_HEADER)
            .map(http::HeaderValue::as_bytes)
            .unwrap_or_default();
        constant_time_eq(given, secret.as_bytes())
    }

    /// The secret, read from the store (made there first if none is).
    pub async fn get(&self) -> Result<String, StoreError> {
        if let Some(known) = self.known.get() {
            return Ok(known.clone());
        }
        let Some(store) = &self.store else {
            return Err(StoreError::Other(
                "no store is shared with other hubs".into(),
            ));
        };
        let fresh = crate::keys::random_hex::<32>("")
            .map_err(|e| StoreError::Other(format!("the cluster's secret: {e}")))?;
        let stored = store.setting_or_insert(SETTING, &fresh).await?;
        Ok(self.known.get_or_init(|| stored).clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
