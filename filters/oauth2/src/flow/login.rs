//! The login: the redirect to the IdP, the callback and its code exchange, UserInfo, and the
//! session it makes.

use super::*;

impl Gate<'_> {
    /// Redirects to the IdP's authorization endpoint with state, nonce and PKCE (S256), and sets
    /// the login cookie that the callback must present.
    pub(super) fn begin_login(
        &self,
        req: &impl HeaderSource,
        return_to: &str,
        mut cookies: Vec<String>,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Decision {
        // Without the IdP's keys the login would fail at the callback, after the user typed their
        // password: wait for them here instead.
        let (Some(discovery), Some(_)) = (self.discovery, self.jwks) else {
            return Decision::Wait;
        };
        let Some(redirect_uri) = self.redirect_uri(req) else {
            return Decision::Reply(
                reply(400, Vec::new(), "bad Host".into()),
                Outcome::BadRequest,
            );
        };
        let txn = LoginTxn {
            state: rng.token(),
            nonce: rng.token(),
            verifier: rng.token(),
            return_to: return_to.to_owned(),
            created_s: now_s,
        };
        let challenge = URL_SAFE_NO_PAD.encode(hmac_sha256::Hash::hash(txn.verifier.as_bytes()));
        let Some(endpoint) = HttpUrl::parse(&discovery.authorization_endpoint) else {
            return Decision::Reply(
                reply(502, Vec::new(), "bad authorization endpoint".into()),
                Outcome::BadRequest,
            );
        };
        let url = endpoint.with_query(&[
            ("response_type", "code"),
            ("client_id", &self.cfg.client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", &self.cfg.scopes),
            ("state", &txn.state),
            ("nonce", &txn.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let name = login_cookie_name(self.names, &txn.state);
        let Some(sealed) = seal_json(&self.cfg.keys, &name, &txn, rng.nonce24()) else {
            return Decision::Reply(reply(500, Vec::new(), String::new()), Outcome::BadRequest);
        };
        cookies.push(login_cookie(
            self.names,
            &sealed,
            &txn.state,
            &self.cfg.cookie,
            &self.cfg.callback_path,
        ));
        Decision::Reply(redirect(&url, cookies), Outcome::LoginStarted)
    }

    pub(super) fn callback_failure(
        &self,
        status: u16,
        failure: Failure,
        cookies: Vec<String>,
    ) -> Decision {
        Decision::Reply(
            json_reply(
                status,
                &serde_json::json!({"error": "login_failed", "reason": failure.label()}),
                cookies,
            ),
            Outcome::CallbackRejected,
        )
    }

    pub(super) fn callback(
        &self,
        req: &impl HeaderSource,
        full_path: &str,
        cookie: &str,
        now_s: u64,
    ) -> Decision {
        if let Some(_err) = query_param(full_path, "error") {
            return self.callback_failure(401, Failure::IdpError, Vec::new());
        }
        let (Some(code), Some(state)) = (
            query_param(full_path, "code"),
            query_param(full_path, "state"),
        ) else {
            return self.callback_failure(400, Failure::UnknownState, Vec::new());
        };
        let name = login_cookie_name(self.names, &state);
        let Some(sealed) = cookie_pairs(cookie)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
        else {
            return self.callback_failure(400, Failure::UnknownState, Vec::new());
        };
        let clear = vec![expire(&name, &self.cfg.cookie, &self.cfg.callback_path)];
        let Ok(txn) = open_json::<LoginTxn>(&self.cfg.keys, &name, sealed) else {
            return self.callback_failure(400, Failure::UnknownState, clear);
        };
        let state_ok: bool = txn.state.as_bytes().ct_eq(state.as_bytes()).into();
        if !state_ok || now_s >= txn.created_s.saturating_add(session::LOGIN_TTL_S) {
            return self.callback_failure(400, Failure::StateMismatch, clear);
        }
        let Some(discovery) = self.discovery else {
            return Decision::Wait;
        };
        // RFC 9207 (mix-up defence): when the IdP names itself, it must be ours; when it says
        // it always does, a callback without `iss` is refused too.
        match query_param(full_path, "iss") {
            Some(iss) if iss != self.cfg.issuer => {
                return self.callback_failure(400, Failure::IssuerMismatch, clear);
            }
            None if discovery.iss_in_callback => {
                return self.callback_failure(400, Failure::IssuerMismatch, clear);
            }
            _ => {}
        }
        let Some(redirect_uri) = self.redirect_uri(req) else {
            return self.callback_failure(400, Failure::UnknownState, clear);
        };
        let call = self.token_call(
            discovery,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &txn.verifier),
            ],
        );
        Decision::Exchange {
            txn,
            call,
            login_cookie: name,
        }
    }

    pub(super) fn token_call(&self, discovery: &Discovery, grant: &[(&str, &str)]) -> TokenCall {
        let mut form = grant.to_vec();
        let mut headers = vec![
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept".to_owned(), "application/json".to_owned()),
        ];
        match self.cfg.auth_method {
            AuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
                let creds = format!(
                    "{}:{}",
                    urls::encode(&self.cfg.client_id),
                    urls::encode(&self.cfg.client_secret)
                );
                headers.push((
                    "authorization".to_owned(),
                    format!("Basic {}", STANDARD.encode(creds)),
                ));
            }
            AuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.cfg.client_id));
                form.push(("client_secret", &self.cfg.client_secret));
            }
        }
        TokenCall {
            authority: discovery.token_endpoint.authority.clone(),
            path: discovery.token_endpoint.path.clone(),
            headers,
            body: urls::form(&form),
        }
    }

    /// Builds the session from the token endpoint's answer to the code exchange, and the
    /// response that completes the login (redirect to the return URL, cookies set).
    pub fn finish_login(
        &self,
        txn: &LoginTxn,
        login_cookie: &str,
        tokens: &TokenSet,
        cookie_header: &str,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Result<Reply, Failure> {
        match self.finish_login_with(
            txn,
            login_cookie,
            tokens,
            Userinfo::Skip,
            cookie_header,
            now_s,
            rng,
        )? {
            LoginStep::Done { reply, .. } => Ok(reply),
            LoginStep::Userinfo(_) => Err(Failure::TokenResponse),
        }
    }

    /// [`Gate::finish_login`], with the UserInfo step: when a claim the config uses (claim
    /// headers, minted claims) is not in the ID token and the IdP has a UserInfo endpoint, the
    /// first call (`Userinfo::NotYet`) asks for that call; the second brings its answer, whose
    /// `sub` must be the ID token's and whose claims fill the missing ones.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_login_with(
        &self,
        txn: &LoginTxn,
        login_cookie: &str,
        tokens: &TokenSet,
        userinfo: Userinfo<'_>,
        cookie_header: &str,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Result<LoginStep, Failure> {
        let jwks = self.jwks.ok_or(Failure::JwksUnavailable)?;
        let id_token = tokens.id_token.as_deref().ok_or(Failure::TokenResponse)?;
        let expect = Expect {
            issuer: &self.cfg.issuer,
            audience: &self.cfg.client_id,
            nonce: Some(&txn.nonce),
            now_s,
            leeway_s: LEEWAY_S,
        };
        let verified = jwks.verify(id_token, &expect).map_err(verify_failure)?;
        let mut claims = self.kept(&verified.claims);
        match userinfo {
            Userinfo::Skip => {}
            Userinfo::NotYet => {
                if let Some(call) = self.userinfo_call(&claims, tokens) {
                    return Ok(LoginStep::Userinfo(call));
                }
            }
            Userinfo::Answer { status, body } => {
                self.add_userinfo(&mut claims, &verified.sub, status, body)?;
            }
        }
        let missing_claims = self.missing(&claims);
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        let session = Session {
            id: URL_SAFE_NO_PAD.encode(id),
            generation: 0,
            sub: verified.sub,
            claims,
            token: self.forwarded(tokens),
            token_exp: self.token_exp(tokens, verified.exp_s, now_s),
            refresh_token: tokens.refresh_token.clone(),
            expires: now_s.saturating_add(self.cfg.max_lifetime_s),
        };
        let mut cookies = self
            .store(&session, Some(cookie_header), now_s, rng)
            .ok_or(Failure::SessionTooLarge)?;
        cookies.push(expire(
            login_cookie,
            &self.cfg.cookie,
            &self.cfg.callback_path,
        ));
        if self.cfg.forward_token != ForwardToken::IdToken
            && let Some(sealed) = seal_json(
                &self.cfg.keys,
                &self.names.id_token,
                &id_token,
                rng.nonce24(),
            )
        {
            cookies.push(id_token_cookie(
                self.names,
                &sealed,
                &self.cfg.cookie,
                &self.cfg.logout_path,
                self.cfg.max_lifetime_s,
            ));
        }
        Ok(LoginStep::Done {
            reply: redirect(&txn.return_to, cookies),
            missing_claims,
        })
    }

    /// The UserInfo call (GET, with the access token) when `claims` lacks a claim the config uses
    /// and the IdP has a UserInfo endpoint.
    pub(super) fn userinfo_call(
        &self,
        claims: &Map<String, Value>,
        tokens: &TokenSet,
    ) -> Option<TokenCall> {
        let ep = self.discovery?.userinfo_endpoint.as_ref()?;
        if self.missing(claims).is_empty() {
            return None;
        }
        Some(TokenCall {
            authority: ep.authority.clone(),
            path: ep.path.clone(),
            headers: vec![
                (
                    "authorization".into(),
                    format!("Bearer {}", tokens.access_token),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: String::new(),
        })
    }

    /// Adds a UserInfo answer's claims to those `claims` lacks. An answer about another subject
    /// than `sub` is refused (OIDC Core §5.3.4); one that is not a JSON object adds nothing.
    pub(super) fn add_userinfo(
        &self,
        claims: &mut Map<String, Value>,
        sub: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), Failure> {
        let Some(info) = parse_userinfo(status, body) else {
            return Ok(());
        };
        if info.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(Failure::Userinfo);
        }
        for (k, v) in self.kept(&info) {
            claims.entry(k).or_insert(v);
        }
        Ok(())
    }

    /// The claims the config uses that `claims` lacks (`sub` is the session's own).
    pub(super) fn missing(&self, claims: &Map<String, Value>) -> Vec<String> {
        self.cfg
            .kept_claims
            .iter()
            .filter(|k| k.as_str() != "sub" && !claims.contains_key(k.as_str()))
            .cloned()
            .collect()
    }

    /// Seals a session into Set-Cookie headers.
    pub fn store(
        &self,
        session: &Session,
        cookie_header: Option<&str>,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Option<Vec<String>> {
        let sealed = seal_json(&self.cfg.keys, &self.names.session, session, rng.nonce24())?;
        session_cookies(
            self.names,
            &sealed,
            &self.cfg.cookie,
            session.expires.saturating_sub(now_s),
            cookie_header,
        )
    }

    /// Seals a session (the value other workers adopt after a refresh).
    pub fn seal_session(&self, session: &Session, rng: &mut impl Entropy) -> Option<String> {
        seal_json(&self.cfg.keys, &self.names.session, session, rng.nonce24())
    }

    pub(super) fn kept(&self, claims: &Map<String, Value>) -> Map<String, Value> {
        self.cfg
            .kept_claims
            .iter()
            .filter_map(|k| claims.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    pub(super) fn forwarded(&self, tokens: &TokenSet) -> Option<String> {
        match self.cfg.forward_token {
            ForwardToken::IdToken => tokens.id_token.clone(),
            ForwardToken::AccessToken => Some(tokens.access_token.clone()),
            ForwardToken::Minted => None,
        }
    }

    pub(super) fn token_exp(&self, tokens: &TokenSet, id_exp: u64, now_s: u64) -> u64 {
        match (self.cfg.forward_token, tokens.expires_in) {
            (ForwardToken::AccessToken, Some(e)) => now_s.saturating_add(e),
            _ => id_exp,
        }
    }
}

impl Failure {
    /// The answer to a login that failed this way: 502 when the IdP failed (its token endpoint,
    /// its keys), 401 when the login itself was not good; the reason's label in the body.
    pub fn login_reply(self) -> Reply {
        let status = match self {
            Self::TokenEndpoint | Self::JwksUnavailable => 502,
            _ => 401,
        };
        reply(
            status,
            vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            format!(r#"{{"error":"login_failed","reason":"{}"}}"#, self.label()),
        )
    }
}
