// A real OpenID provider for medfed's single sign-on tests: node-oidc-provider (certified),
// started by tests/oidc_fixtures.py as `node tests/oidc/provider.mjs CONFIG.json`.
//
// CONFIG.json: {"port", "issuer", "jwks" (private signing keys), "clients",
// "accounts_file", "cookie_key"}. The accounts file is re-read at every lookup, so a
// test can take a group away between two logins:
//   {"alice": {"password": "...", "groups": ["..."], "amr": ["pwd", "otp"], "name": "..."}}
// The login page is our own minimal one (no devInteractions): it checks the password and
// ends the login with the account's amr/acr; consent is granted without a page (the
// clients are first-party). Cookies and redirects are plain http on 127.0.0.1.
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = () => JSON.parse(readFileSync(config.accounts_file, 'utf8'));
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: [config.cookie_key] },
  claims: {
    iss: null,
    sid: null,
    // how the user authenticated rides in every ID token (as Keycloak can be set to do)
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // the ID token carries the scopes' claims (groups)
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
  },
  pkce: { required: () => true },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = accounts()[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          name: account.name ?? id,
          preferred_username: id,
          email: `${id}@example.org`,
          email_verified: true,
          groups: account.groups ?? [],
        };
      },
    };
  },
});
const callback = provider.callback();

function page(res, title, body, status = 200) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>${esc(title)}</title></head><body>`
    + `<h1>${esc(title)}</h1>${body}</body></html>`);
}

function loginForm(res, uid, error) {
  page(res, 'Test provider sign-in', `${error ? `<p role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}">
  <label>Login <input name="login" id="login" autocomplete="off" required></label>
  <label>Password <input name="password" id="password" type="password" required></label>
  <button type="submit" id="signin">Sign in</button>
</form>`, error ? 401 : 200);
}

async function readForm(req) {
  let raw = '';
  for await (const chunk of req) raw += chunk;
  return new URLSearchParams(raw);
}

async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const result = { consent: { grantId: await grant.save() } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
    return;
  }
  if (req.method !== 'POST') {
    loginForm(res, uid);
    return;
  }
  const form = await readForm(req);
  const id = form.get('login') ?? '';
  const account = accounts()[id];
  if (!account || account.password !== form.get('password')) {
    loginForm(res, uid, 'wrong login or password');
    return;
  }
  const login = { accountId: id, amr: account.amr ?? ['pwd'] };
  if (account.acr) login.acr = account.acr;
  await provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
}

const server = http.createServer((req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(new URL(req.url, config.issuer).pathname);
  if (!match) {
    callback(req, res);
    return;
  }
  interaction(req, res, match[1]).catch((err) => {
    page(res, 'Error', `<p>${esc(err.message)}</p>`, 400);
  });
});
server.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
