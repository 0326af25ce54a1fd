use std::path::PathBuf;

use crate::StoreError;

/// Where the store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file; created with its directory if missing.
    Sqlite(PathBuf),
    Postgres {
        url: String,
        /// A schema of its own in that database (made if missing), for
        /// several drovers or tests sharing one database; `public` if none.
        schema: Option<String>,
    },
}

/// The name of the SQLite file in a hub's data directory.
pub const SQLITE_FILE: &str = "drover.db";

impl Location {
    /// From `--database-url`: `postgres://…` (or `postgresql://…`), with
    /// an optional `schema=NAME` parameter of drover's own (its tables in
    /// that schema), or `sqlite:PATH` / `sqlite://PATH`.
    pub fn parse(url: &str) -> Result<Location, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl {
            url: redact(url),
            reason: reason.into(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut schema = None;
            let mut rest = Vec::new();
            for param in query.split('&').filter(|p| !p.is_empty()) {
                match param.strip_prefix("schema=") {
                    Some(name) => schema = Some(name.to_string()),
                    None => rest.push(param),
                }
            }
            if schema.as_deref().is_some_and(|s| {
                s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }) {
                return Err(bad("schema= takes letters, digits and underscores"));
            }
            let url = if rest.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            return Ok(Location::Postgres { url, schema });
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(bad("it names no file"));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        Err(bad("expected postgres://… or sqlite:PATH"))
    }

    /// How it is named in messages: a PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres { url, schema } => match schema {
                Some(schema) => format!("{} (schema {schema})", redact(url)),
                None => redact(url),
            },
        }
    }
}

/// A URL with any password replaced, for messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_store_and_hide_passwords() {
        assert_eq!(
            Location::parse("sqlite:/var/lib/drover/x.db").ok(),
            Some(Location::Sqlite("/var/lib/drover/x.db".into()))
        );
        assert_eq!(
            Location::parse("sqlite:///var/lib/drover/x.db").ok(),
            Some(Location::Sqlite("/var/lib/drover/x.db".into()))
        );
        let pg = Location::parse("postgres://me:secret@db:5432/drover").unwrap();
        assert_eq!(pg.describe(), "postgres://me:***@db:5432/drover");
        let err = Location::parse("mysql://me:secret@db/x").unwrap_err();
        assert!(err.to_string().contains("expected postgres://"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(Location::parse("sqlite:").is_err());
        assert_eq!(
            Location::parse("postgres://u@h/db?sslmode=disable&schema=hub_a").ok(),
            Some(Location::Postgres {
                url: "postgres://u@h/db?sslmode=disable".into(),
                schema: Some("hub_a".into())
            })
        );
        assert!(Location::parse("postgres://u@h/db?schema=a;drop").is_err());
    }
}
