//! The `poormanci.*` config keys: `Config::from_value` names every problem
//! and never panics, whatever the JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use poormanci::config::Config;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    match Config::from_value(&v) {
        Ok(cfg) => {
            assert_eq!(cfg.topics().len(), 2);
            assert!(cfg.jenkins.max_requests_per_second > 0.0);
            for (project, jobs) in &cfg.projects {
                assert!(!jobs.is_empty(), "{project}: no jobs");
                // A job listed twice would be triggered twice for one commit.
                let names: std::collections::HashSet<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
                assert_eq!(names.len(), jobs.len(), "{project}: a job is listed twice");
                for j in jobs {
                    assert!(cfg.job(project, &j.job).is_some());
                    assert!(cfg.jobs_named(&j.display_name).count() >= 1);
                    // The job's URL path names this job, not another.
                    common::check_job_path(&j.job);
                }
            }
            let _ = format!("{cfg:?}");
        }
        Err(problems) => assert!(!problems.is_empty() && problems.iter().all(|p| !p.is_empty())),
    }
});
