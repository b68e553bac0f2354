//! `poormanci.web`: where the status page listens, the address people reach
//! it at, and how long finished runs are kept.

use std::net::SocketAddr;

use serde_json::Value;
use url::Url;

const KEY: &str = "poormanci.web";
/// The keys `poormanci.web` may hold; crate::config warns about any other.
pub const KEYS: &[&str] = &["listen", "public_url", "history_days"];
pub const DEFAULT_HISTORY_DAYS: u32 = 90;
/// Finished runs are what stops a redelivered message from building twice:
/// they are kept at least as long as seen msg_ids are.
const MIN_KEEP_DAYS: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// None: no web server (the default).
    pub listen: Option<SocketAddr>,
    /// Where people reach the pages (behind a reverse proxy); waiting flags link there.
    pub public_url: Option<Url>,
    pub history_days: u32,
}

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig { listen: None, public_url: None, history_days: DEFAULT_HISTORY_DAYS }
    }
}

impl WebConfig {
    /// How long finished runs stay in the store, in seconds.
    pub fn keep_runs_secs(&self) -> f64 {
        f64::from(self.history_days.max(MIN_KEEP_DAYS)) * 86400.0
    }

    /// The path the pages live under (`/poormanci` for `https://ci.example.org/poormanci`), "" at the root.
    pub fn base_path(&self) -> String {
        self.public_url.as_ref().map(|u| u.path().trim_end_matches('/').to_string()).unwrap_or_default()
    }
}

/// Read `poormanci.web` from the merged config; every problem, one line each
/// (an unknown key is not one: crate::config warns about it, as everywhere).
pub fn parse(root: &serde_json::Map<String, Value>) -> Result<WebConfig, Vec<String>> {
    let mut problems = Vec::new();
    let mut web = WebConfig::default();
    let section = match root.get(KEY) {
        None | Some(Value::Null) => return Ok(web),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(vec![format!("{KEY}: expected a dict")]),
    };
    for (key, value) in section {
        match (key.as_str(), value) {
            (_, Value::Null) => {}
            ("listen", Value::String(s)) => match s.parse::<SocketAddr>() {
                Ok(addr) => web.listen = Some(addr),
                Err(_) => problems.push(format!("{KEY}.listen: expected an address and port such as \"127.0.0.1:8950\", got {s:?}")),
            },
            ("public_url", Value::String(s)) => match Url::parse(s) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.username().is_empty() => web.public_url = Some(u),
                _ => problems.push(format!("{KEY}.public_url: expected an http(s) URL without query or credentials, got {s:?}")),
            },
            ("history_days", v) => match v.as_u64().filter(|d| (1..=36500).contains(d)) {
                Some(d) => web.history_days = d as u32,
                None => problems.push(format!("{KEY}.history_days: expected a whole number of days, 1 or more")),
            },
            ("listen" | "public_url", _) => problems.push(format!("{KEY}.{key}: expected a string")),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(web)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<WebConfig, Vec<String>> {
        parse(v.as_object().unwrap())
    }

    #[test]
    fn off_unless_configured() {
        assert_eq!(parse_json(json!({})).unwrap(), WebConfig::default());
        assert_eq!(WebConfig::default().history_days, 90);
    }

    #[test]
    fn a_full_section_is_read() {
        let web = parse_json(json!({"poormanci.web": {"listen": "127.0.0.1:8950", "public_url": "https://ci.example.org/poormanci/", "history_days": 10}}))
            .unwrap();
        assert_eq!(web.listen, Some("127.0.0.1:8950".parse().unwrap()));
        assert_eq!(web.base_path(), "/poormanci");
        // Never below the dedupe window.
        assert_eq!(web.keep_runs_secs(), 30.0 * 86400.0);
    }

    #[test]
    fn the_config_check_reports_them_with_the_rest() {
        let problems = crate::config::Config::from_value(&json!({
            "poormanci.pagure": {"url": "https://pagure.io", "token": "T"},
            "poormanci.jenkins": {"url": "https://jenkins.example.org"},
            "poormanci.projects": {"pungi": [{"job": "pungi-pr", "token": "B"}]},
            "poormanci.state_dir": "/nonexistent",
            "poormanci.web": {"listen": "localhost"},
        }))
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("poormanci.web.listen: expected an address and port"), "{problems:?}");
    }

    #[test]
    fn every_problem_is_named() {
        let problems =
            parse_json(json!({"poormanci.web": {"listen": "8950", "public_url": "javascript:alert(1)", "history_days": 0, "port": 1}})).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("poormanci.web.listen: expected an address")));
    }

    #[test]
    fn an_unknown_key_is_a_warning_with_the_close_match() {
        let (config, warnings) = crate::config::Config::check(&json!({
            "poormanci.pagure": {"url": "https://pagure.io", "token": "T"},
            "poormanci.jenkins": {"url": "https://jenkins.example.org"},
            "poormanci.projects": {"pungi": [{"job": "pungi-pr", "token": "B"}]},
            "poormanci.state_dir": "/nonexistent",
            "poormanci.web": {"listen": "127.0.0.1:8950", "public_ur": "https://ci.example.org"},
        }));
        assert!(config.is_ok());
        assert_eq!(warnings, ["poormanci.web.public_ur: unknown key, ignored; did you mean poormanci.web.public_url?"]);
    }
}
