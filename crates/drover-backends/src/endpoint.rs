//! A backend's base URL, validated once so the hot path only concatenates.
//!
//! Credentials in the URL (`http://user:secret@host`) are taken out at
//! parse time: they become an `Authorization: Basic` header and appear in no
//! name, listing, log line or response header.

use std::fmt;

use base64::Engine as _;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid URL {0:?}: {1}")]
    Invalid(String, String),
    #[error("URL {0:?} has no host")]
    NoHost(String),
    #[error("URL {0:?}: a backend is http:// or https://")]
    Scheme(String),
}

/// `http://host:port[/prefix]`, without a trailing `/v1`: users paste the
/// OpenAI base URL they already use, and drover appends `/v1/...` itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: Scheme,
    /// Host and port, never credentials.
    authority: Authority,
    prefix: String,
    /// From the URL's `user:password@`, ready to send.
    basic_auth: Option<HeaderValue>,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let trimmed = url.trim();
        let uri: Uri = trimmed.parse().map_err(|e: http::uri::InvalidUri| {
            EndpointError::Invalid(redact(url), e.to_string())
        })?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            EndpointError::Invalid(redact(url), "missing scheme (http://)".into())
        })?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(EndpointError::Scheme(redact(url)));
        }
        let full = uri
            .authority()
            .ok_or_else(|| EndpointError::NoHost(redact(url)))?;
        let (authority, basic_auth) = match full.as_str().rsplit_once('@') {
            None => (full.clone(), None),
            Some((userinfo, host)) => {
                let invalid =
                    |e: http::uri::InvalidUri| EndpointError::Invalid(redact(url), e.to_string());
                (host.parse().map_err(invalid)?, Some(basic(userinfo)))
            }
        };
        let mut prefix = uri.path().trim_end_matches('/').to_string();
        if prefix.ends_with("/v1") {
            prefix.truncate(prefix.len() - 3);
        }
        Ok(Endpoint {
            scheme,
            authority,
            prefix,
            basic_auth,
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

    /// `host:port`, without credentials.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// Whether `other` reaches the same server: same scheme, port and path
    /// prefix, and the same host, where every loopback name (`localhost`,
    /// `127.x.x.x`, `::1`) is one host and case does not count. Two
    /// backends on one server would each count its slots as their own.
    pub fn same_server(&self, other: &Endpoint) -> bool {
        self.server_key() == other.server_key()
    }

    fn server_key(&self) -> (String, String, u16, &str) {
        let host = self.authority.host().to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare == "localhost"
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let port = self
            .authority
            .port_u16()
            .unwrap_or(match self.scheme.as_str() {
                "https" => 443,
                _ => 80,
            });
        (
            self.scheme.as_str().to_string(),
            if loopback { "loopback".into() } else { host },
            port,
            &self.prefix,
        )
    }

    /// The `Authorization` header to send: a bearer `api_key` if there is
    /// one, else the URL's credentials, if any.
    pub fn authorization(&self, api_key: Option<&str>) -> Option<HeaderValue> {
        match api_key {
            Some(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
                v.set_sensitive(true);
                Some(v)
            }
            None => self.basic_auth.clone(),
        }
    }
}

/// `user:password` (percent-encoded, as in a URL) as a Basic credential.
fn basic(userinfo: &str) -> HeaderValue {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(userinfo).collect();
    let token = base64::engine::general_purpose::STANDARD.encode(decoded);
    let mut v = HeaderValue::from_str(&format!("Basic {token}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

/// A URL as it may be shown: any `user:password@` replaced by `***@`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..host_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[host_end..]),
        None => url.to_string(),
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
    fn the_same_server_under_other_spellings_is_the_same_server() {
        let same = |a: &str, b: &str| {
            Endpoint::parse(a)
                .unwrap()
                .same_server(&Endpoint::parse(b).unwrap())
        };
        for (a, b) in [
            ("http://127.0.0.1:8080", "http://localhost:8080/v1"),
            ("http://LOCALHOST:8080/", "http://[::1]:8080"),
            (
                "http://Studio.lan:1234",
                "http://user:pw@studio.lan:1234/v1/",
            ),
            ("http://gpu", "http://gpu:80"),
            ("https://gpu", "https://gpu:443/"),
        ] {
            assert!(same(a, b), "{a} and {b}");
        }
        for (a, b) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8081"),
            ("http://gpu:8080", "https://gpu:8080"),
            ("http://gpu-1:8080", "http://gpu-2:8080"),
            ("http://gpu:8080/a", "http://gpu:8080/b"),
        ] {
            assert!(!same(a, b), "{a} and {b}");
        }
    }

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
    fn credentials_leave_the_url_and_become_a_basic_header() {
        let e = Endpoint::parse("http://user:s%40cret@10.0.0.5:1234/v1").unwrap();
        assert_eq!(e.authority(), "10.0.0.5:1234");
        assert_eq!(e.to_string(), "http://10.0.0.5:1234");
        assert_eq!(
            e.uri("/v1/models").unwrap().to_string(),
            "http://10.0.0.5:1234/v1/models"
        );
        // base64("user:s@cret")
        assert_eq!(e.authorization(None).unwrap(), "Basic dXNlcjpzQGNyZXQ=");
        assert_eq!(e.authorization(Some("k")).unwrap(), "Bearer k");
        assert!(!format!("{e:?}").contains("cret"));
        assert_eq!(redact("http://user:secret@host:1/x"), "http://***@host:1/x");
        assert_eq!(redact("http://host:1/a@b"), "http://host:1/a@b");
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("10.0.0.1:1234", "missing scheme"),
            ("ftp://host", "http:// or https://"),
            ("http://", "invalid URL"),
            ("not a url", "invalid URL"),
        ];
        for (input, want) in cases {
            let err = Endpoint::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
