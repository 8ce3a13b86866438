//! The people's web app at a node: students, guardians and staff in a browser, on the node's own
//! tokio runtime, calling the same [`NodeCore`] as the local gRPC API (no SQL in a handler).
//! Pages are rendered on the server (maud); the only script makes and uses the student's key,
//! which never leaves the student's browser. Every asset is compiled in: a region may run
//! offline. Plain HTTP on loopback behind the school's own reverse proxy, or HTTPS with the
//! school's certificate ([`tls`]).
//!
//! Rooms: [`i18n`] (the words, Dutch and English), [`page`] (the frame and the kind error
//! page), [`staff`] (staff sign-in, sessions, CSRF, which role opens which page), [`oidc`]
//! (staff sign-in through the organisation's identity provider), [`class`] (the mentor's class and
//! sending it), [`enrol`] (a mentor invites a student, the
//! student's browser makes the key, the mentor compares the short code, the card is issued),
//! [`student`] (the student signs in with that key and signs), [`passport`] (the passport
//! form, its track and drafts),
//! [`consent`] (the student chooses who may read what, for what, until when, and signs it),
//! [`trail`] (the student's consents, withdrawing one, and where the passport went), [`keys`]
//! (one more key on a card through a one-time link: a parent's, another device's, a new one
//! after a loss), [`guardian`] (a parent signs in with their own key and co-signs, or declines,
//! what their student under 16 signed). The receiving side: [`inbox`] (an intaker or
//! consultant reads what arrived and sets its status), [`handovers`] (the school's handovers
//! for a mentor or decaan, with the drop-out flag, and CSV), [`audit`] (what staff did, for the
//! admin); [`pickup`] (a student's pickup code, made and signed on their device, and the
//! intaker typing it in).

mod audit;
mod class;
mod consent;
mod enrol;
mod guardian;
mod handovers;
mod i18n;
mod inbox;
mod keys;
pub mod oidc;
mod page;
mod passport;
mod pickup;
mod staff;
mod student;
pub mod tls;
mod trail;

pub use enrol::short_code;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::NodeCore;
use i18n::{Lang, t, tf};

/// The largest request body a page takes: a form of a few fields, or a public key.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The web app's state: the node's core and what sign-in needs.
pub struct Web {
    core: Arc<NodeCore>,
    /// Whether the web app speaks HTTPS itself (with the school's certificate).
    https: bool,
    /// Staff sign-in through the organisation's identity provider, when configured.
    oidc: Option<oidc::Oidc>,
    attempts: staff::Attempts,
    challenges: student::Challenges,
    pending: student::Pending,
    /// A hash checked when a user name does not exist, so sign-in takes the same time.
    dummy_hash: String,
    /// The link to the hub, for what a page reads from the hub's log.
    hub: tonic::transport::Channel,
}

pub type Shared = Arc<Web>;

impl Web {
    /// This school's name, as the signed directory has it (its org id until one is there).
    fn school(&self) -> String {
        self.org_name(&self.core.org_id)
    }

    /// An organisation's name from the signed directory (its id until it is there).
    fn org_name(&self, org: &str) -> String {
        self.core
            .directory()
            .ok()
            .and_then(|d| d.member(org).ok().map(|m| m.display_name.clone()))
            .unwrap_or_else(|| org.to_string())
    }

    /// A student's first name, for their parent to read (the whole name stays with the school).
    async fn first_name(&self, pseudonym: &str) -> String {
        match self.core.store.person(pseudonym).await {
            Ok(Some(p)) => p
                .name
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        }
    }

    /// Notes what a staff member did in the audit. The action itself has happened; a note that
    /// cannot be written is logged as an error for the node's admin.
    async fn note(&self, staff: &staff::Staff, action: &str, subject: &str, detail: &str) {
        if let Err(e) = self
            .core
            .audit(&staff.username, &staff.role, action, subject, detail)
            .await
        {
            tracing::error!(error = %e, %action, "a staff action could not be noted in the audit");
        }
    }

    /// The page for a fault of ours: logged with its detail, shown kindly without it.
    fn server_error(&self, lang: Lang, e: impl std::fmt::Display) -> Response {
        tracing::error!(error = %e, "a web page failed");
        page::error(
            lang,
            &self.school(),
            StatusCode::INTERNAL_SERVER_ERROR,
            &t(lang, "error_server"),
            None,
        )
    }
}

