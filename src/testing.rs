//! Shared helpers for the unit tests.

use crate::config::Config;
use serde_json::{json, Value};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

pub fn config() -> Config {
    Config::from_value(&json!({
        "poormanci.pagure": {"url": "https://pagure.io", "token": "PAGURE-SECRET", "user": "cibot"},
        "poormanci.jenkins": {"url": "https://jenkins.example.org", "poll_interval": 1},
        "poormanci.projects": {
            "pungi": [{"job": "pungi-pr", "token": "BEEFCAFE"}, {"job": "pungi-docs", "token": "D0C5"}],
            "rpms/python-foo": [{"job": "folder/python-foo", "token": "F00"}],
        },
        "poormanci.state_dir": "/nonexistent",
    }))
    .unwrap()
}

pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
        .collect();
    names.sort();
    names
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/{name}.json")).unwrap()).unwrap()
}
