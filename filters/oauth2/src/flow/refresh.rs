//! The refresh grant and the session it makes.

use super::*;

impl Gate<'_> {
    pub(super) fn refresh_call(&self, discovery: &Discovery, refresh_token: &str) -> TokenCall {
        self.token_call(
            discovery,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
    }

    /// The refreshed session, from the token endpoint's answer to a refresh grant, without a
    /// UserInfo call (claims the new ID token lacks are the session's).
    pub fn finish_refresh(
        &self,
        old: &Session,
        tokens: &TokenSet,
        now_s: u64,
    ) -> Result<Session, Failure> {
        match self.finish_refresh_with(old, tokens, Userinfo::Skip, now_s)? {
            RefreshStep::Done(session) => Ok(session),
            RefreshStep::Userinfo(_) => Err(Failure::TokenResponse),
        }
    }

    /// [`Gate::finish_refresh`], with the UserInfo step as at login: when the refresh response's
    /// ID token (or its absence) leaves out a claim the config uses and the IdP has a UserInfo
    /// endpoint, the first call (`Userinfo::NotYet`) asks for that call with the new access
    /// token; the second brings its answer. Its claims are current: they replace the session's,
    /// which stay only for claims neither the new ID token nor UserInfo has (OIDC Core §12.2).
    /// An answer about another subject ends the refresh; an unusable one keeps the claims.
    pub fn finish_refresh_with(
        &self,
        old: &Session,
        tokens: &TokenSet,
        userinfo: Userinfo<'_>,
        now_s: u64,
    ) -> Result<RefreshStep, Failure> {
        let mut fresh = Map::new();
        let mut exp = now_s.saturating_add(tokens.expires_in.unwrap_or(0));
        if let Some(id_token) = &tokens.id_token {
            let jwks = self.jwks.ok_or(Failure::JwksUnavailable)?;
            let expect = Expect {
                issuer: &self.cfg.issuer,
                audience: &self.cfg.client_id,
                nonce: None,
                now_s,
                leeway_s: LEEWAY_S,
            };
            let v = jwks.verify(id_token, &expect).map_err(verify_failure)?;
            if v.sub != old.sub {
                return Err(Failure::IdToken);
            }
            fresh = self.kept(&v.claims);
            exp = v.exp_s;
        } else if self.cfg.forward_token == ForwardToken::IdToken {
            return Err(Failure::TokenResponse);
        }
        match userinfo {
            Userinfo::Skip => {}
            Userinfo::NotYet => {
                if let Some(call) = self.userinfo_call(&fresh, tokens) {
                    return Ok(RefreshStep::Userinfo(call));
                }
            }
            Userinfo::Answer { status, body } => {
                self.add_userinfo(&mut fresh, &old.sub, status, body)?;
            }
        }
        let mut claims = fresh;
        for (k, v) in &old.claims {
            claims.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok(RefreshStep::Done(Session {
            id: old.id.clone(),
            generation: old.generation.saturating_add(1),
            sub: old.sub.clone(),
            claims,
            token: self.forwarded(tokens),
            token_exp: self.token_exp(tokens, exp, now_s),
            refresh_token: tokens
                .refresh_token
                .clone()
                .or_else(|| old.refresh_token.clone()),
            expires: old.expires,
        }))
    }
}

/// What a refresh that came back leads to.
#[derive(Debug)]
pub struct AfterRefresh {
    /// The request goes on (with the new session, or the old still-valid token) or is answered.
    pub decision: Decision,
    /// The refreshed session to keep in the worker's cache: its sealed value and entry.
    pub cache: Option<(String, Entry)>,
    /// Why the refresh failed (logged and counted), if it did.
    pub failure: Option<Failure>,
}

impl Gate<'_> {
    /// Completes a refresh of `old` whose outcome is `refreshed` (the token endpoint answered
    /// `status`). Success: the new session is sealed into the response's cookies, published in
    /// `slots` for the requests that still bring the old cookie, and recorded as the session's
    /// newest generation. Failure: the slot is released; a refusal (400/401: the refresh token
    /// was revoked, or rotated by another replica) makes the old generation spent, so no request
    /// sends that token again; the request goes on with the still-valid token (`fallback`) —
    /// the browser may bring the newer cookie meanwhile — or, once it has expired, the session
    /// ends: its cookies cleared, a browser sent to log in, an API call answered 401.
    #[allow(clippy::too_many_arguments)]
    pub fn after_refresh(
        &self,
        old: &Session,
        refreshed: Result<Session, Failure>,
        status: Option<u16>,
        fallback: Option<Forward>,
        req: &impl HeaderSource,
        now_ms: u64,
        rng: &mut impl Entropy,
        slots: &mut impl RefreshSlots,
    ) -> AfterRefresh {
        let now_s = now_ms / 1000;
        let cookie = req.header("cookie").unwrap_or("");
        let sealed = refreshed.and_then(|s| {
            let sealed = self.seal_session(&s, rng).ok_or(Failure::SessionTooLarge)?;
            let max_age = s.expires.saturating_sub(now_s);
            let cookies =
                session_cookies(self.names, &sealed, &self.cfg.cookie, max_age, Some(cookie))
                    .ok_or(Failure::SessionTooLarge)?;
            Ok((s, sealed, cookies))
        });
        let failure = match sealed {
            Ok((session, sealed, cookies)) => {
                slots.complete(&session.id, &sealed, now_ms);
                slots.supersede(&session.id, session.generation, session.expires, now_ms);
                let entry = self.entry(session, now_s);
                let mut f = self.forward(&entry, cookie);
                f.response_cookies = cookies;
                return AfterRefresh {
                    decision: Decision::Forward(f, Outcome::Authenticated),
                    cache: Some((sealed, entry)),
                    failure: None,
                };
            }
            Err(f) => f,
        };
        slots.release(&old.id);
        if matches!(status, Some(400 | 401)) {
            let spent = old.generation.saturating_add(1);
            slots.supersede(&old.id, spent, old.expires, now_ms);
        }
        let decision = match fallback {
            Some(f) => Decision::Forward(f, Outcome::Authenticated),
            None => {
                let clear = self.clear_all(cookie);
                let path = req.header(":path").unwrap_or("/");
                self.unauthenticated(req, path, clear, Outcome::ExpiredSession, now_s, rng)
            }
        };
        AfterRefresh {
            decision,
            cache: None,
            failure: Some(failure),
        }
    }
}
