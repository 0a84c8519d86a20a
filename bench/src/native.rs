//! The references: Envoy's own filters doing the same jobs, configured for the same requests.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::process::{Command, Stdio};

/// The A/B work in Lua, as a user without wasm would write it: read the `ab_uid` cookie,
/// GrowthBook's hash v2 (`fnv1a32(decimal(fnv1a32(seed ‖ id))) % 10000`, seed = the salt, as the
/// wasm filter seeds its first variant), pick v1/v2 at 90/10, overwrite `x-ab-product` and the
/// `ab.product` baggage member. Configured identically, the wasm filter assigns the same variant
/// (the benchmark checks both against the filter's own `choose`).
pub const AB_LUA: &str = r#"
local bit = require("bit")
local function fnv(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(h + bit.lshift(h, 1) + bit.lshift(h, 4) + bit.lshift(h, 7)
                    + bit.lshift(h, 8) + bit.lshift(h, 24))
  end
  return h % 4294967296
end
function envoy_on_request(handle)
  local headers = handle:headers()
  local cookie = headers:get("cookie")
  local uid = cookie and cookie:match("ab_uid=([^;]+)")
  if uid == nil then
    headers:remove("x-ab-product")
    return
  end
  local p = fnv(string.format("%d", fnv("product" .. uid))) % 10000
  local variant = "v2"
  if p < 9000 then variant = "v1" end
  headers:replace("x-ab-product", variant)
  local member = "ab.product=" .. variant
  local baggage = headers:get("baggage")
  if baggage then
    baggage = baggage:gsub("%s*ab%.product%s*=[^,]*,?", "")
    if #baggage > 0 then member = baggage .. "," .. member end
  end
  headers:replace("baggage", member)
end
"#;

/// The wasm A/B filter configured to do exactly the Lua's work.
pub fn ab_like_lua_config() -> Value {
    json!({
        "identity": [{"cookie": "ab_uid"}],
        "experiments": [{"name": "product", "header": "x-ab-product", "salt": "product",
            "hash": "growthbook_v2",
            "variants": [{"name": "v1", "weight": 9000}, {"name": "v2", "weight": 1000}]}]
    })
}

pub fn lua_filter() -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": AB_LUA},
        }
    })
}

/// Envoy's fault filter with an abort and a delay that never fire (0 %).
pub fn fault_filter() -> Value {
    json!({
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {"http_status": 503, "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
            "delay": {"fixed_delay": "0.2s", "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
        }
    })
}

/// The issuer of the JWTs the gateway mints (wasmplugins/oauth2.yaml `mint.issuer`).
pub const JWT_ISSUER: &str = "https://shop.example.com/meshwright";

/// `jwt_authn` verifying the gateway's JWT as Istio's RequestAuthentication in k8s/ asks
/// (issuer, JWKS, `forwardOriginalToken: true`), the keys inline instead of fetched, the claims
/// put in dynamic metadata for authorization policies. `cache`: `jwt_cache_config`, so the same
/// token is verified once per worker.
pub fn jwt_authn_filter(jwks: &str, cache: bool) -> Value {
    let mut provider = json!({
        "issuer": JWT_ISSUER,
        "local_jwks": {"inline_string": jwks},
        "forward": true,
        "payload_in_metadata": JWT_ISSUER,
    });
    if cache && let Some(p) = provider.as_object_mut() {
        p.insert("jwt_cache_config".into(), json!({"jwt_cache_size": 100}));
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"meshwright": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "meshwright"}}],
        }
    })
}

/// The HMAC secret of Envoy's oauth2 filter in the benchmark.
pub const ENVOY_OAUTH2_HMAC_SECRET: &str = "meshwright-bench-envoy-oauth2-hmac-secret";
/// `credentials.cookie_domain`: the HMAC covers it instead of the Host header, so the cookies do
/// not depend on the listener's port.
pub const ENVOY_OAUTH2_COOKIE_DOMAIN: &str = "shop.example.com";

/// Envoy's `oauth2` filter, forwarding the access token (`forward_bearer_token`), with its
/// default token encryption. Its secrets are in [`envoy_oauth2_secrets`].
pub fn envoy_oauth2_filter(idp_issuer: &str, idp_cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.http.oauth2",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2",
            "config": {
                "token_endpoint": {"cluster": idp_cluster, "uri": format!("{idp_issuer}/token"), "timeout": "3s"},
                "authorization_endpoint": format!("{idp_issuer}/auth"),
                "redirect_uri": "http://%REQ(:authority)%/oauth2/callback",
                "redirect_path_matcher": {"path": {"exact": "/oauth2/callback"}},
                "signout_path": {"path": {"exact": "/logout"}},
                "forward_bearer_token": true,
                "auth_scopes": ["openid", "email", "profile"],
                "credentials": {
                    "client_id": "shop",
                    "token_secret": {"name": "envoy-oauth2-token"},
                    "hmac_secret": {"name": "envoy-oauth2-hmac"},
                    "cookie_domain": ENVOY_OAUTH2_COOKIE_DOMAIN,
                },
            }
        }
    })
}

