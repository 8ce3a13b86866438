//! The coordinators' web dashboard, served by the hub over HTTPS on a port of its own. Its
//! page, script and style are compiled into the binary (no CDN: a region may run offline). The
//! page itself holds no data; every number comes from `/api/stats`, which answers only to a
//! session token the authority issued to a coordinator (`overstap authority dashboard-token`),
//! carried in an HttpOnly cookie or an `Authorization: Bearer` header. Nothing is anonymous.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ed25519_dalek::VerifyingKey;
use overstap_proto::pb::DashboardToken;
use overstap_words::{Lang, t};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::stats::StatsService;
use crate::store::HubStore;
use crate::tls::Greeted;

mod export;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");
const PRINT_SCRIPT: &str = include_str!("dashboard/print.js");

/// The cookie that carries a session token.
pub const COOKIE: &str = "overstap_session";

struct Web<S> {
    stats: StatsService<S>,
    authority: VerifyingKey,
}

/// A refusal: a status and a plain reason, answered as JSON.
struct Refusal(StatusCode, String);

fn refuse(status: StatusCode, reason: impl std::fmt::Display) -> Refusal {
    Refusal(status, reason.to_string())
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({ "error": self.1 })),
        )
            .into_response()
    }
}

impl<S: HubStore> Web<S> {
    /// The session a request carries (cookie or bearer header), checked now.
    fn session(&self, headers: &HeaderMap) -> Result<DashboardToken, Refusal> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")));
        let Some(token) = bearer.or(cookie) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "sign in with the dashboard token the region's authority gave you",
            ));
        };
        self.check(token)
    }

    fn check(&self, token: &str) -> Result<DashboardToken, Refusal> {
        let directory = self
            .stats
            .hub()
            .directory()
            .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e))?;
        overstap_proto::session::verify_token(
            token,
            &self.authority,
            &directory,
            self.stats.hub().state().now(),
        )
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e))
    }
}

#[derive(serde::Deserialize)]
struct Period {
    /// A school year ("2025-2026") or a quarter ("2026-Q1").
    period: Option<String>,
    /// Or: from this time (Unix seconds) until now; neither: the last 365 days.
    #[serde(default)]
    since: i64,
    lang: Option<String>,
}

impl<S: HubStore> Web<S> {
    /// The statistics of the period asked for, as JSON, for the session's coordinator; with
    /// the period's name and the periods there are to choose from.
    async fn period_json(
        &self,
        headers: &HeaderMap,
        asked: &Period,
    ) -> Result<(serde_json::Value, String, DashboardToken), Refusal> {
        let session = self.session(headers)?;
        let (name, since, until) = match asked.period.as_deref().filter(|p| !p.is_empty()) {
            Some(name) => {
                let p = crate::stats::period::Period::parse(name)
                    .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
                (p.name, p.since, p.until)
            }
            None => (String::new(), asked.since, 0),
        };
        let stats = match self.stats.compute(&session.org_id, since, until).await {
            Ok(s) => s,
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                return Err(refuse(StatusCode::BAD_REQUEST, status.message()));
            }
            Err(status) => return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, status.message())),
        };
        let mut body = crate::stats::to_json(&stats);
        body["signed_in_as"] = session.org_id.clone().into();
        body["period"] = name.clone().into();
        body["periods"] = crate::stats::period::Period::choices(self.stats.hub().state().now())
            .into_iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .into();
        Ok((body, name, session))
    }
}

async fn stats<S: HubStore>(
    State(web): State<Arc<Web<S>>>,
    Query(period): Query<Period>,
    headers: HeaderMap,
) -> Response {
    match web.period_json(&headers, &period).await {
        Ok((body, ..)) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response(),
        Err(r) => r.into_response(),
    }
}

