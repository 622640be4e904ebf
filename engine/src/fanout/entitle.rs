//! Signed tokens (JWT) and the entitlements they carry (protocol §3.5). Sans-IO: a token and
//! the current Unix time in, a [`Grant`] (or why not) out.
//!
//! A token must verify with the configured key ([`JwtKey`]: HS256 secret, or an RS256/ES256
//! public key) and carry `exp` (seconds since the epoch) later than now. An optional `symbols`
//! claim lists symbol names and `*`-patterns (`*` matches any run of characters, also empty:
//! `BTC-*`, `*-USD`, `*`); without it the holder may see every symbol. The clock is the
//! caller's: expiry is checked here against the `now` it is handed, never read.

use serde::Deserialize;

pub use crate::config::JwtKey;

/// Most patterns a token may carry (a larger claim is refused as invalid).
pub const MAX_PATTERNS: usize = 10_000;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The signature, header or claims do not verify (or `exp` is missing).
    #[error("token not valid: {0}")]
    Invalid(String),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
}

/// The symbol patterns of a token's `symbols` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns(Vec<String>);

impl Patterns {
    /// Patterns from a claim's strings (`*` is a wildcard).
    pub fn new<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Self {
        Self(patterns.into_iter().map(Into::into).collect())
    }

    /// Whether `symbol` matches one of the patterns.
    pub fn allows(&self, symbol: &str) -> bool {
        self.0
            .iter()
            .any(|p| matches(p.as_bytes(), symbol.as_bytes()))
    }
}

/// What a verified token grants: until when, and which symbols (`None`: every symbol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `exp`, seconds since the Unix epoch.
    pub exp: u64,
    /// The `symbols` claim, if any.
    pub symbols: Option<Patterns>,
}

impl Grant {
    /// Whether the holder may see `symbol`.
    pub fn allows(&self, symbol: &str) -> bool {
        self.symbols.as_ref().is_none_or(|p| p.allows(symbol))
    }
}

/// Whether `symbol` may be seen under `grant` (no grant: no entitlements configured, so yes).
pub fn entitled(grant: Option<&Grant>, symbol: &str) -> bool {
    grant.is_none_or(|g| g.allows(symbol))
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<serde_json::Value>,
    #[serde(default)]
    symbols: Option<Vec<String>>,
}

/// Verifies `token` with `key` at `now_s` (seconds since the epoch).
///
/// # Errors
/// [`TokenError::Invalid`] when the token does not verify, lacks a numeric `exp` or has a
/// malformed `symbols` claim; [`TokenError::Expired`] when `exp <= now_s`.
pub fn verify(key: &JwtKey, token: &str, now_s: u64) -> Result<Grant, TokenError> {
    let data = key
        .with_key(|alg, decoding| {
            let mut v = jsonwebtoken::Validation::new(alg);
            v.algorithms = vec![alg];
            // Time is ours (sans-IO): exp is checked below against the caller's clock.
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            v.required_spec_claims.clear();
            jsonwebtoken::decode::<Claims>(token, decoding, &v)
        })
        .map_err(|e| TokenError::Invalid(e.to_string()))?;
    let exp = match data.claims.exp {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| TokenError::Invalid("exp is not a time".into()))?,
        Some(_) => return Err(TokenError::Invalid("exp is not a number".into())),
        None => return Err(TokenError::Invalid("exp is required".into())),
    };
    if exp <= now_s {
        return Err(TokenError::Expired);
    }
    let symbols = match data.claims.symbols {
        None => None,
        Some(list) if list.len() > MAX_PATTERNS => {
            return Err(TokenError::Invalid("too many symbols".into()));
        }
        Some(list) => Some(Patterns::new(list)),
    };
    Ok(Grant { exp, symbols })
}

