//! A backend's base URL, validated once so the hot path only concatenates.

use std::fmt;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid URL {0:?}: {1}")]
    Invalid(String, String),
    #[error("URL {0:?} has no host")]
    NoHost(String),
    #[error("URL {0:?}: only http:// backends are supported so far")]
    Scheme(String),
}

/// `http://host:port[/prefix]`, without a trailing `/v1`: users paste the
/// OpenAI base URL they already use, and drover appends `/v1/...` itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let trimmed = url.trim();
        let uri: Uri = trimmed.parse().map_err(|e: http::uri::InvalidUri| {
            EndpointError::Invalid(url.to_string(), e.to_string())
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            EndpointError::Invalid(url.to_string(), "missing scheme (http://)".into())
        })?;
        if scheme != Scheme::HTTP {
            return Err(EndpointError::Scheme(url.to_string()));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| EndpointError::NoHost(url.to_string()))?;
        let mut prefix = uri.path().trim_end_matches('/').to_string();
        if prefix.ends_with("/v1") {
            prefix.truncate(prefix.len() - 3);
        }
        Ok(Endpoint {
            scheme,
            authority,
            prefix,
        })
    }

    /// The full URI for `path_and_query` (which starts with `/`).
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let pq: PathAndQuery = if self.prefix.is_empty() {
            path_and_query.parse()?
        } else {
            format!("{}{}", self.prefix, path_and_query).parse()?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }

    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_roots_and_openai_base_urls_alike() {
        for (input, want) in [
            ("http://10.0.0.102:1234", "http://10.0.0.102:1234/v1/models"),
            (
                "http://10.0.0.102:1234/",
                "http://10.0.0.102:1234/v1/models",
            ),
            ("http://host:8000/v1", "http://host:8000/v1/models"),
            ("http://host/proxy/v1/", "http://host/proxy/v1/models"),
        ] {
            let e = Endpoint::parse(input).unwrap();
            assert_eq!(e.uri("/v1/models").unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("10.0.0.1:1234", "missing scheme"),
            ("https://host", "only http://"),
            ("http://", "invalid URL"),
            ("not a url", "invalid URL"),
        ];
        for (input, want) in cases {
            let err = Endpoint::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
