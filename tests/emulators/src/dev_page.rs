//! A development page the local gateway serves at `GET /` (API Gateway serves
//! none): the dev user's tasks, refreshed from the gateway's change feed,
//! beside the ChatKit web component configured against the local ChatKit
//! endpoint. The page is `dev_page.html`, one self-contained file (vanilla
//! JS, no build step); its settings (a fresh token, the paths) are injected
//! as JSON each time it is served.

use std::sync::Arc;

use bytes::Bytes;
use hyper::Response;
use hyper::header::HeaderValue;
use serde_json::json;

use crate::http_server::{Body, full};
use crate::tokens::DevAuth;

/// The page, with `/*CONFIG*/null` where its settings go.
const HTML: &str = include_str!("dev_page.html");

/// Where the page's settings are injected in [`HTML`].
const CONFIG_SLOT: &str = "/*CONFIG*/null";

/// The ChatKit web component's loader on OpenAI's CDN (it cannot be
/// self-hosted or pinned).
pub const CHATKIT_SCRIPT: &str = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js";

/// The domain key the page gives ChatKit: a placeholder, as in OpenAI's
/// samples (a page on localhost needs no registered domain).
pub const LOCAL_DOMAIN_KEY: &str = "domain_pk_localhost_dev";

/// The REST path listing the user's tasks.
pub const TASKS_PATH: &str = "/api/v1/tasks";

/// What the page shows and how it authenticates.
#[derive(Clone)]
pub struct DevPage {
    /// Mints the bearer token the page uses, once per page load (so a page
    /// loaded from a long-running stack never starts with an expired one).
    token: Arc<dyn Fn() -> String + Send + Sync>,
    /// The user the token names (shown on the page).
    pub user: String,
    /// The REST path listing the user's tasks (default [`TASKS_PATH`]).
    pub tasks_path: String,
}

impl std::fmt::Debug for DevPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPage")
            .field("user", &self.user)
            .field("tasks_path", &self.tasks_path)
            .finish_non_exhaustive()
    }
}

impl DevPage {
    /// A page acting as `user`, with tokens signed by `auth` (valid 12 h).
    pub fn new(auth: DevAuth, user: &str) -> Self {
        let sub = user.to_owned();
        Self {
            token: Arc::new(move || auth.token(&sub)),
            user: user.to_owned(),
            tasks_path: TASKS_PATH.to_owned(),
        }
    }

    /// The page's settings: the token, the user, and the paths of the task
    /// list, the ChatKit endpoint (`None`: the page says there is none) and
    /// the change feed; the page makes URLs of them on its own origin.
    pub fn config(&self, chatkit_path: Option<&str>, changes_path: &str) -> serde_json::Value {
        json!({
            "token": (self.token)(),
            "user": self.user,
            "tasksPath": self.tasks_path,
            "chatkitPath": chatkit_path,
            "changesPath": changes_path,
            "chatkitScript": CHATKIT_SCRIPT,
            "domainKey": LOCAL_DOMAIN_KEY,
        })
    }

    /// The page's HTML with [`DevPage::config`] injected.
    pub fn html(&self, chatkit_path: Option<&str>, changes_path: &str) -> String {
        HTML.replacen(
            CONFIG_SLOT,
            &script_json(&self.config(chatkit_path, changes_path)),
            1,
        )
    }

    /// The page as an HTTP answer (never cached: each load gets a fresh token).
    pub fn response(&self, chatkit_path: Option<&str>, changes_path: &str) -> Response<Body> {
        let html = self.html(chatkit_path, changes_path);
        let mut resp = Response::new(full(Bytes::from(html)));
        let headers = resp.headers_mut();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        resp
    }
}

/// JSON that is safe inside a `<script>` element: no `<` (so no `</script>`
/// or `<!--`), and no U+2028/U+2029 (line breaks to older JS parsers).
fn script_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_its_settings_once_as_json() {
        assert_eq!(HTML.matches(CONFIG_SLOT).count(), 1);
        let page = DevPage::new(DevAuth::default(), "dev-user");
        let html = page.html(Some("/api/v1/chatkit"), "/_local/changes");
        assert!(!html.contains(CONFIG_SLOT));
        let start = html.find("const CONFIG = ").unwrap() + "const CONFIG = ".len();
        let end = start + html[start..].find(";\n").unwrap();
        let config: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(config["user"], "dev-user");
        assert_eq!(config["tasksPath"], TASKS_PATH);
        assert_eq!(config["chatkitPath"], "/api/v1/chatkit");
        assert_eq!(config["changesPath"], "/_local/changes");
        assert_eq!(config["chatkitScript"], CHATKIT_SCRIPT);
        assert_eq!(config["token"].as_str().unwrap().split('.').count(), 3);
        assert!(html.contains("<openai-chatkit"));
    }

    #[test]
    fn injected_json_cannot_end_the_script() {
        let value = json!({ "user": "</script><script>alert(1)</script>\u{2028}" });
        let text = script_json(&value);
        assert!(!text.contains('<'), "{text}");
        assert!(!text.contains('\u{2028}'), "{text}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            value
        );
    }

    #[test]
    fn each_load_gets_a_fresh_token_for_the_user() {
        let auth = DevAuth::default();
        let page = DevPage::new(auth.clone(), "alice");
        let token = page.config(None, "/c")["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(auth.secret.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(
            page.config(None, "/c")["chatkitPath"],
            serde_json::Value::Null
        );
    }
}
