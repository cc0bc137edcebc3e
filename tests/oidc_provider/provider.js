// A real OpenID Connect provider (the npm package oidc-provider) for the console's single sign-on tests.
//
//   node provider.js <config.json>
//
// config.json: {"clients": [<oidc-provider client metadata>], "accounts": {"<login>": {"password": "...",
// "claims": {"email": "...", "email_verified": true, "groups": [...]}}}}
//
// It listens on a free port of 127.0.0.1, then prints one line, `issuer http://127.0.0.1:<port>`, which the test
// waits for. It has its own login page (login + password, checked against the accounts), grants consent itself (the
// client is the platform's own, as at a company's provider), requires PKCE from every client, and serves
// RP-initiated logout. Its pages load nothing from elsewhere: the tests send no request outside 127.0.0.1.

import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
    + `<body><main><h1>${escape(title)}</h1>${body}</main></body></html>`;
}

function loginForm(uid, error) {
  return page('Test provider: sign in', `${error ? `<p role="alert">${escape(error)}</p>` : ''}
    <form method="post" action="/interaction/${escape(uid)}">
      <label>Login <input name="login" autocomplete="username" autofocus></label>
      <label>Password <input name="password" type="password" autocomplete="current-password"></label>
      <button type="submit">Continue</button>
    </form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (req.method !== 'POST') return send(res, 200, loginForm(uid));
    const form = await readForm(req);
    const account = config.accounts[form.get('login')];
    if (!account || account.password !== form.get('password')) {
      return send(res, 200, loginForm(uid, 'Wrong login or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: form.get('login') } }, {
      mergeWithLastSubmission: false,
    });
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 501, page('Not implemented', `<p>prompt ${escape(prompt.name)}</p>`));
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', alg: 'RS256', use: 'sig' };

let provider;
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(provider, req, res).catch((err) => send(res, 400, page('Interaction failed', escape(err.message))));
    return;
  }
  provider.callback()(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = new Provider(issuer, {
    clients: config.clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: ['frontdoor-test-provider-cookie-key'] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    async findAccount(_ctx, id) {
      const account = config.accounts[id];
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...account.claims }) };
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Test provider: sign out', `${form}
            <button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
            <button type="submit" form="op.logoutForm">No, stay signed in</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Test provider: signed out', '<p>You are signed out.</p>');
        },
      },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Test provider: error', `<pre>${escape(JSON.stringify(out))}</pre>`);
    },
  });
  process.stdout.write(`issuer ${issuer}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
