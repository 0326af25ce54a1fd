//! The secret job callbacks are signed with: one for the hub, kept in the
//! store's settings so that every hub on one database signs alike (made by
//! the first hub that starts there), unless `[jobs] webhook_secret` sets
//! this hub's own. A key may have a secret of its own, which signs its
//! jobs' callbacks instead ([`crate::keys::Keys::set_webhook_secret`]).
//!
//! It is shown once: in the log of the hub that made it, and in the answer
//! to `POST /admin/webhook-secret`, which replaces it. Hubs that share the
//! store read it again before each group of deliveries, so a new one is in
//! force everywhere within a poll.

use std::sync::{Arc, RwLock};

use drover_store::{Store, StoreError};

use crate::webhook::{SecretError, WebhookSecret};

/// Its name in the store's settings.
pub const SETTING: &str = "webhook_secret";

/// The secret in force, and where it comes from.
pub struct Secret {
    current: RwLock<Arc<WebhookSecret>>,
    /// `[jobs] webhook_secret` sets it: the store's is not this hub's.
    configured: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "the webhook secret kept in {location} (settings, {SETTING}) cannot be read: {reason}; set \
         [jobs] webhook_secret (DROVER_JOBS__WEBHOOK_SECRET), or delete that row for a new one"
    )]
    Unreadable {
        location: String,
        reason: SecretError,
    },
    #[error("cannot make a webhook secret: {0}")]
    Random(getrandom::Error),
}

/// Why the secret was not replaced.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(
        "this hub's webhook secret is set by [jobs] webhook_secret (or DROVER_JOBS__WEBHOOK_SECRET); \
         change it there"
    )]
    Configured,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot make a webhook secret: {0}")]
    Random(getrandom::Error),
}

impl Secret {
    /// The configured secret, or a stand-in until [`Secret::ensure`] reads
    /// the store's (a hub whose store is away at its start sends no
    /// callback before then).
    pub fn new(configured: Option<&WebhookSecret>) -> Result<Self, LoadError> {
        let (secret, configured) = match configured {
            Some(secret) => (secret.clone(), true),
            None => (WebhookSecret::generate().map_err(LoadError::Random)?, false),
        };
        Ok(Secret {
            current: RwLock::new(Arc::new(secret)),
            configured,
        })
    }

    /// The configured secret, else the store's (made and kept there, and
    /// shown once in the log, by the first hub to start on it).
    pub async fn load(
        store: &Store,
        configured: Option<&WebhookSecret>,
    ) -> Result<Self, LoadError> {
        let secret = Secret::new(configured)?;
        secret.ensure(store).await?;
        Ok(secret)
    }

    /// Takes the store's secret, making and keeping one if it has none.
    pub async fn ensure(&self, store: &Store) -> Result<(), LoadError> {
        if self.configured {
            return Ok(());
        }
        let fresh = WebhookSecret::generate()
            .map_err(LoadError::Random)?
            .to_string();
        let stored = store.setting_or_insert(SETTING, &fresh).await?;
        let secret = read(store, &stored)?;
        if stored == fresh {
            tracing::info!(
                secret = %stored,
                "job callbacks are signed with this new webhook secret, shown here once: give it to \
                 your receivers. It is kept in {} (settings, {SETTING}) and every hub on that store \
                 signs with it; POST /admin/webhook-secret replaces it, and [jobs] webhook_secret \
                 (DROVER_JOBS__WEBHOOK_SECRET) sets your own",
                store.describe()
            );
        }
        *drover_core::sync::write(&self.current) = Arc::new(secret);
        Ok(())
    }

    /// The secret to sign with now.
    pub fn current(&self) -> Arc<WebhookSecret> {
        drover_core::sync::read(&self.current).clone()
    }

    /// Reads the store's secret again: another hub may have replaced it.
    pub async fn refresh(&self, store: &Store) -> Result<(), LoadError> {
        if self.configured {
            return Ok(());
        }
        if let Some(stored) = store.setting(SETTING).await? {
            let secret = read(store, &stored)?;
            *drover_core::sync::write(&self.current) = Arc::new(secret);
        }
        Ok(())
    }

    /// Makes a new secret, stores it for every hub on the store, and signs
    /// with it from now on (retries of earlier callbacks too).
    pub async fn rotate(&self, store: &Store) -> Result<Arc<WebhookSecret>, RotateError> {
        if self.configured {
            return Err(RotateError::Configured);
        }
        let secret = Arc::new(WebhookSecret::generate().map_err(RotateError::Random)?);
        store.set_setting(SETTING, &secret.to_string()).await?;
        *drover_core::sync::write(&self.current) = secret.clone();
        Ok(secret)
    }
}

fn read(store: &Store, stored: &str) -> Result<WebhookSecret, LoadError> {
    stored.parse().map_err(|reason| LoadError::Unreadable {
        location: store.describe(),
        reason,
    })
}
