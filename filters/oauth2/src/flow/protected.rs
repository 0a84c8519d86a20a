//! Protected requests: the session cookie opened (or a Bearer token checked), the token
//! forwarded, a refresh started or adopted when it is due, or the unauthenticated answer.

use super::*;

impl Gate<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn protected(
        &self,
        req: &impl HeaderSource,
        full_path: &str,
        cookie: &str,
        now_ms: u64,
        cache: &mut SessionCache,
        rng: &mut impl Entropy,
        slots: &mut impl RefreshSlots,
    ) -> Decision {
        let now_s = now_ms / 1000;
        let mut clear = Vec::new();
        let mut outcome_if_anonymous = Outcome::Unauthenticated401;
        if let Some(sealed) = read_session_value(cookie, self.names) {
            let key = cache.key(&sealed);
            if cache.get_mut(key).is_none() {
                match open_json::<Session>(&self.cfg.keys, &self.names.session, &sealed) {
                    Ok(s) => {
                        let entry = self.entry(s, now_s);
                        cache.insert(key, entry);
                    }
                    Err(SessionError::Open(_) | SessionError::Payload) => {
                        outcome_if_anonymous = Outcome::InvalidSession;
                    }
                }
            }
            if let Some(entry) = cache.get_mut(key) {
                if now_s >= entry.session.expires {
                    outcome_if_anonymous = Outcome::ExpiredSession;
                    cache.remove(key);
                } else {
                    self.refresh_minted(entry, now_s);
                    let due =
                        now_s.saturating_add(self.cfg.refresh_before_s) >= entry.session.token_exp;
                    let valid = token_usable(entry.session.token_exp, now_s);
                    if !due {
                        return Decision::Forward(
                            self.forward(entry, cookie),
                            Outcome::Authenticated,
                        );
                    }
                    let can_refresh =
                        self.cfg.refresh_enabled && entry.session.refresh_token.is_some();
                    if can_refresh
                        && slots.superseded(&entry.session.id, entry.session.generation, now_ms)
                    {
                        // This cookie's refresh token is spent: a newer generation of the
                        // session exists (another tab, another replica) or the IdP refused it.
                        // It is never sent again: adopt the newer session while it is still
                        // published, else go on with the valid token, and once that has
                        // expired log in again — without a call to the IdP.
                        let fallback = valid.then(|| self.forward(entry, cookie));
                        match slots.claim(&entry.session.id, now_ms) {
                            Claim::Refreshed(new_sealed) => {
                                if let Some(d) =
                                    self.adopt_refreshed(&new_sealed, cookie, now_s, cache)
                                {
                                    return d;
                                }
                            }
                            Claim::Acquired => slots.release(&entry.session.id),
                            Claim::Busy => {}
                        }
                        if let Some(f) = fallback {
                            return Decision::Forward(f, Outcome::Authenticated);
                        }
                    } else if can_refresh {
                        let Some(discovery) = self.discovery else {
                            return if valid {
                                Decision::Forward(
                                    self.forward(entry, cookie),
                                    Outcome::Authenticated,
                                )
                            } else {
                                Decision::Wait
                            };
                        };
                        match slots.claim(&entry.session.id, now_ms) {
                            Claim::Acquired => {
                                let fallback = valid.then(|| self.forward(entry, cookie));
                                let call = self.refresh_call(
                                    discovery,
                                    entry.session.refresh_token.as_deref().unwrap_or(""),
                                );
                                return Decision::Refresh {
                                    session: entry.session.clone(),
                                    call,
                                    fallback,
                                };
                            }
                            Claim::Busy if valid => {
                                return Decision::Forward(
                                    self.forward(entry, cookie),
                                    Outcome::Authenticated,
                                );
                            }
                            Claim::Busy => return Decision::Wait,
                            Claim::Refreshed(new_sealed) => {
                                if let Some(d) =
                                    self.adopt_refreshed(&new_sealed, cookie, now_s, cache)
                                {
                                    return d;
                                }
                            }
                        }
                    } else if valid {
                        return Decision::Forward(
                            self.forward(entry, cookie),
                            Outcome::Authenticated,
                        );
                    }
                    outcome_if_anonymous = Outcome::ExpiredSession;
                    cache.remove(key);
                }
            }
            clear = self
                .clear_all(cookie)
                .into_iter()
                .filter(|c| !c.starts_with(&self.names.login_prefix))
                .collect();
        }
        if self.cfg.allow_bearer
            && let Some(d) = self.bearer(req, cookie, now_s)
        {
            return d;
        }
        self.unauthenticated(req, full_path, clear, outcome_if_anonymous, now_s, rng)
    }

    /// No usable session: browsers go to the IdP, API calls get 401 (with `clear` Set-Cookies).
    pub fn unauthenticated(
        &self,
        req: &impl HeaderSource,
        full_path: &str,
        clear: Vec<String>,
        outcome_if_anonymous: Outcome,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Decision {
        if is_navigation(req) {
            let return_to = safe_return_url(full_path).unwrap_or("/");
            return self.begin_login(req, return_to, clear, now_s, rng);
        }
        let login_url = format!(
            "{}?rd={}",
            self.cfg.start_path,
            urls::encode(safe_return_url(full_path).unwrap_or("/"))
        );
        let mut r = json_reply(
            401,
            &serde_json::json!({"error": "unauthenticated", "login_url": login_url}),
            clear,
        );
        r.headers
            .push(("www-authenticate".to_owned(), "Bearer".to_owned()));
        Decision::Reply(r, outcome_if_anonymous)
    }

    /// A session whose refresh another worker completed: use it, and hand the browser its cookie.
    pub(super) fn adopt_refreshed(
        &self,
        sealed: &str,
        cookie: &str,
        now_s: u64,
        cache: &mut SessionCache,
    ) -> Option<Decision> {
        let key = cache.key(sealed);
        if cache.get_mut(key).is_none() {
            let s = open_json::<Session>(&self.cfg.keys, &self.names.session, sealed).ok()?;
            let entry = self.entry(s, now_s);
            cache.insert(key, entry);
        }
        let entry = cache.get_mut(key)?;
        if !token_usable(entry.session.token_exp, now_s) || now_s >= entry.session.expires {
            return None;
        }
        let mut f = self.forward(entry, cookie);
        f.response_cookies = session_cookies(
            self.names,
            sealed,
            &self.cfg.cookie,
            entry.session.expires.saturating_sub(now_s),
            Some(cookie),
        )?;
        Some(Decision::Forward(f, Outcome::RefreshAdopted))
    }

    /// The cache entry for an opened session: rendered claim headers and the bearer value.
    pub fn entry(&self, session: Session, now_s: u64) -> Entry {
        let claim_values = self
            .cfg
            .claim_headers
            .iter()
            .filter_map(|(h, claim)| {
                let v = if claim == "sub" {
                    Some(session.sub.clone())
                } else {
                    session.claims.get(claim).and_then(render_claim)
                };
                v.map(|v| (h.clone(), v))
            })
            .collect();
        let bearer = match self.cfg.forward_token {
            ForwardToken::Minted => None,
            _ => session
                .token
                .as_ref()
                .filter(|t| header_value_ok(t))
                .map(|t| (format!("Bearer {t}"), session.token_exp)),
        };
        let mut entry = Entry {
            session,
            bearer,
            claim_values,
        };
        self.refresh_minted(&mut entry, now_s);
        entry
    }

    /// Mints (again) when the cached minted token is missing or close to expiry.
    pub fn refresh_minted(&self, entry: &mut Entry, now_s: u64) {
        let Some(m) = &self.cfg.minter else { return };
        if self.cfg.forward_token != ForwardToken::Minted {
            return;
        }
        let fresh = entry
            .bearer
            .as_ref()
            .is_some_and(|(_, exp)| now_s.saturating_add(m.ttl_s / 5) < *exp);
        if !fresh {
            entry.bearer = m
                .mint(&entry.session.sub, &entry.session.claims, now_s)
                .map(|t| (format!("Bearer {t}"), now_s.saturating_add(m.ttl_s)));
        }
    }

    /// What to do to an upstream request authenticated by `entry`.
    pub fn forward(&self, entry: &Entry, cookie: &str) -> Forward {
        let mut f = Forward {
            cookie: strip_owned(self.names, cookie),
            ..Forward::default()
        };
        match &entry.bearer {
            Some((b, _)) => f.set.push((self.cfg.forward_header.clone(), b.clone())),
            None => f.remove.push(self.cfg.forward_header.clone()),
        }
        for (h, _) in &self.cfg.claim_headers {
            match entry.claim_values.iter().find(|(n, _)| n == h) {
                Some((n, v)) => f.set.push((n.clone(), v.clone())),
                None => f.remove.push(h.clone()),
            }
        }
        f
    }

    pub(super) fn bearer(
        &self,
        req: &impl HeaderSource,
        cookie: &str,
        now_s: u64,
    ) -> Option<Decision> {
        let auth = req.header(&self.cfg.forward_header)?;
        let token = meshwright_shared::jwt::bearer_token(auth)?;
        let Some(jwks) = self.jwks else {
            return Some(Decision::Wait);
        };
        let expect = Expect {
            issuer: &self.cfg.issuer,
            audience: &self.cfg.client_id,
            nonce: None,
            now_s,
            leeway_s: LEEWAY_S,
        };
        match jwks.verify(token, &expect) {
            Ok(v) => {
                let mut f = self.strip_spoofable(cookie);
                f.remove.clear();
                for (h, claim) in &self.cfg.claim_headers {
                    let value = if claim == "sub" {
                        Some(v.sub.clone())
                    } else {
                        v.claims.get(claim).and_then(render_claim)
                    };
                    match value {
                        Some(val) => f.set.push((h.clone(), val)),
                        None => f.remove.push(h.clone()),
                    }
                }
                Some(Decision::Forward(f, Outcome::BearerAccepted))
            }
            Err(_) => {
                let mut r = json_reply(
                    401,
                    &serde_json::json!({"error": "invalid_token"}),
                    Vec::new(),
                );
                r.headers.push((
                    "www-authenticate".to_owned(),
                    "Bearer error=\"invalid_token\"".to_owned(),
                ));
                Some(Decision::Reply(r, Outcome::BearerRejected))
            }
        }
    }
}
