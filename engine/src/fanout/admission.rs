//! Who may open a WebSocket: `Origin` allowlist and access tokens, decided before the upgrade.
//!
//! Browsers cannot set headers on a WebSocket request, so a token travels either as the `token`
//! query parameter or as a subprotocol `token.<TOKEN>` in `Sec-WebSocket-Protocol` (kept out of
//! URLs and access logs). When a client offers subprotocols, the server must select one of them:
//! it selects `tickcast.v1` when offered, else the token subprotocol itself.

use crate::config::Config;

use super::entitle::{self, Grant, TokenError};

/// The subprotocol clients may offer next to their token.
pub const SUBPROTOCOL: &str = "tickcast.v1";
/// Prefix of a token carried as a subprotocol.
pub const TOKEN_PREFIX: &str = "token.";

/// Why an upgrade is refused, with the HTTP status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// `Origin` missing or not on the allowlist (cross-site WebSocket hijacking): 403.
    #[error("origin not allowed")]
    Origin,
    /// A token is required and none was given: 401.
    #[error("access token required")]
    MissingToken,
    /// The token is not one of the configured tokens, or a JWT that does not verify: 403.
    #[error("access token not valid")]
    BadToken,
    /// The JWT's `exp` has passed: 403.
    #[error("access token expired")]
    ExpiredToken,
}

/// An admitted upgrade: the subprotocol to select, and what the JWT grants (with JWTs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The subprotocol to select, if any.
    pub protocol: Option<String>,
    /// The verified JWT's grant (`None` without JWTs).
    pub grant: Option<Grant>,
}

impl Refusal {
    /// HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Self::MissingToken => 401,
            Self::Origin | Self::BadToken | Self::ExpiredToken => 403,
        }
    }

    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::MissingToken => "missing_token",
            Self::BadToken => "bad_token",
            Self::ExpiredToken => "expired_token",
        }
    }
}

/// Decides an upgrade request against the configured origins (`Config::origin_allowed`) and
/// tokens (`Config::tokens`, or JWTs verified with `Config::jwt` at `now_s`, seconds since the
/// epoch). Returns the subprotocol to select (if any) and the JWT's grant.
///
/// With an origin allowlist, a request without `Origin` is refused too: browsers always send
/// one, and the allowlist exists to stop cross-site pages.
///
/// # Errors
/// The [`Refusal`] to answer with.
pub fn check(
    config: &Config,
    origin: Option<&str>,
    query_token: Option<&str>,
    protocols: &[String],
    now_s: u64,
) -> Result<Admitted, Refusal> {
    if !config.allowed_origins.is_empty() && !origin.is_some_and(|o| config.origin_allowed(o)) {
        return Err(Refusal::Origin);
    }
    let proto_token = protocols.iter().find_map(|p| p.strip_prefix(TOKEN_PREFIX));
    let grant = check_token(config, proto_token.or(query_token), now_s)?;
    let selected = if protocols.iter().any(|p| p == SUBPROTOCOL) {
        Some(SUBPROTOCOL.to_owned())
    } else {
        protocols
            .iter()
            .find(|p| p.starts_with(TOKEN_PREFIX))
            .cloned()
    };
    Ok(Admitted {
        protocol: selected,
        grant,
    })
}

/// The token half of [`check`]: with tokens configured, `token` must be one of them; with JWTs,
/// it must verify at `now_s` (its grant is returned).
///
/// # Errors
/// [`Refusal::MissingToken`], [`Refusal::BadToken`] or [`Refusal::ExpiredToken`].
pub fn check_token(
    config: &Config,
    token: Option<&str>,
    now_s: u64,
) -> Result<Option<Grant>, Refusal> {
    let token = token.filter(|t| !t.is_empty());
    if let Some(tokens) = &config.tokens {
        let Some(token) = token else {
            return Err(Refusal::MissingToken);
        };
        if !tokens.contains(token) {
            return Err(Refusal::BadToken);
        }
    } else if let Some(key) = &config.jwt {
        let Some(token) = token else {
            return Err(Refusal::MissingToken);
        };
        return entitle::verify(key, token, now_s)
            .map(Some)
            .map_err(|e| match e {
                TokenError::Expired => Refusal::ExpiredToken,
                _ => Refusal::BadToken,
            });
    }
    Ok(None)
}