/// Glob match with `*` (any run, also empty); every other byte matches itself.
fn matches(pat: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point: linear in practice, no recursion.
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    #[test]
    fn patterns() {
        assert!(matches(b"*", b""));
        assert!(matches(b"*", b"BTC-USD"));
        assert!(matches(b"BTC-USD", b"BTC-USD"));
        assert!(!matches(b"BTC-USD", b"BTC-USDT"));
        assert!(matches(b"BTC-*", b"BTC-USD"));
        assert!(matches(b"BTC-*", b"BTC-"));
        assert!(!matches(b"BTC-*", b"ETH-USD"));
        assert!(matches(b"*-USD", b"ETH-USD"));
        assert!(!matches(b"*-USD", b"ETH-USDT"));
        assert!(matches(b"*T*-*", b"ETH-USD"));
        assert!(matches(b"S*0*", b"SYM0010"));
        assert!(!matches(b"", b"A"));
        assert!(matches(b"**", b"A"));
        let p = Patterns::new(["BTC-USD", "SOL-*"]);
        assert!(p.allows("BTC-USD") && p.allows("SOL-EUR") && !p.allows("ETH-USD"));
        assert!(entitled(None, "X"));
        let g = Grant {
            exp: 1,
            symbols: None,
        };
        assert!(entitled(Some(&g), "X"));
    }

    fn key() -> JwtKey {
        JwtKey::hs256(b"s3cret")
    }

    fn token(claims: &serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn claims() {
        let k = key();
        let t = token(&json!({"exp": 2000, "symbols": ["BTC-*"]}), b"s3cret");
        let g = verify(&k, &t, 1000).unwrap();
        assert_eq!(g.exp, 2000);
        assert!(g.allows("BTC-USD") && !g.allows("ETH-USD"));
        assert_eq!(verify(&k, &t, 2000), Err(TokenError::Expired));
        let all = token(&json!({"exp": 2000}), b"s3cret");
        assert!(verify(&k, &all, 1000).unwrap().allows("ANY"));
        let no_exp = token(&json!({"symbols": ["A"]}), b"s3cret");
        assert!(matches!(
            verify(&k, &no_exp, 1),
            Err(TokenError::Invalid(_))
        ));
        let str_exp = token(&json!({"exp": "2000"}), b"s3cret");
        assert!(matches!(
            verify(&k, &str_exp, 1),
            Err(TokenError::Invalid(_))
        ));
        let bad_sym = token(&json!({"exp": 2000, "symbols": "A"}), b"s3cret");
        assert!(matches!(
            verify(&k, &bad_sym, 1),
            Err(TokenError::Invalid(_))
        ));
        let other = token(&json!({"exp": 2000}), b"other");
        assert!(matches!(verify(&k, &other, 1), Err(TokenError::Invalid(_))));
        assert!(matches!(
            verify(&k, "garbage", 1),
            Err(TokenError::Invalid(_))
        ));
        // alg none and a different algorithm are refused.
        let mut h = Header::new(jsonwebtoken::Algorithm::HS384);
        h.typ = None;
        let hs384 = encode(
            &h,
            &json!({"exp": 2000}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(matches!(verify(&k, &hs384, 1), Err(TokenError::Invalid(_))));
        // An HS256 token is refused by an ES256 key (no algorithm confusion), and vice versa.
        let ec = rcgen::KeyPair::generate().unwrap();
        let es = JwtKey::from_public_pem(ec.public_key_pem().as_bytes()).unwrap();
        assert_eq!(es.algorithm(), jsonwebtoken::Algorithm::ES256);
        let signed = encode(
            &Header::new(jsonwebtoken::Algorithm::ES256),
            &json!({"exp": 2000, "symbols": ["ETH-*"]}),
            &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(verify(&es, &signed, 1000).unwrap().allows("ETH-USD"));
        assert!(matches!(verify(&es, &t, 1000), Err(TokenError::Invalid(_))));
        assert!(matches!(
            verify(&k, &signed, 1000),
            Err(TokenError::Invalid(_))
        ));
        assert!(JwtKey::from_public_pem(b"not a key").is_err());
        let none = "eyJhbGciOiJub25lIn0.eyJleHAiOjIwMDB9.";
        assert!(matches!(verify(&k, none, 1), Err(TokenError::Invalid(_))));
    }
}
