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