pub use crate::core::invite::random_token;

/// The web app's routes over `core`; `https` when it speaks TLS itself (then browsers are told
/// to keep to HTTPS); `oidc` when staff sign in through their organisation's provider.
pub fn router(
    core: Arc<NodeCore>,
    https: bool,
    oidc: Option<oidc::Oidc>,
    hub: tonic::transport::Channel,
) -> Router {
    let web = Arc::new(Web {
        core,
        hub,
        https,
        oidc,
        attempts: Default::default(),
        challenges: Default::default(),
        pending: Default::default(),
        dummy_hash: crate::core::people::hash_password("a password nobody has").unwrap_or_default(),
    });
    Router::new()
        .route("/", get(home))
        .route("/login", get(staff::sign_in_page).post(staff::sign_in))
        .route("/logout", post(staff::sign_out))
        .route("/login/oidc", get(oidc::start))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/mentor", get(class::mentor_page))
        .route("/mentor/invite", post(enrol::invite))
        .route("/mentor/send", post(class::send_class))
        .route("/mentor/invitations/{id}", get(enrol::invitation_page))
        .route(
            "/mentor/invitations/{id}/state",
            get(enrol::invitation_state),
        )
        .route("/mentor/invitations/{id}/confirm", post(enrol::confirm))
        .route("/i/{token}", get(enrol::student_page))
        .route("/i/{token}/key", post(enrol::hand_in_key))
        .route("/i/{token}/state", get(enrol::student_state))
        .route("/student", get(student::sign_in_page))
        .route("/student/challenge", post(student::challenge))
        .route("/student/sign-in", post(student::sign_in))
        .route(
            "/student/passport",
            get(passport::passport_page).post(passport::save_passport),
        )
        .route("/student/sign", get(student::sign_page).post(student::sign))
        .route("/student/track", post(passport::choose_track))
        .route(
            "/student/consent",
            get(consent::consent_page).post(consent::prepare),
        )
        .route("/student/consent/sign", post(consent::sign))
        .route("/student/consents", get(trail::consents_page))
        .route(
            "/student/consents/{grant}/withdraw",
            get(trail::withdraw_page),
        )
        .route("/student/withdraw", post(trail::withdraw))
        .route("/student/trail", get(trail::trail_page))
        .route(
            "/student/devices",
            get(keys::devices_page).post(keys::student_new_link),
        )
        .route("/student/devices/{id}", get(keys::student_link_page))
        .route("/student/devices/{id}/state", get(keys::student_link_state))
        .route("/student/devices/{id}/confirm", post(keys::student_confirm))
        .route("/k/{token}", get(keys::link_page))
        .route("/k/{token}/key", post(keys::link_key))
        .route("/k/{token}/state", get(keys::link_state))
        .route(
            "/mentor/students/{pseudonym}/keys",
            post(keys::mentor_new_link),
        )
        .route("/mentor/keys/{id}", get(keys::mentor_link_page))
        .route("/mentor/keys/{id}/state", get(keys::mentor_link_state))
        .route("/mentor/keys/{id}/confirm", post(keys::mentor_confirm))
        .route("/guardian", get(guardian::sign_in_page))
        .route("/guardian/challenge", post(student::challenge))
        .route("/guardian/sign-in", post(guardian::sign_in))
        .route("/guardian/waiting", get(guardian::waiting_page))
        .route("/guardian/waiting/{id}", get(guardian::item_page))
        .route("/guardian/waiting/{id}/sign", post(guardian::cosign))
        .route("/guardian/waiting/{id}/decline", post(guardian::decline))
        .route("/guardian/consents", get(trail::guardian_consents_page))
        .route(
            "/guardian/consents/{grant}/withdraw",
            get(trail::guardian_withdraw_page),
        )
        .route("/guardian/withdraw", post(trail::guardian_withdraw))
        .route("/inbox", get(inbox::inbox_page))
        .route("/inbox/{grant}", get(inbox::passport_page))
        .route("/inbox/{grant}/status", post(inbox::set_status))
        .route("/inbox/fetch/{grant}", post(inbox::fetch))
        .route("/inbox/code", post(pickup::redeem))
        .route("/student/pickup/prepare", post(pickup::prepare))
        .route("/student/pickup/sign", post(pickup::sign))
        .route("/student/pickup/{grant}", get(pickup::pickup_page))
        .route("/handovers", get(handovers::handovers_page))
        .route("/handovers.csv", get(handovers::handovers_csv))
        .route("/audit", get(audit::audit_page))
        .route("/audit.csv", get(audit::audit_csv))
        .route("/assets/{name}", get(asset))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(web.clone(), frame))
        .with_state(web)
}

