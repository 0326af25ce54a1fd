//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>) for
//! the callbacks that say a job has ended, so that a receiver checks them
//! with any of that specification's libraries instead of code written for
//! drover.
//!
//! A callback goes out with three headers: `webhook-id` (the message's id,
//! the same on every retry, for the receiver to drop duplicates),
//! `webhook-timestamp` (this attempt's unix seconds, for the receiver to
//! refuse replays) and `webhook-signature`, an HMAC-SHA256 over
//! `{id}.{timestamp}.{body}` keyed with the endpoint's secret.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Marks a string as a Standard Webhooks secret wherever it is pasted.
const PREFIX: &str = "whsec_";

/// The specification's bounds: at least 192 bits, at most 512.
const KEY_BYTES: RangeInclusive<usize> = 24..=64;

/// SHA-256's own strength; more would add nothing to HMAC-SHA256.
const NEW_KEY_BYTES: usize = 32;

/// Secrets are written padded, but read with or without padding, as the
/// reference libraries read them (the Python one pads whatever it is given).
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An endpoint's signing key. Its [`Display`](fmt::Display) form,
/// `whsec_<base64>`, is what an operator is shown once and what is stored,
/// and [`FromStr`] reads it back; its `Debug` form never shows the key, so
/// a `{:?}` in a log cannot leak it. Equality is for configurations
/// compared whole; nothing checks a signature with it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

/// Why a string is not a webhook secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret is whsec_ and base64, and this is not base64: {0}")]
    NotBase64(base64::DecodeError),
    #[error("a webhook secret's key is 24 to 64 bytes, and this one is {0}")]
    Length(usize),
}

/// Why a message id cannot be sent as a `webhook-id`.
#[derive(Debug, thiserror::Error)]
pub enum MessageIdError {
    #[error("a webhook message id may not be empty")]
    Empty,
    #[error(
        "webhook message id {0:?} contains a '.', which the signed content uses to separate the id, the timestamp and the body"
    )]
    Dot(String),
    #[error("webhook message id {0:?} is not a valid header value")]
    NotAHeaderValue(String),
}

impl WebhookSecret {
    /// A new random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = vec![0; NEW_KEY_BYTES];
        getrandom::fill(&mut key)?;
        Ok(WebhookSecret { key })
    }

    /// The `webhook-signature` value for one message: `v1,` and the base64
    /// of HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`. While a secret is
    /// being rotated the header may carry one such value per secret, separated
    /// by spaces.
    ///
    /// `msg_id` must contain no `.`, or two messages could sign the same
    /// content; [`headers`](Self::headers) checks it.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes a key of any length")
        };
        mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The three headers a callback carrying `body` goes out with.
    pub fn headers(
        &self,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<[(HeaderName, HeaderValue); 3], MessageIdError> {
        if msg_id.is_empty() {
            return Err(MessageIdError::Empty);
        }
        if msg_id.contains('.') {
            return Err(MessageIdError::Dot(msg_id.to_owned()));
        }
        let id = HeaderValue::from_str(msg_id)
            .map_err(|_| MessageIdError::NotAHeaderValue(msg_id.to_owned()))?;
        let Ok(signature) = HeaderValue::try_from(self.sign(msg_id, timestamp, body)) else {
            unreachable!("v1, and base64 are visible ASCII")
        };
        Ok([
            (WEBHOOK_ID, id),
            (WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp)),
            (WEBHOOK_SIGNATURE, signature),
        ])
    }
}

impl FromStr for WebhookSecret {
    type Err = SecretError;

    /// `whsec_<base64>`, or the bare base64 the reference libraries accept
    /// too.
    fn from_str(s: &str) -> Result<Self, SecretError> {
        let encoded = s.strip_prefix(PREFIX).unwrap_or(s);
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(SecretError::NotBase64)?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(WebhookSecret { key })
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", SECRET_BASE64.encode(&self.key))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries, which
    /// the Python `standardwebhooks` package's own `Webhook.sign` reproduces.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret(s: &str) -> WebhookSecret {
        s.parse().unwrap()
    }

    #[test]
    fn signs_the_reference_vector() {
        assert_eq!(secret(SECRET).sign(MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn reads_a_secret_with_or_without_its_prefix_or_padding() {
        let bare = SECRET.strip_prefix("whsec_").unwrap();
        assert_eq!(secret(bare).sign(MSG_ID, TIMESTAMP, BODY), SIGNATURE);
        assert_eq!(secret(bare).to_string(), SECRET);

        let generated = WebhookSecret::generate().unwrap().to_string();
        assert!(generated.ends_with('='), "{generated}");
        let unpadded = generated.trim_end_matches('=');
        assert_eq!(secret(unpadded).to_string(), generated);
    }

    #[test]
    fn names_what_is_wrong_with_a_secret() {
        let cases = [
            ("whsec_not base64!", "not base64"),
            ("whsec_", "this one is 0"),
            ("whsec_c2hvcnQ=", "this one is 5"),
            (
                &format!("whsec_{}", STANDARD.encode([7u8; 65])),
                "this one is 65",
            ),
        ];
        for (bad, problem) in cases {
            let error = bad.parse::<WebhookSecret>().unwrap_err().to_string();
            assert!(error.contains(problem), "{bad:?}: {error}");
        }
        for edge in [24, 64] {
            secret(&format!("whsec_{}", STANDARD.encode(vec![7u8; edge])));
        }
    }

    #[test]
    fn generates_new_32_byte_keys_that_read_back() {
        let a = WebhookSecret::generate().unwrap();
        let b = WebhookSecret::generate().unwrap();
        assert_eq!(a.key.len(), 32);
        assert_ne!(a.key, b.key);
        let text = a.to_string();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(secret(&text).key, a.key);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let s = secret(SECRET);
        assert_eq!(format!("{s:?}"), "WebhookSecret { .. }");
        assert_eq!(format!("{s:#?}"), "WebhookSecret { .. }");
    }

    #[test]
    fn headers_carry_id_timestamp_and_signature() {
        let headers = secret(SECRET).headers(MSG_ID, TIMESTAMP, BODY).unwrap();
        let [id, timestamp, signature] =
            headers.map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()));
        assert_eq!(id, ("webhook-id".into(), MSG_ID.into()));
        assert_eq!(timestamp, ("webhook-timestamp".into(), "1614265330".into()));
        assert_eq!(signature, ("webhook-signature".into(), SIGNATURE.into()));
    }

    #[test]
    fn headers_refuse_an_id_that_could_not_be_checked() {
        let s = secret(SECRET);
        assert!(matches!(s.headers("", 1, b""), Err(MessageIdError::Empty)));
        assert!(matches!(
            s.headers("msg.1", 1, b""),
            Err(MessageIdError::Dot(_))
        ));
        assert!(matches!(
            s.headers("msg\n1", 1, b""),
            Err(MessageIdError::NotAHeaderValue(_))
        ));
    }
}
