//! Nodes (the machines of the fleet) and the join tokens that let them in.
//! A join is one transaction: the token is spent (or found reusable and
//! alive) and the node stored with its credential's hash, or neither.

use crate::{Store, StoreError, on_db};

/// A join token as kept: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JoinToken {
    pub id: String,
    pub sha256: String,
    pub prefix: String,
    pub created_unix: i64,
    pub expires_unix: i64,
    /// 1: one node may join with it; 0: any number until it expires.
    pub single_use: i64,
    pub used_unix: Option<i64>,
    pub revoked_unix: Option<i64>,
}

/// A node as kept.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub credential_sha256: String,
    pub token_id: String,
    pub joined_unix: i64,
    /// Milliseconds since the epoch: a node is down after three
    /// heartbeats, which may be shorter than a second.
    pub last_seen_ms: i64,
    pub version: String,
    /// Its last heartbeat's facts, JSON.
    pub facts: String,
    pub draining: i64,
    pub removed_unix: Option<i64>,
    /// Its managed services as its last heartbeat reported them, JSON.
    pub services: String,
}

/// One heartbeat as kept: what the node said, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBeat {
    pub id: String,
    pub version: String,
    /// JSON.
    pub facts: String,
    /// JSON.
    pub services: String,
    pub last_seen_ms: i64,
}

/// A command the hub has for a node's agent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeCommand {
    pub id: String,
    pub node_id: String,
    /// `start`, `stop`, `restart` or `logs`.
    pub action: String,
    /// The service it is for; empty: every service of the node.
    pub service: String,
    pub created_ms: i64,
    /// `queued`, `sent`, `done` or `failed`.
    pub state: String,
    pub sent_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// What the agent said: a message, or the log tail.
    pub result: Option<String>,
    /// What else it carries (JSON): an update's version, SHA-256 and
    /// health deadline; empty for none.
    pub args: String,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// No token has this hash (never made, or mistyped).
    Unknown,
    /// It was single-use and a node joined with it already.
    Used,
    Expired,
    Revoked,
}

const TOKEN_COLUMNS: &str =
    "id, sha256, prefix, created_unix, expires_unix, single_use, used_unix, revoked_unix";
const NODE_COLUMNS: &str = "id, name, credential_sha256, token_id, joined_unix, last_seen_ms, \
                            version, facts, draining, removed_unix, services";
const COMMAND_COLUMNS: &str =
    "id, node_id, action, service, created_ms, state, sent_ms, finished_ms, result, args";

