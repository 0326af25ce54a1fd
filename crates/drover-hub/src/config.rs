//! The hub's configuration: one TOML file, every field optional, overridable
//! by `DROVER_*` environment variables, with errors that name the field.

use std::net::SocketAddr;
use std::time::Duration;

use drover_proto::admin::BackendSpec;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Where the gateway listens. Loopback by default.
    pub listen: SocketAddr,
    /// Bearer key for `/admin/*`. Without one the management API answers
    /// only when the hub listens on loopback.
    pub admin_key: Option<String>,
    pub queue: QueueConfig,
    pub upstream: UpstreamConfig,
    pub health: HealthConfig,
    pub limits: LimitsConfig,
    pub backends: Vec<BackendSpec>,
    pub clients: Vec<ClientConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Requests that may wait in the hub at once; beyond it, 429.
    pub max_waiting: usize,
    /// How long a request may wait for a slot before a 503.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Waiting this long raises a request's standing by one priority point.
    #[serde(deserialize_with = "duration")]
    pub aging: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Extra attempts on other backends for a request that fails before its
    /// first byte reaches the client.
    pub max_retries: u32,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Until the backend's first byte. Generous: a server may load the model
    /// first (LM Studio JIT).
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// Longest silence inside a response before it counts as broken.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each backend is asked for its models (the active probe).
    #[serde(deserialize_with = "duration")]
    pub probe_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub probe_timeout: Duration,
    /// Consecutive failures that open a backend's breaker.
    pub failure_threshold: u32,
    #[serde(deserialize_with = "duration")]
    pub cooldown: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_cooldown: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
}

/// A known client: its key identifies it for fairness and sets its default
/// priority.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub priority: Option<u8>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            admin_key: None,
            queue: QueueConfig::default(),
            upstream: UpstreamConfig::default(),
            health: HealthConfig::default(),
            limits: LimitsConfig::default(),
            backends: Vec::new(),
            clients: Vec::new(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_waiting: 10_000,
            timeout: Duration::from_secs(60),
            aging: Duration::from_secs(2),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            max_retries: 3,
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(5),
            failure_threshold: 3,
            cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl HubConfig {
    /// Parses TOML, then applies `DROVER_*` overrides from `env`: the rest of
    /// the variable's name is the field's path, lower case, sections joined
    /// by a double underscore (`DROVER_QUEUE__TIMEOUT=30s`).
    pub fn from_toml(text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        for (key, value) in env {
            let Some(rest) = key.strip_prefix("DROVER_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            // Only fields the file could hold; other DROVER_ variables belong
            // to the command line (DROVER_HUB, DROVER_CONFIG, ...).
            if !KNOWN_ROOTS.contains(&path[0].as_str()) {
                continue;
            }
            set_path(&mut doc, &path, parse_env_value(value))
                .map_err(|e| ConfigError(format!("{key}: {e}")))?;
        }
        let config: HubConfig = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue.timeout.is_zero() {
            return Err(ConfigError("queue.timeout must be more than zero".into()));
        }
        if self.health.probe_interval.is_zero() {
            return Err(ConfigError(
                "health.probe_interval must be more than zero".into(),
            ));
        }
        if self.health.failure_threshold == 0 {
            return Err(ConfigError(
                "health.failure_threshold must be at least 1".into(),
            ));
        }
        for (i, c) in self.clients.iter().enumerate() {
            if c.priority.is_some_and(|p| p > 100) {
                return Err(ConfigError(format!(
                    "clients[{i}].priority must be from 0 to 100"
                )));
            }
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.slots == Some(0) || b.model_slots.values().any(|s| *s == 0) {
                return Err(ConfigError(format!(
                    "backends[{i}]: slots must be at least 1"
                )));
            }
        }
        Ok(())
    }
}

const KNOWN_ROOTS: [&str; 6] = [
    "listen",
    "admin_key",
    "queue",
    "upstream",
    "health",
    "limits",
];

fn parse_env_value(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = value.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(value.to_string())
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty name".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("{head} is not a section")),
            }
        }
    }
}

/// Durations as people write them: `60s`, `500ms`, `2m`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration like 30s or 500ms: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(HubConfig::from_toml("", &[]).unwrap(), HubConfig::default());
    }

    #[test]
    fn reads_a_full_file() {
        let c = HubConfig::from_toml(
            r#"
            listen = "0.0.0.0:9000"
            admin_key = "secret"
            [queue]
            timeout = "30s"
            [[backends]]
            name = "studio1"
            kind = "lmstudio"
            url = "http://10.0.0.102:1234"
            model_slots = { qwen = 2 }
            [[clients]]
            name = "bots"
            key = "sk-bots"
            priority = 20
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.queue.timeout, Duration::from_secs(30));
        assert_eq!(c.backends[0].model_slots["qwen"], 2);
        assert_eq!(c.clients[0].priority, Some(20));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            ("DROVER_QUEUE__TIMEOUT".to_string(), "5s".to_string()),
            ("DROVER_UPSTREAM__MAX_RETRIES".to_string(), "1".to_string()),
            ("DROVER_HUB".to_string(), "http://x".to_string()),
        ];
        let c = HubConfig::from_toml("[queue]\ntimeout = \"60s\"", &env).unwrap();
        assert_eq!(c.queue.timeout, Duration::from_secs(5));
        assert_eq!(c.upstream.max_retries, 1);
    }

    #[test]
    fn errors_name_the_bad_field() {
        let cases = [
            ("[queue]\ntimeout = \"soon\"", "soon"),
            ("[queue]\nmax_wait = 3", "max_wait"),
            ("listen = \"nowhere\"", "listen"),
            ("[[backends]]\nkind = \"lmstudio\"", "url"),
            (
                "[[clients]]\nname = \"a\"\nkey = \"k\"\npriority = 200",
                "clients[0].priority",
            ),
        ];
        for (text, want) in cases {
            let err = HubConfig::from_toml(text, &[]).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
