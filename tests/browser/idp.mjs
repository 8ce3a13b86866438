// A real OpenID Connect provider (oidc-provider, an OpenID-certified implementation) for the
// tests, so the node's OIDC sign-in is checked against someone else's reading of the spec.
//
//   node tests/browser/idp.mjs '<json>'        or        node tests/browser/idp.mjs <file.json>
//
// The argument is the JSON itself (when it starts with "{") or the path of a file holding it:
//   { "clients":  [{ "client_id": "...", "client_secret": "...", "redirect_uris": ["http://127.0.0.1:N/..."] }],
//     "accounts": { "<login>": { "name": "...", "email": "...", <any other claim>: ... } },
//     "userinfo_only": ["<claim>", ...] }     (optional: claims left out of the ID token)
//
// It listens on a free port of 127.0.0.1 over plain HTTP, prints one line to stdout,
//   {"issuer":"http://127.0.0.1:NNNNN"}
// and runs until SIGTERM or until its stdin (when that is a pipe) reaches end of file, so it
// dies with the test that spawned it. Everything else it says goes to stderr.
//
// Endpoints (all under the issuer): /.well-known/openid-configuration, /auth, /token, /me
// (userinfo), /jwks. Authorization code flow only, PKCE S256 required, client_secret_basic
// or client_secret_post, ID token RS256 with a key made at start.
//
// Sign-in page (GET /interaction/<uid>): <label for="login">Login</label>, an input with
// id="login" name="login", and a submit button "Sign in"; the form POSTs back to the same
// URL. Any password-free login that is a key of "accounts" signs in; any other gets the form
// again with status 403 and <p role="alert">Unknown login</p>. Consent is granted without
// asking. The interaction runs on cookies (idp_interaction, idp_interaction_resume,
// idp_session), so a request-level client needs a cookie jar.
//
// Every claim of an account comes out of both the ID token and /me as soon as the scope
// "openid" is granted, with sub = the login.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { fstatSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import Provider from "oidc-provider";

// oidc-provider prints its notices with console.info, which is stdout: keep stdout for the
// issuer line alone.
console.info = console.log = console.error;

const arg = process.argv[2] ?? "";
const config = JSON.parse(arg.trimStart().startsWith("{") ? arg : readFileSync(arg, "utf8"));
const accounts = config.accounts ?? {};
// Claims that go to userinfo only, as SURFconext sends most of them: never in the ID token.
const userinfoOnly = new Set(config.userinfo_only ?? []);
const released = [...new Set(Object.values(accounts).flatMap(Object.keys))];

// The issuer must name the port, which is known only once listening; requests cannot come
// before the issuer line is printed, so the provider is made after `listen`.
let provider, handle;
const server = createServer((req, res) =>
  req.url.startsWith("/interaction/") ? interaction(req, res) : handle(req, res));
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const issuer = `http://127.0.0.1:${server.address().port}`;

const jwk = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });

provider = new Provider(issuer, {
  // Web clients may use http redirect URIs for the code flow (only implicit is held to https).
  clients: (config.clients ?? []).map((client) => ({
    grant_types: ["authorization_code"], response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic", ...client,
  })),
  jwks: { keys: [{ ...jwk, kid: "test-rs256", alg: "RS256", use: "sig" }] },
  responseTypes: ["code"],
  pkce: { required: () => true },
  // Both secret methods are accepted whichever one a client registered.
  clientAuthMethods: ["client_secret_basic", "client_secret_post"],
  // The custom claims ride on "openid"; profile and email exist so asking for them is no error.
  claims: { openid: ["sub", ...released], profile: [], email: [] },
  // By default the claims of the scopes go only to userinfo when an access token is issued.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  // Set, not defaulted, so oidc-provider has no notices to print about them.
  ttl: { AuthorizationCode: 60, AccessToken: 600, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  // Distinct names, since the app under test shares the host 127.0.0.1 (cookies ignore ports).
  cookies: {
    names: { session: "idp_session", interaction: "idp_interaction", resume: "idp_interaction_resume" },
    keys: [randomBytes(32).toString("base64url")],
  },
  async findAccount(_ctx, login) {
    if (!Object.hasOwn(accounts, login)) return undefined;
    return {
      accountId: login,
      claims: async (use) => Object.fromEntries(Object.entries({ ...accounts[login], sub: login })
        .filter(([k]) => use !== "id_token" || !userinfoOnly.has(k))),
    };
  },
  // No consent screen: every grant is widened to what the client asks for.
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const id = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    const grant = (id && await oidc.provider.Grant.find(id))
      || new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
    grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(" "));
    grant.addOIDCClaims([...oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },
});
handle = provider.callback();
provider.on("server_error", (_ctx, err) => console.error(err));

async function interaction(req, res) {
  try {
    const { uid, prompt, grantId } = await provider.interactionDetails(req, res);
    if (prompt.name !== "login") {
      // Only reached on prompt=consent: the grant above already covers the request.
      return await provider.interactionFinished(req, res, { consent: { grantId } });
    }
    if (req.method !== "POST") return page(res, 200, uid, "");
    let body = "";
    for await (const chunk of req) body += chunk;
    const login = new URLSearchParams(body).get("login")?.trim() ?? "";
    if (!Object.hasOwn(accounts, login)) return page(res, 403, uid, `<p role="alert">Unknown login</p>`);
    await provider.interactionFinished(req, res, { login: { accountId: login } },
      { mergeWithLastSubmission: false });
  } catch (err) {
    if (res.headersSent) return res.destroy();
    res.writeHead(400, { "content-type": "text/plain; charset=utf-8" }).end(`${err.name}: ${err.message}\n`);
  }
}

function page(res, status, uid, alert) {
  res.writeHead(status, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
  res.end(`<!doctype html><html lang="en"><meta charset="utf-8"><title>Sign in</title>
<main><h1>Sign in</h1>${alert}
<form method="post" action="/interaction/${encodeURIComponent(uid)}">
<label for="login">Login</label> <input id="login" name="login" autocomplete="username" required autofocus>
<button type="submit">Sign in</button></form></main></html>\n`);
}

// Watching a non-pipe stdin (/dev/null, a terminal) would end the provider at once or never.
const stdin = fstatSync(0);
if (stdin.isFIFO() || stdin.isSocket()) {
  process.stdin.on("end", () => process.exit(0)).resume();
}
process.on("SIGTERM", () => process.exit(0));
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
