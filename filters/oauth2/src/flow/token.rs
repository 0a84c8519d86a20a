//! The token endpoint's answers: tokens, or an OAuth error read for the log and the counters.

use super::*;

/// The error codes of RFC 6749 §5.2 a token endpoint answers with; anything else is `other`.
pub const TOKEN_ERRORS: [&str; 7] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "other",
];

/// Why a token endpoint refused a grant, as far as its answer says (RFC 6749 §5.2): for the
/// log (status, `error`, `error_description`; never anything the filter sent) and the
/// per-error counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub status: u16,
    /// One of [`TOKEN_ERRORS`].
    pub error: &'static str,
    /// The provider's `error` as sent (printable ASCII, at most 64 characters).
    pub code: Option<String>,
    /// `error_description` (printable ASCII, at most 200 characters).
    pub description: Option<String>,
}

fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

/// Reads a token endpoint's error answer.
pub fn token_error(status: u16, body: &[u8]) -> TokenError {
    let v: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let text = |k: &str, max: usize| {
        v.as_ref()
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(|s| printable(s, max))
    };
    let code = text("error", 64);
    let error = code
        .as_deref()
        .and_then(|c| TOKEN_ERRORS.iter().find(|e| **e == c))
        .copied()
        .unwrap_or("other");
    TokenError {
        status,
        error,
        code,
        description: text("error_description", 200),
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {}", self.status)?;
        if let Some(c) = &self.code {
            write!(f, ", error {c}")?;
        }
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// Parses a token endpoint response (RFC 6749 §5.1).
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenSet, Failure> {
    if status != 200 {
        return Err(Failure::TokenEndpoint);
    }
    if body.len() > 64 * 1024 {
        return Err(Failure::TokenResponse);
    }
    let v: Map<String, Value> = serde_json::from_slice(body).map_err(|_| Failure::TokenResponse)?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let access_token = text("access_token")
        .filter(|t| !t.is_empty())
        .ok_or(Failure::TokenResponse)?;
    if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err(Failure::TokenResponse);
    }
    let tokens = TokenSet {
        access_token,
        id_token: text("id_token"),
        refresh_token: text("refresh_token"),
        expires_in: v.get("expires_in").and_then(Value::as_u64),
    };
    let clean = |t: &Option<String>| t.as_deref().is_none_or(header_value_ok);
    if !header_value_ok(&tokens.access_token)
        || !clean(&tokens.id_token)
        || !clean(&tokens.refresh_token)
    {
        return Err(Failure::TokenResponse);
    }
    Ok(tokens)
}
