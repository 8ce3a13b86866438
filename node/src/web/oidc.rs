//! Staff sign in with their organisation's own account: OpenID Connect, authorization code flow
//! with PKCE (S256), a state and a nonce per sign-in bound to the browser that started it, the
//! ID token checked by the `openidconnect` crate (issuer, audience, signature against the
//! provider's published keys, expiry, nonce), and the claims of the userinfo endpoint added
//! (SURFconext sends most there). A sign-in counts only when the organisation claim names this
//! node's organisation; the role comes from the first rule in node.toml whose claim matches.
//! Local accounts stay as a fallback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::i18n::{Lang, t, tf};
use super::page::{error, page, respond};
use super::staff::{SESSION_SECS, cookie_value, home_of, start_session};
use super::{Shared, random_token};

/// The `[oidc]` table of node.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer: its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// A file with the client secret (so node.toml holds none).
    pub client_secret_file: PathBuf,
    /// Where the provider sends people back: this web app's address, `/login/oidc/callback`.
    pub redirect_url: String,
    /// The provider's name on the sign-in button ("SURFconext", "Entree Federatie").
    #[serde(default = "d_display_name")]
    pub display_name: String,
    /// The claim that names the person's organisation (`schac_home_organization` at
    /// SURFconext, `nlEduPersonHomeOrganizationId` at Entree Federatie) and this node's
    /// value in it (the college's domain, the school's BRIN code).
    pub organisation_claim: String,
    pub organisation: String,
    /// The claim that is the staff member's user name (in the audit, and a mentor's key to
    /// their students).
    #[serde(default = "d_username_claim")]
    pub username_claim: String,
    #[serde(default = "d_scopes")]
    pub scopes: Vec<String>,
    /// Claims to roles: the first rule whose claim has the value gives the role.
    pub roles: Vec<RoleRule>,
}

/// One rule: whoever's `claim` is (or, for a list, holds) `value` gets `role`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    pub claim: String,
    pub value: String,
    pub role: String,
}

fn d_display_name() -> String {
    "je organisatie".into()
}
fn d_username_claim() -> String {
    "sub".into()
}
fn d_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

/// [`OidcSettings`] checked, with the client secret read.
#[derive(Clone)]
pub struct OidcConfig {
    pub settings: OidcSettings,
    secret: String,
}

impl OidcSettings {
    pub fn resolve(&self) -> anyhow::Result<OidcConfig> {
        use anyhow::Context;
        IssuerUrl::new(self.issuer.clone()).context("oidc.issuer is no URL")?;
        RedirectUrl::new(self.redirect_url.clone()).context("oidc.redirect_url is no URL")?;
        if !self.redirect_url.ends_with("/login/oidc/callback") {
            anyhow::bail!(
                "oidc.redirect_url must end in /login/oidc/callback (the web app's address, then that path)"
            );
        }
        for r in &self.roles {
            if !crate::core::people::ROLES.contains(&r.role.as_str()) {
                anyhow::bail!(
                    "oidc.roles: role {:?} is not one of {}",
                    r.role,
                    crate::core::people::ROLES.join(", ")
                );
            }
        }
        if self.roles.is_empty() {
            anyhow::bail!("oidc.roles is empty: name which claim values give which role");
        }
        let secret = std::fs::read_to_string(&self.client_secret_file)
            .with_context(|| {
                format!(
                    "reading oidc.client_secret_file {}",
                    self.client_secret_file.display()
                )
            })?
            .trim()
            .to_string();
        Ok(OidcConfig {
            settings: self.clone(),
            secret,
        })
    }
}

/// How long a sign-in may take at the provider, and how many may be under way at once.
const PENDING_SECS: i64 = 600;
const MAX_PENDING: usize = 10_000;
/// How long the provider's discovery document and keys are kept before they are fetched anew
/// (so a key the provider rotated in is found within the hour).
const METADATA_SECS: i64 = 3600;
/// The cookie that binds a sign-in to the browser that started it. SameSite=Lax: the
/// provider sends the browser back with a top-level navigation from its own site.
const BINDING_COOKIE: &str = "overstap_oidc";

/// A sign-in under way at the provider.
struct Pending {
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    binding: Vec<u8>,
    started: i64,
}

/// The web app's link to the identity provider.
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, i64)>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Why a sign-in was refused: the words for the person, the detail for the log.
#[derive(Debug)]
pub struct Refused {
    pub key: &'static str,
    pub status: StatusCode,
    pub detail: String,
}

fn refused(key: &'static str, status: StatusCode, detail: impl std::fmt::Display) -> Refused {
    Refused {
        key,
        status,
        detail: detail.to_string(),
    }
}