/// Static secrets (bootstrap `static_resources.secrets`) the oauth2 filter refers to.
pub fn envoy_oauth2_secrets() -> Vec<Value> {
    vec![
        json!({"name": "envoy-oauth2-token", "generic_secret": {"secret": {"inline_string": "shop-secret"}}}),
        json!({"name": "envoy-oauth2-hmac", "generic_secret": {"secret": {"inline_string": ENVOY_OAUTH2_HMAC_SECRET}}}),
    ]
}

/// The cookies Envoy's oauth2 filter sets after a login, computed as Envoy 1.40 computes them
/// (source/extensions/filters/http/oauth2/filter.cc in envoyproxy/envoy):
/// - `OauthHMAC` = base64(HMAC-SHA256(hmac secret,
///   `domain \n expires \n access token \n id token \n refresh token`)) over the *plain* tokens,
///   `domain` being `cookie_domain` when set, else the Host header (`encodeHmacBase64`);
/// - `OauthExpires` = Unix seconds; the request is logged in while it is in the future;
/// - `BearerToken`, `IdToken`, `RefreshToken` = the tokens encrypted (token encryption is on
///   unless `disable_token_encryption`): AES-256-CBC, key SHA-256(hmac secret), a random 16-byte
///   IV prepended, base64url without padding (`encrypt`).
#[derive(Debug, Clone)]
pub struct EnvoyOauth2Cookies {
    pub access_token: String,
    /// `BearerToken=…; IdToken=…; RefreshToken=…; OauthHMAC=…; OauthExpires=…`
    pub cookie_header: String,
}

impl EnvoyOauth2Cookies {
    pub fn new(access: &str, id: &str, refresh: &str, expires_s: u64) -> Result<Self> {
        let secret = ENVOY_OAUTH2_HMAC_SECRET.as_bytes();
        let expires = expires_s.to_string();
        let payload = [ENVOY_OAUTH2_COOKIE_DOMAIN, &expires, access, id, refresh].join("\n");
        let hmac = STANDARD.encode(hmac_sha256::HMAC::mac(payload.as_bytes(), secret));
        let key: [u8; 32] = Sha256::digest(secret).into();
        let enc = |token: &str, iv_seed: &str| -> Result<String> {
            // A fixed IV per token keeps the request identical from run to run; Envoy only needs
            // some IV.
            let digest = Sha256::digest(iv_seed.as_bytes());
            let iv = digest.get(..16).context("iv")?;
            let mut out = iv.to_vec();
            out.extend(aes_256_cbc(&key, iv, token.as_bytes())?);
            Ok(URL_SAFE_NO_PAD.encode(out))
        };
        let cookie_header = format!(
            "BearerToken={}; IdToken={}; RefreshToken={}; OauthHMAC={hmac}; OauthExpires={expires}",
            enc(access, "access")?,
            enc(id, "id")?,
            enc(refresh, "refresh")?,
        );
        Ok(Self {
            access_token: access.to_owned(),
            cookie_header,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// AES-256-CBC with PKCS#7 padding, by the `openssl` command (set-up only, so no AES crate).
fn aes_256_cbc(key: &[u8], iv: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(["enc", "-aes-256-cbc", "-nosalt", "-K"])
        .arg(hex(key))
        .arg("-iv")
        .arg(hex(iv))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl (Debian package openssl)")?;
    child
        .stdin
        .take()
        .context("openssl stdin")?
        .write_all(plaintext)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("openssl enc: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_matches_a_known_vector() {
        // NIST SP 800-38A F.2.5, CBC-AES256.Encrypt, first block (plus the PKCS#7 block openssl
        // appends).
        let key = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
        let key: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&key[i..i + 2], 16).unwrap())
            .collect();
        let iv: Vec<u8> = (0u8..16).collect();
        let pt = [
            0x6b, 0xc1, 0xbe, 0xe2, 0x2e, 0x40, 0x9f, 0x96, 0xe9, 0x3d, 0x7e, 0x11, 0x73, 0x93,
            0x17, 0x2a,
        ];
        let ct = aes_256_cbc(&key, &iv, &pt).unwrap();
        assert_eq!(ct.len(), 32);
        assert_eq!(hex(&ct[..16]), "f58c4c04d6e5f1ba779eabfb5f7bfbd6");
    }

    #[test]
    fn envoy_cookies_carry_an_hmac_over_the_plain_tokens() {
        let c = EnvoyOauth2Cookies::new("at", "it", "rt", 2_000_000_000).unwrap();
        let payload = "shop.example.com\n2000000000\nat\nit\nrt";
        let mac = STANDARD.encode(hmac_sha256::HMAC::mac(
            payload.as_bytes(),
            ENVOY_OAUTH2_HMAC_SECRET.as_bytes(),
        ));
        assert!(c.cookie_header.contains(&format!("OauthHMAC={mac};")));
        assert!(c.cookie_header.ends_with("OauthExpires=2000000000"));
        assert!(!c.cookie_header.contains("BearerToken=at;"), "encrypted");
    }
}
