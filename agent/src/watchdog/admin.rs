//! The watchdog's admin API, on the agent's HTTP listener beside
//! `/metrics`: `GET /watchdog/apps` lists each app's phase and counters,
//! `POST /watchdog/apps/<name>/rearm` re-arms an exhausted app. Bearer
//! tokens of `watchdog.admin_tokens` (the collector's and alerter's role
//! token format): any role may list, only `admin` may re-arm.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use livehead_common::roles::{Caller, RoleTokens};
use serde_json::json;

use super::run::Control;
use super::state::AppPhase;

/// The configuration key of the tokens, named in refusals.
pub const TOKENS_KEY: &str = "watchdog.admin_tokens";

/// What the API steers: the running watchdog's control and the tokens,
/// both replaced when a config reload restarts the watchdog.
#[derive(Debug, Clone, Default)]
pub struct Admin(Arc<RwLock<Current>>);

#[derive(Debug, Clone, Default)]
struct Current {
    control: Option<Control>,
    tokens: Arc<RoleTokens>,
}

impl Admin {
    /// Points the API at a (re)started watchdog; `None` when none runs.
    pub fn replace(&self, control: Option<Control>, tokens: RoleTokens) {
        if let Ok(mut current) = self.0.write() {
            *current = Current {
                control,
                tokens: Arc::new(tokens),
            };
        }
    }

    fn current(&self) -> Current {
        self.0.read().map(|c| c.clone()).unwrap_or_default()
    }
}

/// The routes, to merge with the metrics router.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/watchdog/apps", get(list))
        .route("/watchdog/apps/{name}/rearm", post(rearm))
        .with_state(admin)
}

async fn list(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    let current = admin.current();
    if let Err((status, message)) = authenticate(&current.tokens, &headers, false) {
        return error(status, message);
    }
    let apps = current
        .control
        .map(|c| c.statuses.list(Instant::now()))
        .unwrap_or_default();
    (StatusCode::OK, Json(json!({ "ok": true, "apps": apps }))).into_response()
}

async fn rearm(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let current = admin.current();
    let caller = match authenticate(&current.tokens, &headers, true) {
        Ok(caller) => caller,
        Err((status, message)) => return error(status, message),
    };
    let Some(control) = current.control else {
        return error(StatusCode::NOT_FOUND, format!("no watched app {name:?}"));
    };
    let Some(status) = control.statuses.get(&name, Instant::now()) else {
        return error(StatusCode::NOT_FOUND, format!("no watched app {name:?}"));
    };
    if status.state != AppPhase::Exhausted {
        let state = serde_json::to_value(status.state).unwrap_or_default();
        return error(
            StatusCode::CONFLICT,
            format!("app {name:?} is {state}, not exhausted: nothing to re-arm"),
        );
    }
    control.rearm.app(&name);
    tracing::info!(app = %name, by = %caller, "watchdog: re-arm requested through the admin API");
    (
        StatusCode::OK,
        Json(json!({ "ok": true, "app": name, "rearmed": true })),
    )
        .into_response()
}

