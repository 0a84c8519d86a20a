//! The logout: cookies cleared, the browser sent to the IdP's end-session endpoint.

use super::*;

impl Gate<'_> {
    /// Clears the filter's cookies and sends the browser to the IdP's end-session endpoint
    /// (RP-initiated logout, with `id_token_hint`), or straight to the post-logout page.
    pub(super) fn logout(&self, req: &impl HeaderSource, cookie: &str, now_s: u64) -> Decision {
        let _ = now_s;
        let clear = self.clear_all(cookie);
        let post_logout = if self.cfg.post_logout_redirect_uri.starts_with('/') {
            match self.origin(req) {
                Some(o) => format!("{o}{}", self.cfg.post_logout_redirect_uri),
                None => self.cfg.post_logout_redirect_uri.clone(),
            }
        } else {
            self.cfg.post_logout_redirect_uri.clone()
        };
        let hint = self.id_token_hint(cookie);
        let location = match self
            .discovery
            .and_then(|d| d.end_session_endpoint.as_deref())
        {
            Some(end) => match HttpUrl::parse(end) {
                Some(u) => {
                    let mut q = Vec::with_capacity(3);
                    if let Some(h) = &hint {
                        q.push(("id_token_hint", h.as_str()));
                    }
                    q.push(("client_id", &self.cfg.client_id));
                    q.push(("post_logout_redirect_uri", &post_logout));
                    u.with_query(&q)
                }
                None => post_logout,
            },
            None => post_logout,
        };
        Decision::Reply(redirect(&location, clear), Outcome::Logout)
    }

    pub(super) fn id_token_hint(&self, cookie: &str) -> Option<String> {
        if self.cfg.forward_token == ForwardToken::IdToken {
            let sealed = read_session_value(cookie, self.names)?;
            let s: Session = open_json(&self.cfg.keys, &self.names.session, &sealed).ok()?;
            return s.token;
        }
        let sealed = cookie_pairs(cookie)
            .find(|(k, _)| *k == self.names.id_token)?
            .1;
        open_json::<String>(&self.cfg.keys, &self.names.id_token, sealed).ok()
    }
}