/// Serves the web app on `listen` until `stop` turns true; writes its address to `url_file`.
/// With the school's certificate (`tls`) it speaks HTTPS on any address; without, plain HTTP on
/// loopback only, behind the school's own HTTPS reverse proxy.
pub async fn start(
    listen: SocketAddr,
    url_file: Option<&Path>,
    tls: Option<&tls::WebTls>,
    oidc: Option<oidc::OidcConfig>,
    core: Arc<NodeCore>,
    hub: tonic::transport::Channel,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    if tls.is_none() && !listen.ip().is_loopback() {
        anyhow::bail!(
            "web_listen {listen} is not a loopback address: without the school's certificate \
             (web_tls_cert and web_tls_key) the web app speaks plain HTTP, so it listens on this \
             machine only, behind the school's own HTTPS reverse proxy"
        );
    }
    let config = tls.map(tls::server_config).transpose()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the web app to {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if config.is_some() { "https" } else { "http" };
    if let Some(path) = url_file {
        std::fs::write(path, format!("{scheme}://{addr}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(%addr, scheme, "web app serving");
    let oidc = oidc.map(oidc::Oidc::new).transpose()?;
    let app = router(core, config.is_some(), oidc, hub);
    let shutdown = async move {
        let _ = stop.wait_for(|v| *v).await;
    };
    Ok(tokio::spawn(async move {
        let served = match config {
            Some(config) => match tls::TlsListener::new(listener, config) {
                Ok(listener) => {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .await
                }
                Err(e) => Err(e),
            },
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "the web app stopped");
        }
    }))
}

/// What every response carries: a strict content policy (only this site's own script and
/// style, no frames, forms only to here), no referrer (a link's token must not leak), and a
/// kind page where the framework would answer a too-large form in plain text. `?lang=en` (or
/// `nl`) on any page switches the language and remembers it in a cookie.
async fn frame(State(web): State<Shared>, mut request: Request, next: Next) -> Response {
    let chosen = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("lang="))
            .filter(|l| *l == "nl" || *l == "en")
            .map(str::to_string)
    });
    if let Some(l) = &chosen
        && let Ok(v) = HeaderValue::from_str(&format!("lang={l}"))
    {
        request.headers_mut().insert(header::COOKIE, v);
    }
    let lang = Lang::of(request.headers());
    let mut response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response = page::error(
            lang,
            &web.school(),
            StatusCode::PAYLOAD_TOO_LARGE,
            &t(lang, "error_too_big"),
            None,
        );
    }
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if web.https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if let Some(l) = chosen
        && let Ok(v) = HeaderValue::from_str(&format!(
            "lang={l}; Path=/; Max-Age=31536000; SameSite=Strict"
        ))
    {
        h.append(header::SET_COOKIE, v);
    }
    response
}

async fn home(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    if let Some(s) = staff::signed_in(&web, &headers).await {
        return Redirect::to(staff::home_of(&s.role)).into_response();
    }
    let school = web.school();
    let body = html! {
        p.lead { (t(lang, "home_student")) }
        p { (t(lang, "home_staff")) }
        p { a.button href="/login" { (t(lang, "sign_in")) } }
    };
    page::respond(
        StatusCode::OK,
        page::page(
            lang,
            &school,
            &tf(lang, "home_title", &[("school", &school)]),
            body,
        ),
    )
}

async fn not_found(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    page::error(
        lang,
        &web.school(),
        StatusCode::NOT_FOUND,
        &t(lang, "error_not_found"),
        None,
    )
}

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "enrol.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/enrol.js"),
    ),
    (
        "student.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/student.js"),
    ),
    (
        "scan.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/scan.js"),
    ),
    // Vendored, with their licences beside them in assets/vendor: a QR code maker for the
    // student's phone (MIT) and a QR code reader for the intaker's camera (Apache-2.0).
    (
        "qrcodegen.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/qrcodegen.js"),
    ),
    (
        "jsQR.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/vendor/jsQR.js"),
    ),
    (
        "manifest.json",
        "application/manifest+json",
        include_str!("assets/manifest.json"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