/// The caller's token name, or the refusal: 403 without tokens (naming
/// the key to set) or without the admin role when `admin`, 401 for a
/// missing or wrong token.
fn authenticate(
    tokens: &RoleTokens,
    headers: &HeaderMap,
    admin: bool,
) -> Result<String, (StatusCode, String)> {
    if tokens.is_empty() {
        return Err((
            StatusCode::FORBIDDEN,
            format!("the watchdog admin API is disabled: set {TOKENS_KEY} in the agent's config"),
        ));
    }
    let caller: Caller<'_> = tokens
        .authenticate(headers)
        .map_err(|refusal| (refusal.status(), refusal.message().to_owned()))?;
    if admin && !caller.is_admin() {
        return Err((
            StatusCode::FORBIDDEN,
            format!("token {:?} is not an admin token", caller.name),
        ));
    }
    Ok(caller.name.to_owned())
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "ok": false, "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use livehead_common::Shutdown;
    use livehead_common::roles::RoleToken;

    use super::*;
    use crate::watchdog::Rearm;
    use crate::watchdog::state::{AppState, Limits};
    use crate::watchdog::status::Statuses;

    const ADMIN: &str = "admin-secret";
    const READER: &str = "read-secret";

    fn tokens() -> RoleTokens {
        let token = |name: &str, sha256: &str, role: &str, sites: &[&str]| RoleToken {
            name: name.into(),
            sha256: sha256.into(),
            role: role.into(),
            sites: sites.iter().map(|&s| s.to_owned()).collect(),
        };
        RoleTokens::new(
            TOKENS_KEY,
            &[
                token(
                    "ops",
                    "16175223c8ddce5ace0493c948569c211b03c4c6bb3d3e484434999448cffe01",
                    "admin",
                    &[],
                ),
                token(
                    "dash",
                    "f0fd6c09405cb6d3707d04067d8509cb924e62ae66fa02067c2bc467b0d721e4",
                    "readonly",
                    &["*"],
                ),
            ],
        )
        .expect("valid tokens")
    }

    /// "web" exhausted, "db" watching.
    fn control() -> Control {
        let statuses = Statuses::default();
        let mut web = AppState::new(Limits {
            failure_threshold: 1,
            cooldown: Duration::ZERO,
            max_recoveries: 1,
            settle: Duration::ZERO,
        });
        let now = Instant::now();
        web.on_check(now, false);
        web.recovery_finished(now);
        web.on_check(now, false);
        statuses.set_state("web", &web);
        statuses.set_state("db", &AppState::new(Limits::from(&Default::default())));
        Control {
            rearm: Rearm::default(),
            statuses,
            stop: Shutdown::new(),
        }
    }

    struct Server {
        url: String,
        shutdown: Shutdown,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn serve(admin: Admin) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = Shutdown::new();
        tokio::spawn(livehead_common::metrics::serve(
            listener,
            router(admin),
            shutdown.clone(),
        ));
        Server { url, shutdown }
    }

    async fn call(
        server: &Server,
        post: bool,
        path: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let client = livehead_testkit::http_client();
        let url = format!("{}{path}", server.url);
        let mut request = if post {
            client.post(url)
        } else {
            client.get(url)
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        let body = response.json().await.expect("json body");
        (status, body)
    }

    #[tokio::test]
    async fn without_tokens_both_routes_answer_403_naming_the_setting() {
        let admin = Admin::default();
        admin.replace(Some(control()), RoleTokens::default());
        let server = serve(admin).await;
        for (post, path) in [
            (false, "/watchdog/apps"),
            (true, "/watchdog/apps/web/rearm"),
        ] {
            let (status, body) = call(&server, post, path, Some(ADMIN)).await;
            assert_eq!(status, 403, "{path}");
            assert!(
                body["error"].as_str().expect("error").contains(TOKENS_KEY),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn apps_are_listed_with_their_phase_and_counters() {
        let admin = Admin::default();
        admin.replace(Some(control()), tokens());
        let server = serve(admin).await;
        assert_eq!(call(&server, false, "/watchdog/apps", None).await.0, 401);
        assert_eq!(
            call(&server, false, "/watchdog/apps", Some("nope")).await.0,
            401
        );
        let (status, body) = call(&server, false, "/watchdog/apps", Some(READER)).await;
        assert_eq!(status, 200, "{body}");
        let apps = body["apps"].as_array().expect("apps");
        let states: Vec<(&str, &str)> = apps
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().expect("name"),
                    a["state"].as_str().expect("state"),
                )
            })
            .collect();
        assert_eq!(states, [("db", "watching"), ("web", "exhausted")]);
        assert_eq!(apps[1]["failed_recoveries"], 1);
        assert_eq!(apps[1]["consecutive_failures"], 1);
    }

    #[tokio::test]
    async fn rearm_needs_an_admin_token_a_known_app_and_an_exhausted_one() {
        let admin = Admin::default();
        let control = control();
        let mut requests = control.rearm.subscribe();
        admin.replace(Some(control), tokens());
        let server = serve(admin).await;
        let rearm = |app: &str| format!("/watchdog/apps/{app}/rearm");
        assert_eq!(call(&server, true, &rearm("web"), None).await.0, 401);
        let (status, body) = call(&server, true, &rearm("web"), Some(READER)).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = call(&server, true, &rearm("cache"), Some(ADMIN)).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = call(&server, true, &rearm("db"), Some(ADMIN)).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"].as_str().expect("error").contains("watching"),
            "{body}"
        );
        assert!(requests.try_recv().is_err(), "nothing re-armed yet");
        let (status, body) = call(&server, true, &rearm("web"), Some(ADMIN)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(requests.try_recv().expect("re-arm sent"), "web");
    }
}