impl Oidc {
    pub fn new(config: OidcConfig) -> anyhow::Result<Self> {
        // No redirects: the provider's endpoints answer directly (and a redirect could lead
        // the node's requests anywhere).
        let http = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            config,
            http,
            metadata: Default::default(),
            pending: Default::default(),
        })
    }

    pub fn display_name(&self) -> &str {
        &self.config.settings.display_name
    }

    /// The provider's discovery document, fetched at most once an hour.
    async fn metadata(&self, now: i64) -> Result<CoreProviderMetadata, Refused> {
        let mut cached = self.metadata.lock().await;
        if let Some((m, at)) = cached.as_ref()
            && now - at < METADATA_SECS
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.settings.issuer.clone())
            .map_err(|e| refused("oidc_unreachable", StatusCode::BAD_GATEWAY, e))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| refused("oidc_unreachable", StatusCode::BAD_GATEWAY, e))?;
        *cached = Some((m.clone(), now));
        Ok(m)
    }

    async fn client(
        &self,
        now: i64,
    ) -> Result<
        (
            CoreClient<
                openidconnect::EndpointSet,
                openidconnect::EndpointNotSet,
                openidconnect::EndpointNotSet,
                openidconnect::EndpointNotSet,
                openidconnect::EndpointMaybeSet,
                openidconnect::EndpointMaybeSet,
            >,
            CoreProviderMetadata,
        ),
        Refused,
    > {
        let m = self.metadata(now).await?;
        let s = &self.config.settings;
        let redirect = RedirectUrl::new(s.redirect_url.clone())
            .map_err(|e| refused("oidc_unreachable", StatusCode::BAD_GATEWAY, e))?;
        let client = CoreClient::from_provider_metadata(
            m.clone(),
            ClientId::new(s.client_id.clone()),
            Some(ClientSecret::new(self.config.secret.clone())),
        )
        .set_redirect_uri(redirect);
        Ok((client, m))
    }

    /// Starts a sign-in: where to send the browser, and the binding to set in its cookie.
    async fn begin(&self, now: i64) -> Result<(String, String), Refused> {
        let (client, _) = self.client(now).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.settings.scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        let (url, state, nonce) = request.url();
        let binding = random_token();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| now - p.started < PENDING_SECS);
        if pending.len() >= MAX_PENDING {
            return Err(refused(
                "oidc_busy",
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sign-ins under way",
            ));
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                nonce,
                verifier,
                binding: Sha256::digest(binding.as_bytes()).to_vec(),
                started: now,
            },
        );
        Ok((url.to_string(), binding))
    }

    /// Ends a sign-in the provider sent back: the staff member's user name and role.
    async fn finish(
        &self,
        now: i64,
        code: &str,
        state: &str,
        binding: Option<&str>,
    ) -> Result<(String, String), Refused> {
        // The state is used once, whatever happens next.
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state);
        let Some(p) = pending.filter(|p| now - p.started < PENDING_SECS) else {
            return Err(refused(
                "oidc_state",
                StatusCode::BAD_REQUEST,
                "unknown, used or expired state",
            ));
        };
        let bound = binding.is_some_and(|b| {
            super::staff::csrf_ok(
                &hex::encode(&p.binding),
                &hex::encode(Sha256::digest(b.as_bytes())),
            )
        });
        if !bound {
            return Err(refused(
                "oidc_state",
                StatusCode::BAD_REQUEST,
                "the state belongs to another browser",
            ));
        }
        let (client, metadata) = self.client(now).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| refused("oidc_unreachable", StatusCode::BAD_GATEWAY, e))?
            .set_pkce_verifier(p.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| refused("oidc_refused", StatusCode::UNAUTHORIZED, e))?;
        let id_token = token.extra_fields().id_token().ok_or_else(|| {
            refused(
                "oidc_refused",
                StatusCode::UNAUTHORIZED,
                "no ID token in the token response",
            )
        })?;
        let mut claims = checked_claims(id_token, &client.id_token_verifier(), &p.nonce)?;
        if let Some(url) = metadata.userinfo_endpoint() {
            let extra = self
                .userinfo(url.url().as_str(), token.access_token().secret())
                .await?;
            if extra.get("sub") != claims.get("sub") {
                return Err(refused(
                    "oidc_refused",
                    StatusCode::UNAUTHORIZED,
                    "the userinfo is of another subject than the ID token",
                ));
            }
            for (k, v) in extra {
                claims.entry(k).or_insert(v);
            }
        }
        self.staff_of(&claims)
    }

    async fn userinfo(&self, url: &str, access_token: &str) -> Result<Map<String, Value>, Refused> {
        let bad = |e: &dyn std::fmt::Display| refused("oidc_refused", StatusCode::UNAUTHORIZED, e);
        let answer = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| bad(&e))?;
        if !answer.status().is_success() {
            return Err(bad(&format!("userinfo answered {}", answer.status())));
        }
        let body = answer.bytes().await.map_err(|e| bad(&e))?;
        serde_json::from_slice(&body).map_err(|e| bad(&e))
    }

    /// The user name and role the claims give at this node, or why they give none.
    pub fn staff_of(&self, claims: &Map<String, Value>) -> Result<(String, String), Refused> {
        let s = &self.config.settings;
        if !has_value(claims, &s.organisation_claim, &s.organisation) {
            return Err(refused(
                "oidc_other_organisation",
                StatusCode::FORBIDDEN,
                format!(
                    "{} is {:?}, not {}",
                    s.organisation_claim,
                    claims.get(&s.organisation_claim),
                    s.organisation
                ),
            ));
        }
        let username = claims
            .get(&s.username_claim)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                refused(
                    "oidc_refused",
                    StatusCode::UNAUTHORIZED,
                    format!("no {} claim", s.username_claim),
                )
            })?;
        let role = s
            .roles
            .iter()
            .find(|r| has_value(claims, &r.claim, &r.value))
            .ok_or_else(|| {
                refused(
                    "oidc_no_role",
                    StatusCode::FORBIDDEN,
                    format!("no role rule matches {username}"),
                )
            })?;
        Ok((username.to_string(), role.role.clone()))
    }
}