/// The Origin half of [`check`] for plain requests: an `Origin` that is sent must be on the
/// allowlist (when there is one). Unlike an upgrade, a request without `Origin` passes: a
/// browser sends none when it navigates to a page.
///
/// # Errors
/// [`Refusal::Origin`].
pub fn check_origin_if_sent(config: &Config, origin: Option<&str>) -> Result<(), Refusal> {
    match origin {
        Some(o) if !config.allowed_origins.is_empty() && !config.origin_allowed(o) => {
            Err(Refusal::Origin)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tokens;

    fn with_tokens() -> Config {
        Config {
            tokens: Some(Tokens::parse("s3cret\n").unwrap()),
            ..Config::default()
        }
    }

    fn check(
        config: &Config,
        origin: Option<&str>,
        query_token: Option<&str>,
        protocols: &[String],
    ) -> Result<Option<String>, Refusal> {
        super::check(config, origin, query_token, protocols, 1_000).map(|a| a.protocol)
    }

    #[test]
    fn jwts_are_verified_and_carry_a_grant() {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let c = Config {
            jwt: Some(crate::config::JwtKey::hs256(b"0123456789abcdef")),
            ..Config::default()
        };
        let mint = |claims: serde_json::Value, key: &[u8]| {
            encode(&Header::default(), &claims, &EncodingKey::from_secret(key)).unwrap()
        };
        let good = mint(
            serde_json::json!({"exp": 2000, "symbols": ["A*"]}),
            b"0123456789abcdef",
        );
        let a = super::check(&c, None, Some(&good), &[], 1_000).unwrap();
        assert!(a.grant.as_ref().unwrap().allows("AB") && !a.grant.unwrap().allows("B"));
        assert_eq!(
            super::check(&c, None, None, &[], 1_000),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            super::check(&c, None, Some(&good), &[], 2_000),
            Err(Refusal::ExpiredToken)
        );
        assert_eq!(Refusal::ExpiredToken.status(), 403);
        let forged = mint(serde_json::json!({"exp": 2000}), b"fedcba9876543210");
        assert_eq!(
            super::check(&c, None, Some(&forged), &[], 1_000),
            Err(Refusal::BadToken)
        );
        let by_proto = vec![format!("token.{good}")];
        assert!(super::check(&c, None, None, &by_proto, 1_000).is_ok());
    }

    #[test]
    fn open_policy_allows_everyone() {
        let c = Config::default();
        assert_eq!(check(&c, None, None, &[]), Ok(None));
        assert_eq!(check(&c, Some("https://evil.example"), None, &[]), Ok(None));
    }

    #[test]
    fn origins_are_checked() {
        let c = Config {
            allowed_origins: vec!["https://desk.example.com".into()],
            ..Config::default()
        };
        assert_eq!(
            check(&c, Some("https://DESK.example.com"), None, &[]),
            Ok(None)
        );
        assert_eq!(
            check(&c, Some("https://evil.example"), None, &[]),
            Err(Refusal::Origin)
        );
        assert_eq!(check(&c, None, None, &[]), Err(Refusal::Origin));
        assert_eq!(Refusal::Origin.status(), 403);
    }

    #[test]
    fn tokens_by_query_or_subprotocol() {
        let c = with_tokens();
        assert_eq!(check(&c, None, None, &[]), Err(Refusal::MissingToken));
        assert_eq!(Refusal::MissingToken.status(), 401);
        assert_eq!(check(&c, None, Some(""), &[]), Err(Refusal::MissingToken));
        assert_eq!(check(&c, None, Some("nope"), &[]), Err(Refusal::BadToken));
        assert_eq!(check(&c, None, Some("s3cret"), &[]), Ok(None));
        let offered = vec![SUBPROTOCOL.to_owned(), "token.s3cret".to_owned()];
        assert_eq!(
            check(&c, None, None, &offered),
            Ok(Some(SUBPROTOCOL.to_owned()))
        );
        let only_token = vec!["token.s3cret".to_owned()];
        assert_eq!(
            check(&c, None, None, &only_token),
            Ok(Some("token.s3cret".to_owned()))
        );
        let wrong = vec!["token.x".to_owned()];
        assert_eq!(
            check(&c, None, Some("s3cret"), &wrong),
            Err(Refusal::BadToken)
        );
    }
}
