//! What the targets share: the configuration they run against.

use std::sync::OnceLock;

use poormanci::config::Config;

/// Projects of the seed messages (pungi, pagure, the dev instances' `test`,
/// Jenkins' fedora-mobile) plus a namespaced one, so that seeds reach
/// `Trigger` and `BuildFinished`. `cibot` is poormanci's own user.
pub fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        Config::from_value(&serde_json::json!({
            "poormanci.pagure": {"url": "https://pagure.io", "token": "T", "user": "cibot"},
            "poormanci.jenkins": {"url": "https://jenkins.example.org"},
            "poormanci.projects": {
                "pungi": [{"job": "pungi-pr", "token": "T"}, {"job": "pungi-docs", "token": "T"}],
                "pagure": [{"job": "pagure-pr", "token": "T"}],
                "test": [{"job": "test-pr", "token": "T"}],
                "rpms/python-foo": [{"job": "folder/python-foo", "token": "T"}],
                "fedora-mobile": [{"job": "fedora-mobile", "token": "T"}],
            },
            "poormanci.state_dir": "/nonexistent",
        }))
        .expect("the fuzz config is valid")
    })
}