impl Store {
    pub async fn insert_join_token(&self, token: &JoinToken) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO join_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        on_db!(self, write, |pool, pg| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&token.id)
                .bind(&token.sha256)
                .bind(&token.prefix)
                .bind(token.created_unix)
                .bind(token.expires_unix)
                .bind(token.single_use)
                .bind(token.used_unix)
                .bind(token.revoked_unix)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every join token, newest first.
    pub async fn join_tokens(&self) -> Result<Vec<JoinToken>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_unix DESC, id");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Revokes a join token; whether one was alive.
    pub async fn revoke_join_token(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE join_tokens SET revoked_unix = $2 WHERE id = $1 AND revoked_unix IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Lets `node` in with the join token whose hash is `token_sha256`, at
    /// `now` (Unix seconds): the token checked and, if single-use, spent,
    /// and the node stored, in one transaction. Two agents racing with one
    /// single-use token: one joins, the other hears `Used`.
    pub async fn join_node(
        &self,
        token_sha256: &str,
        node: &Node,
        now: i64,
    ) -> Result<Result<(), JoinRefused>, StoreError> {
        let find = format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE sha256 = $1");
        let insert = format!(
            "INSERT INTO nodes ({NODE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        Ok(on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            let token: Option<JoinToken> = sqlx::query_as(sqlx::AssertSqlSafe(find))
                .bind(token_sha256)
                .fetch_optional(&mut *tx)
                .await?;
            let refused = match &token {
                None => Some(JoinRefused::Unknown),
                Some(t) if t.revoked_unix.is_some() => Some(JoinRefused::Revoked),
                Some(t) if t.expires_unix <= now => Some(JoinRefused::Expired),
                Some(t) if t.single_use != 0 && t.used_unix.is_some() => Some(JoinRefused::Used),
                Some(_) => None,
            };
            let outcome = match (refused, token) {
                (None, Some(t)) => {
                    // Spent only if no other join spent it first: the
                    // condition is checked again by the write itself.
                    let spent = sqlx::query(
                        "UPDATE join_tokens SET used_unix = $2 \
                         WHERE id = $1 AND (single_use = 0 OR used_unix IS NULL)",
                    )
                    .bind(&t.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if spent == 1 {
                        sqlx::query(sqlx::AssertSqlSafe(insert))
                            .bind(&node.id)
                            .bind(&node.name)
                            .bind(&node.credential_sha256)
                            .bind(&t.id)
                            .bind(node.joined_unix)
                            .bind(node.last_seen_ms)
                            .bind(&node.version)
                            .bind(&node.facts)
                            .bind(node.draining)
                            .bind(node.removed_unix)
                            .bind(&node.services)
                            .execute(&mut *tx)
                            .await?;
                        Ok(())
                    } else {
                        Err(JoinRefused::Used)
                    }
                }
                (why, _) => Err(why.unwrap_or(JoinRefused::Unknown)),
            };
            if outcome.is_ok() {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            outcome
        }))
    }

    /// The node whose credential hashes to `sha256`, unless removed.
    pub async fn node_by_credential(&self, sha256: &str) -> Result<Option<Node>, StoreError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE credential_sha256 = $1 AND removed_unix IS NULL"
        );
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(sha256)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Heartbeats, many in one transaction: each node's version, facts,
    /// services and when it was heard (milliseconds). A node removed
    /// meanwhile is left as it is, and so is one a newer heartbeat reached
    /// first (a write never takes a node back in time).
    pub async fn node_heartbeats(&self, beats: &[NodeBeat]) -> Result<(), StoreError> {
        if beats.is_empty() {
            return Ok(());
        }
        on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            for beat in beats {
                sqlx::query(
                    "UPDATE nodes SET last_seen_ms = $2, version = $3, facts = $4, services = $5 \
                     WHERE id = $1 AND removed_unix IS NULL AND last_seen_ms <= $2",
                )
                .bind(&beat.id)
                .bind(beat.last_seen_ms)
                .bind(&beat.version)
                .bind(&beat.facts)
                .bind(&beat.services)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every node not removed, by name.
    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE removed_unix IS NULL ORDER BY name, id"
        );
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Drains (`true`) or undrains a node; whether there is such a node.
    pub async fn set_node_draining(&self, id: &str, draining: bool) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query("UPDATE nodes SET draining = $2 WHERE id = $1 AND removed_unix IS NULL")
                .bind(id)
                .bind(i64::from(draining))
                .execute(pool)
                .await?
                .rows_affected()
                == 1
        }))
    }

    pub async fn insert_node_command(&self, command: &NodeCommand) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO node_commands ({COMMAND_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        on_db!(self, write, |pool, pg| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&command.id)
                .bind(&command.node_id)
                .bind(&command.action)
                .bind(&command.service)
                .bind(command.created_ms)
                .bind(&command.state)
                .bind(command.sent_ms)
                .bind(command.finished_ms)
                .bind(&command.result)
                .bind(&command.args)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Takes a node's queued commands, oldest first, at most `max`: each
    /// is marked sent, by its own conditional write, so a command two
    /// polls race for goes to one.
    pub async fn take_node_commands(
        &self,
        node_id: &str,
        now: i64,
        max: i64,
    ) -> Result<Vec<NodeCommand>, StoreError> {
        let find = format!(
            "SELECT {COMMAND_COLUMNS} FROM node_commands \
             WHERE node_id = $1 AND state = 'queued' ORDER BY created_ms, id LIMIT $2"
        );
        Ok(on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            let queued: Vec<NodeCommand> = sqlx::query_as(sqlx::AssertSqlSafe(find))
                .bind(node_id)
                .bind(max)
                .fetch_all(&mut *tx)
                .await?;
            let mut taken = Vec::new();
            for mut command in queued {
                let sent = sqlx::query(
                    "UPDATE node_commands SET state = 'sent', sent_ms = $2 \
                     WHERE id = $1 AND state = 'queued'",
                )
                .bind(&command.id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if sent == 1 {
                    command.state = "sent".into();
                    command.sent_ms = Some(now);
                    taken.push(command);
                }
            }
            tx.commit().await?;
            taken
        }))
    }

    /// The agent's answer to a command it was sent: `done` or `failed`,
    /// with what it said. Whether the command was this node's and waiting
    /// for an answer.
    pub async fn finish_node_command(
        &self,
        node_id: &str,
        id: &str,
        ok: bool,
        result: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query(
                "UPDATE node_commands SET state = $3, result = $4, finished_ms = $5 \
                 WHERE id = $1 AND node_id = $2 AND state = 'sent'",
            )
            .bind(id)
            .bind(node_id)
            .bind(if ok { "done" } else { "failed" })
            .bind(result)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    pub async fn node_command(&self, id: &str) -> Result<Option<NodeCommand>, StoreError> {
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM node_commands WHERE id = $1");
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }
}
