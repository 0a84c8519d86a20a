// A real OpenID Provider for the OAuth2 filter's tests: node-oidc-provider with its development
// login form (any login/password is accepted), one confidential client, short token lifetimes.
//
// Configured by environment (all optional except IDP_PORT):
//   IDP_PORT                port to listen on
//   IDP_HOST                address to listen on (default 127.0.0.1; a container: 0.0.0.0)
//   IDP_ISSUER              the issuer, as browsers reach it (default http://127.0.0.1:<port>)
//   IDP_CLIENT_ID / IDP_CLIENT_SECRET        the client (default shop / shop-secret)
//   IDP_REDIRECT_URIS       comma-separated redirect URIs
//   IDP_POST_LOGOUT_URIS    comma-separated post-logout redirect URIs
//   IDP_AUTH_METHOD         client_secret_basic (default) or client_secret_post
//   IDP_ALG                 RS256 (default) or ES256: the ID token signing algorithm
//   IDP_TOKEN_TTL           access and ID token lifetime, seconds (default 300)
//   IDP_ROTATE_REFRESH      "1": refresh tokens rotate on every use (default "1")
//   IDP_LENIENT_CLAIMS      "1": the scopes' claims in the ID token too (default: only at UserInfo)
//   IDP_STATE_FILE          keep grants, tokens and sessions in this JSON file, so a restart
//                           (which rotates the signing key) keeps every session and refresh token
//   IDP_TLS_CERT / IDP_TLS_KEY  PEM files: serve HTTPS only, with this certificate (an IdP as
//                           the internet has them; IDP_ISSUER is then https://…)
// A fresh signing key with a fresh kid is generated at every start, so restarting the provider
// rotates its signing keys. Prints "ready <issuer>" on stdout when listening; every token
// endpoint request is logged as "token <grant_type>" (tests count refreshes this way).
//
// Users: the demo users below, or any other login (its email is the login when it looks like
// one, else <login>@example.com); any password.
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';

const env = process.env;
const port = Number(env.IDP_PORT);
const host = env.IDP_HOST || '127.0.0.1';
const issuer = env.IDP_ISSUER || `http://127.0.0.1:${port}`;
const alg = env.IDP_ALG || 'RS256';
const ttl = Number(env.IDP_TOKEN_TTL || 300);
const list = (v, d) => (v ? v.split(',').filter(Boolean) : d);

// The demo shop's customers; anyone else may sign in too.
const DEMO_USERS = {
  alice: { name: 'Alice Martin', email: 'alice@example.com', groups: ['customers', 'qa'] },
  bob: { name: 'Bob Chen', email: 'bob@example.com', groups: ['customers'] },
};

function profile(login) {
  const demo = DEMO_USERS[login];
  if (demo) return demo;
  const email = login.includes('@') ? login : `${login}@example.com`;
  const name = login.split('@')[0];
  return { name: name.charAt(0).toUpperCase() + name.slice(1), email, groups: ['customers'] };
}

const { privateKey } = await generateKeyPair(alg, { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`, alg, use: 'sig' };

// A file-backed store (oidc-provider's adapter interface): what a real provider's database is
// across a restart. Every write is written through.
function fileAdapter(file) {
  const all = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const save = () => {
    writeFileSync(`${file}.tmp`, JSON.stringify(all));
    renameSync(`${file}.tmp`, file);
  };
  const live = (key) => {
    const e = all[key];
    if (!e) return undefined;
    if (e.expiresAt && e.expiresAt <= Date.now()) {
      delete all[key];
      return undefined;
    }
    return e.payload;
  };
  return class {
    constructor(model) { this.model = model; }
    key(id) { return `${this.model}:${id}`; }
    async upsert(id, payload, expiresIn) {
      all[this.key(id)] = { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 };
      save();
    }
    async find(id) { return live(this.key(id)); }
    async findByUid(uid) {
      const k = Object.keys(all).find((k) => k.startsWith(`${this.model}:`) && all[k].payload.uid === uid);
      return k ? live(k) : undefined;
    }
    async findByUserCode(code) {
      const k = Object.keys(all).find((k) => k.startsWith(`${this.model}:`) && all[k].payload.userCode === code);
      return k ? live(k) : undefined;
    }
    async consume(id) {
      const p = live(this.key(id));
      if (p) { p.consumed = Math.floor(Date.now() / 1000); save(); }
    }
    async destroy(id) { delete all[this.key(id)]; save(); }
    async revokeByGrantId(grantId) {
      for (const k of Object.keys(all)) if (all[k].payload.grantId === grantId) delete all[k];
      save();
    }
  };
}

const provider = new Provider(issuer, {
  ...(env.IDP_STATE_FILE ? { adapter: fileAdapter(env.IDP_STATE_FILE) } : {}),
  clients: [{
    client_id: env.IDP_CLIENT_ID || 'shop',
    client_secret: env.IDP_CLIENT_SECRET || 'shop-secret',
    redirect_uris: list(env.IDP_REDIRECT_URIS, ['http://127.0.0.1/oauth2/callback']),
    post_logout_redirect_uris: list(env.IDP_POST_LOGOUT_URIS, []),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: env.IDP_AUTH_METHOD || 'client_secret_basic',
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [jwk] },
  // Users: any login; the account id is the login, with a few standard claims.
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email_verified: true, ...profile(id) }),
  }),
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: env.IDP_ROTATE_REFRESH !== '0',
  ttl: {
    AccessToken: ttl,
    IdToken: ttl,
    RefreshToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  pkce: { required: () => true },
  // OIDC Core §5.4 (the default): with an access token issued, the scopes' claims (email,
  // name, groups) are at the UserInfo endpoint, not in the ID token. IDP_LENIENT_CLAIMS=1 puts
  // them in the ID token too, as many IdPs do.
  conformIdTokenClaims: env.IDP_LENIENT_CLAIMS !== '1',
  cookies: { keys: ['meshwright-test-idp-cookie-key'] },
});
provider.on('grant.success', (ctx) => {
  console.log(`token ${ctx.oidc.params?.grant_type ?? '?'}`);
});
provider.on('grant.error', (ctx, err) => {
  console.log(`token-error ${ctx.oidc.params?.grant_type ?? '?'} ${err.message}`);
});
const ready = () => console.log(`ready ${issuer}`);
if (env.IDP_TLS_CERT) {
  const tls = { cert: readFileSync(env.IDP_TLS_CERT), key: readFileSync(env.IDP_TLS_KEY) };
  createServer(tls, provider.callback()).listen(port, host, ready);
} else {
  provider.listen(port, host, ready);
}
process.on('SIGTERM', () => process.exit(0));
