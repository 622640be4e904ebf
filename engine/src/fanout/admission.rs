//! Who may open a WebSocket: `Origin` allowlist and access tokens, decided before the upgrade.
//!
//! Browsers cannot set headers on a WebSocket request, so a token travels either as the `token`
//! query parameter or as a subprotocol `token.<TOKEN>` in `Sec-WebSocket-Protocol` (kept out of
//! URLs and access logs). When a client offers subprotocols, the server must select one of them:
//! it selects `tickcast.v1` when offered, else the token subprotocol itself.

use crate::config::Config;

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
    /// The token is not one of the configured tokens: 403.
    #[error("access token not valid")]
    BadToken,
}

impl Refusal {
    /// HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            Self::MissingToken => 401,
            Self::Origin | Self::BadToken => 403,
        }
    }

    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::MissingToken => "missing_token",
            Self::BadToken => "bad_token",
        }
    }
}

/// Decides an upgrade request against the configured origins (`Config::origin_allowed`) and
/// tokens (`Config::tokens`). Returns the subprotocol to select (if any).
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
) -> Result<Option<String>, Refusal> {
    if !config.allowed_origins.is_empty() && !origin.is_some_and(|o| config.origin_allowed(o)) {
        return Err(Refusal::Origin);
    }
    let proto_token = protocols.iter().find_map(|p| p.strip_prefix(TOKEN_PREFIX));
    check_token(config, proto_token.or(query_token))?;
    let selected = if protocols.iter().any(|p| p == SUBPROTOCOL) {
        Some(SUBPROTOCOL.to_owned())
    } else {
        protocols
            .iter()
            .find(|p| p.starts_with(TOKEN_PREFIX))
            .cloned()
    };
    Ok(selected)
}

/// The token half of [`check`]: with tokens configured, `token` must be one of them.
///
/// # Errors
/// [`Refusal::MissingToken`] or [`Refusal::BadToken`].
pub fn check_token(config: &Config, token: Option<&str>) -> Result<(), Refusal> {
    if let Some(tokens) = &config.tokens {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Refusal::MissingToken);
        };
        if !tokens.contains(token) {
            return Err(Refusal::BadToken);
        }
    }
    Ok(())
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
