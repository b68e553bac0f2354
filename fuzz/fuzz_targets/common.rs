//! What the targets share: the configuration they run against.

use std::sync::OnceLock;

use poormanci::config::Config;

/// Projects of the seed messages (pungi, pagure, the dev instances' `test`,
/// Jenkins' fedora-mobile) plus a namespaced one, so that seeds reach
/// `Trigger` and `BuildFinished`. `cibot` is poormanci's own user.
#[allow(dead_code)]
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

/// `/job/a/job/b` for job path `a/b`: each name, and only it, in its own
/// segment after its own `job`, so that a request goes to this job and no
/// other.
#[allow(dead_code)]
pub fn check_job_path(job: &str) {
    let path = poormanci::jenkins::job_path(job);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let names: Vec<&str> = job.split('/').collect();
    assert_eq!(segments.len(), 2 * names.len(), "{job:?} -> {path}");
    for (pair, name) in segments.chunks(2).zip(names) {
        let decoded = percent_encoding::percent_decode_str(pair[1]).decode_utf8_lossy();
        assert!(pair[0] == "job" && decoded == name, "{job:?} -> {path}");
    }
}