/// The period's numbers as CSV, to download.
async fn export_csv<S: HubStore>(
    State(web): State<Arc<Web<S>>>,
    Query(period): Query<Period>,
    headers: HeaderMap,
) -> Response {
    match web.period_json(&headers, &period).await {
        Ok((body, name, _)) => {
            let label = if name.is_empty() { "last-year" } else { &name };
            let disposition = format!("attachment; filename=\"overstap-{label}.csv\"");
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                export::csv(&body, label),
            )
                .into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// The period's numbers as a page to print.
async fn print<S: HubStore>(
    State(web): State<Arc<Web<S>>>,
    Query(period): Query<Period>,
    headers: HeaderMap,
) -> Response {
    let lang = match period.lang.as_deref() {
        Some("en") => Lang::En,
        Some("nl") => Lang::Nl,
        _ => Lang::of(&headers),
    };
    match web.period_json(&headers, &period).await {
        Ok((body, name, session)) => {
            let today = crate::stats::periods(web.stats.hub().state().now())[0]
                .1
                .clone();
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                export::print_page(lang, &body, &name, &session.org_id, &today),
            )
                .into_response()
        }
        Err(r) if r.0 == StatusCode::UNAUTHORIZED => {
            // A person followed a link: the dashboard's page, where they can sign in.
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
        }
        Err(r) => r.into_response(),
    }
}

/// Exchanges a token for a session cookie that lasts as long as the token.
async fn sign_in<S: HubStore>(State(web): State<Arc<Web<S>>>, body: String) -> Response {
    let token = body.trim();
    match web.check(token) {
        Ok(t) => {
            let max_age = (t.expires_at - web.stats.hub().state().now()).max(0);
            let cookie = format!(
                "{COOKIE}={token}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Strict"
            );
            tracing::info!(coordinator = %t.org_id, "dashboard session started");
            (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn sign_out() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"),
        )],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LangChoice {
    lang: Option<String>,
}

/// The page, in the visitor's language: `?lang=` (kept in a cookie), else the cookie, else the
/// browser's, else Dutch. Every `{{key}}` in it is a text from the shared catalogue; the texts
/// its script draws with travel in a JSON block it reads.
async fn index(headers: HeaderMap, Query(choice): Query<LangChoice>) -> Response {
    let chosen = match choice.lang.as_deref() {
        Some("nl") => Some(Lang::Nl),
        Some("en") => Some(Lang::En),
        _ => None,
    };
    let lang = chosen.unwrap_or_else(|| Lang::of(&headers));
    let html = render(lang);
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response();
    if let Some(l) = chosen
        && let Ok(v) = HeaderValue::from_str(&format!(
            "lang={}; Path=/; Max-Age=31536000; Secure; SameSite=Strict",
            l.tag()
        ))
    {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The page with every `{{key}}` filled in for `lang`.
fn render(lang: Lang) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let words = serde_json::to_string(&overstap_words::all_with_prefix(lang, "dash_"))
        .unwrap_or_else(|_| "{}".into())
        // Inside <script>, no text may close it.
        .replace("</", "<\\/");
    let mut out = String::with_capacity(INDEX.len() + words.len());
    let mut rest = INDEX;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find("}}") else {
            break;
        };
        let key = &rest[at + 2..at + end];
        match key {
            "lang" => out.push_str(lang.tag()),
            "other_lang" => out.push_str(lang.other().tag()),
            "words" => out.push_str(&words),
            key => out.push_str(&escape(&t(lang, key))),
        }
        rest = &rest[at + end + 2..];
    }
    out.push_str(rest);
    out
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Headers every answer carries: only our own scripts, never in a frame, no referrer.
async fn harden(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn router<S: HubStore>(web: Arc<Web<S>>) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/print.js",
            get(|| async { asset("text/javascript; charset=utf-8", PRINT_SCRIPT) }),
        )
        .route("/api/stats", get(stats::<S>))
        .route("/api/export.csv", get(export_csv::<S>))
        .route("/print", get(print::<S>))
        .route("/api/session", post(sign_in::<S>).delete(sign_out))
        .layer(axum::middleware::from_fn(harden))
        .with_state(web)
}

/// TLS connections for axum, with handshakes completed concurrently (see [`crate::tls`]).
struct TlsListener {
    incoming: ReceiverStream<Result<Greeted, std::io::Error>>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = Greeted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.peer_addr().unwrap_or(self.addr);
                    return (stream, peer);
                }
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// When `addr` is set: binds it, writes the bound address to `addr_file` (if given), and serves
/// the dashboard over HTTPS until `stop` turns true.
pub async fn start<S: HubStore>(
    addr: Option<SocketAddr>,
    addr_file: Option<&std::path::Path>,
    tls: rustls::ServerConfig,
    greeting_limit: std::time::Duration,
    stats: StatsService<S>,
    authority: VerifyingKey,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let (listener, bound) = crate::metrics_http::bind_announced(addr, addr_file).await?;
    tracing::info!(addr = %bound, "dashboard at https://{bound}/");
    let listener = TlsListener {
        incoming: crate::tls::incoming(listener, tls, crate::tls::Greeting::Http1, greeting_limit),
        addr: bound,
    };
    let app = router(Arc::new(Web { stats, authority }));
    Ok(Some(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })))
}