/// The ID token's claims, once the crate's verifier accepts it (issuer, audience, signature,
/// expiry, nonce): read from the token it verified.
pub fn checked_claims(
    id_token: &CoreIdToken,
    verifier: &CoreIdTokenVerifier<'_>,
    nonce: &Nonce,
) -> Result<Map<String, Value>, Refused> {
    id_token
        .claims(verifier, nonce)
        .map_err(|e| refused("oidc_refused", StatusCode::UNAUTHORIZED, e))?;
    let compact = id_token.to_string();
    let payload = compact.split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            refused(
                "oidc_refused",
                StatusCode::UNAUTHORIZED,
                "the ID token's claims are no JSON object",
            )
        })
}

/// Whether `claim` is `value` or, as a list, holds it (case does not count: federations
/// differ in how they write a domain or a BRIN code).
fn has_value(claims: &Map<String, Value>, claim: &str, value: &str) -> bool {
    let eq = |v: &Value| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(value));
    match claims.get(claim) {
        Some(Value::Array(items)) => items.iter().any(eq),
        Some(v) => eq(v),
        None => false,
    }
}

fn no_oidc(web: &Shared, lang: Lang) -> Response {
    error(
        lang,
        &web.school(),
        StatusCode::NOT_FOUND,
        &t(lang, "error_not_found"),
        Some(("/login", &t(lang, "sign_in"))),
    )
}

fn refusal_page(web: &Shared, lang: Lang, r: &Refused) -> Response {
    tracing::info!(reason = %r.detail, "a sign-in through the identity provider was refused");
    error(
        lang,
        &web.school(),
        r.status,
        &t(lang, r.key),
        Some(("/login", &t(lang, "oidc_try_again"))),
    )
}

/// GET /login/oidc: off to the provider.
pub async fn start(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Some(oidc) = web.oidc.as_ref() else {
        return no_oidc(&web, lang);
    };
    match oidc.begin(web.core.now()).await {
        Ok((url, binding)) => {
            let mut r = Redirect::to(&url).into_response();
            let cookie = format!(
                "{BINDING_COOKIE}={binding}; Path=/login/oidc; Max-Age={PENDING_SECS}; HttpOnly; Secure; SameSite=Lax"
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => refusal_page(&web, lang, &e),
    }
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    /// Set when the provider refused (the person cancelled, or may not use this app).
    #[serde(default)]
    error: String,
}

/// GET /login/oidc/callback: the provider sent the browser back.
pub async fn callback(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let lang = Lang::of(&headers);
    let Some(oidc) = web.oidc.as_ref() else {
        return no_oidc(&web, lang);
    };
    if !q.error.is_empty() || q.code.is_empty() {
        let r = refused(
            "oidc_cancelled",
            StatusCode::UNAUTHORIZED,
            format!("the provider answered {:?}", q.error),
        );
        return refusal_page(&web, lang, &r);
    }
    let now = web.core.now();
    let (username, role) = match oidc
        .finish(
            now,
            &q.code,
            &q.state,
            cookie_value(&headers, BINDING_COOKIE),
        )
        .await
    {
        Ok(x) => x,
        Err(e) => return refusal_page(&web, lang, &e),
    };
    tracing::info!(user = %username, %role, "staff signed in through the identity provider");
    if let Err(e) = web
        .core
        .audit(&username, &role, "sign-in", "", oidc.display_name())
        .await
    {
        return web.server_error(lang, e);
    }
    // A page of our own, not a redirect: the browser came here from the provider's site, and
    // a SameSite=Strict session cookie is sent only once a page of this site leads on.
    let home = home_of(&role);
    let body = html! {
        p.done role="status" { (tf(lang, "oidc_signed_in", &[("who", &username)])) }
        p { a.button href=(home) { (t(lang, "oidc_continue")) } }
    };
    let mut r = respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "oidc_signed_in_title"), body),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("0; url={home}")) {
        r.headers_mut().insert("refresh", v);
    }
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "overstap_oidc=; Path=/login/oidc; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        ),
    );
    match start_session(&web, &username, &role, SESSION_SECS, r).await {
        Ok(r) => r,
        Err(e) => web.server_error(lang, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};
    use openidconnect::core::{
        CoreIdTokenClaims, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey,
    };
    use openidconnect::{
        Audience, EmptyAdditionalClaims, JsonWebKeySet, PrivateSigningKey, StandardClaims,
        SubjectIdentifier,
    };

    /// Keys made for these tests only (they sign nothing anywhere else): the provider's, and
    /// one it never published.
    const KEY: &str = include_str!("testdata/idp-test-key.pem");
    const OTHER_KEY: &str = include_str!("testdata/idp-other-key.pem");
    const ISSUER: &str = "https://idp.example";
    const CLIENT: &str = "overstap-node";

    fn key() -> CoreRsaPrivateSigningKey {
        CoreRsaPrivateSigningKey::from_pem(KEY, None).unwrap()
    }

    /// An ID token signed by `key`, as a provider would make one.
    fn token(
        key: &CoreRsaPrivateSigningKey,
        issuer: &str,
        audience: &str,
        nonce: &str,
        expires_in: Duration,
    ) -> CoreIdToken {
        let now = Utc::now();
        let claims = CoreIdTokenClaims::new(
            IssuerUrl::new(issuer.into()).unwrap(),
            vec![Audience::new(audience.into())],
            now + expires_in,
            now - Duration::minutes(1),
            StandardClaims::new(SubjectIdentifier::new("ilse".into())),
            EmptyAdditionalClaims {},
        )
        .set_nonce(Some(Nonce::new(nonce.into())));
        CoreIdToken::new(
            claims,
            key,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            None,
            None,
        )
        .unwrap()
    }

    fn verifier() -> CoreIdTokenVerifier<'static> {
        CoreIdTokenVerifier::new_confidential_client(
            ClientId::new(CLIENT.into()),
            ClientSecret::new("a client secret".into()),
            IssuerUrl::new(ISSUER.into()).unwrap(),
            JsonWebKeySet::new(vec![key().as_verification_key()]),
        )
    }

    #[test]
    fn an_id_token_counts_only_from_the_provider_for_this_node_and_this_sign_in() {
        let nonce = Nonce::new("n-1".into());
        let good = token(&key(), ISSUER, CLIENT, "n-1", Duration::minutes(5));
        let claims = checked_claims(&good, &verifier(), &nonce).unwrap();
        assert_eq!(claims["sub"], "ilse");

        let wrong = [
            (
                "issuer",
                token(
                    &key(),
                    "https://evil.example",
                    CLIENT,
                    "n-1",
                    Duration::minutes(5),
                ),
            ),
            (
                "audience",
                token(&key(), ISSUER, "another-app", "n-1", Duration::minutes(5)),
            ),
            (
                "nonce",
                token(&key(), ISSUER, CLIENT, "n-2", Duration::minutes(5)),
            ),
            (
                "expired",
                token(&key(), ISSUER, CLIENT, "n-1", Duration::minutes(-5)),
            ),
        ];
        for (what, t) in wrong {
            let r = checked_claims(&t, &verifier(), &nonce).expect_err(what);
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(r.key, "oidc_refused", "{what}");
        }

        // Signed by a key the provider never published.
        let other = CoreRsaPrivateSigningKey::from_pem(OTHER_KEY, None).unwrap();
        let forged = token(&other, ISSUER, CLIENT, "n-1", Duration::minutes(5));
        checked_claims(&forged, &verifier(), &nonce).expect_err("another key's signature");

        // The same claims with the payload changed after signing.
        let s = good.to_string();
        let mut parts: Vec<String> = s.split('.').map(String::from).collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        payload["sub"] = "someone-else".into();
        parts[1] = b64.encode(payload.to_string());
        let tampered: CoreIdToken = parts.join(".").parse().unwrap();
        checked_claims(&tampered, &verifier(), &nonce).expect_err("a changed payload");
    }

    fn oidc(org_claim: &str, org: &str, roles: &[(&str, &str, &str)]) -> Oidc {
        Oidc::new(OidcConfig {
            settings: OidcSettings {
                issuer: ISSUER.into(),
                client_id: CLIENT.into(),
                client_secret_file: "unused".into(),
                redirect_url: "https://school.example/login/oidc/callback".into(),
                display_name: "SURFconext".into(),
                organisation_claim: org_claim.into(),
                organisation: org.into(),
                username_claim: "sub".into(),
                scopes: d_scopes(),
                roles: roles
                    .iter()
                    .map(|(c, v, r)| RoleRule {
                        claim: c.to_string(),
                        value: v.to_string(),
                        role: r.to_string(),
                    })
                    .collect(),
            },
            secret: "a client secret".into(),
        })
        .unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn surfconext_and_entree_claims_give_a_role_only_at_the_persons_own_organisation() {
        // SURFconext: the organisation's domain, affiliations as a list (from userinfo).
        let college = oidc(
            "schac_home_organization",
            "roc-example.nl",
            &[
                ("eduPersonPrincipalName", "decaan@roc-example.nl", "decaan"),
                ("edu_person_affiliations", "employee", "intaker"),
            ],
        );
        let ilse = claims(serde_json::json!({
            "sub": "urn:collab:person:roc-example.nl:ilse",
            "schac_home_organization": "ROC-Example.nl",
            "edu_person_affiliations": ["member", "employee"],
        }));
        assert_eq!(
            college.staff_of(&ilse).unwrap(),
            (
                "urn:collab:person:roc-example.nl:ilse".into(),
                "intaker".into()
            )
        );
        let mut elsewhere = ilse.clone();
        elsewhere.insert("schac_home_organization".into(), "other-college.nl".into());
        assert_eq!(
            college.staff_of(&elsewhere).unwrap_err().key,
            "oidc_other_organisation"
        );
        let mut student = ilse.clone();
        student.insert(
            "edu_person_affiliations".into(),
            serde_json::json!(["student"]),
        );
        assert_eq!(college.staff_of(&student).unwrap_err().key, "oidc_no_role");
        let mut no_org = ilse.clone();
        no_org.remove("schac_home_organization");
        assert_eq!(
            college.staff_of(&no_org).unwrap_err().key,
            "oidc_other_organisation"
        );

        // Entree Federatie: the school's BRIN code, a single affiliation.
        let school = oidc(
            "nlEduPersonHomeOrganizationId",
            "12AB",
            &[("eduPersonAffiliation", "employee", "mentor")],
        );
        let jan = claims(serde_json::json!({
            "sub": "jan.devries",
            "nlEduPersonHomeOrganizationId": "12AB",
            "eduPersonAffiliation": "employee",
        }));
        assert_eq!(
            school.staff_of(&jan).unwrap(),
            ("jan.devries".into(), "mentor".into())
        );
        let mut other_school = jan.clone();
        other_school.insert("nlEduPersonHomeOrganizationId".into(), "99ZZ".into());
        assert!(school.staff_of(&other_school).is_err());
    }

    #[test]
    fn a_sign_in_is_finished_once_and_only_in_the_browser_that_started_it() {
        let o = oidc("org", "x", &[("a", "b", "mentor")]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (verifier, _) = (PkceCodeVerifier::new("v".repeat(50)), ());
        o.pending.lock().unwrap().insert(
            "state-1".into(),
            Pending {
                nonce: Nonce::new("n".into()),
                verifier,
                binding: Sha256::digest(b"browser-a").to_vec(),
                started: 1_000,
            },
        );
        // Another browser's cookie: refused, and the state is gone for good.
        let r = rt
            .block_on(o.finish(1_010, "code", "state-1", Some("browser-b")))
            .unwrap_err();
        assert_eq!(r.key, "oidc_state");
        let again = rt
            .block_on(o.finish(1_020, "code", "state-1", Some("browser-a")))
            .unwrap_err();
        assert_eq!(again.key, "oidc_state");
        // An unknown state, or none: refused before the provider is asked anything.
        let r = rt
            .block_on(o.finish(1_020, "code", "made-up", Some("browser-a")))
            .unwrap_err();
        assert_eq!(r.key, "oidc_state");
    }
}
