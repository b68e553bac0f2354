//! What poormanci reads from Jenkins' and Pagure's HTTP answers through its
//! public helpers: status sorting, Location, Retry-After, JSON bodies,
//! error details, job paths and result names.
//!
//! Input: 2 bytes of status, then a Location line, a Retry-After line, and
//! the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use poormanci::http::{self, Answer};
use poormanci::jenkins::{self, BuildResult};
use poormanci::pagure::FlagStatus;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};

#[path = "common.rs"]
mod common;

fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = StatusCode::from_u16(100 + u16::from_be_bytes([data[0], data[1]]) % 900).expect("100..999");
    let (location, rest) = line(&data[2..]);
    let (retry_after, body) = line(rest);
    let mut headers = HeaderMap::new();
    for (name, v) in [(LOCATION, location), (RETRY_AFTER, retry_after)] {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.insert(name, v);
        }
    }
    let a = Answer { status, headers, body: body.to_vec() };
    let request = Url::parse("https://jenkins.example.org/job/pungi-pr/buildWithParameters").unwrap();
    if let Some(to) = a.location(&request) {
        let shown = http::shown_url(&to);
        assert!(!shown.contains('?') && !shown.contains('#'), "{shown}");
    }
    let _ = a.retry_after();
    let _ = a.json::<serde_json::Value>("GET /x");
    let text = String::from_utf8_lossy(body);
    let _ = a.mentions(&text.chars().take(8).collect::<String>());
    let e = http::status_error("GET /x", &a, &http::detail(&text));
    assert_eq!(e.is_retry(), http::is_retryable(status));
    assert!(!e.message().contains('\n'), "{e:?}");
    let d = http::detail(&text);
    assert!(!d.contains('\n') && d.len() <= 300 + '…'.len_utf8(), "{d:?}");
    let loc = String::from_utf8_lossy(location);
    // Job names as config should accept them (no empty, "." or ".." name,
    // no control character, which URL parsing drops) each stay one segment
    // under their own /job/; the config target checks that config does.
    if loc.split('/').all(|n| !n.is_empty() && n != "." && n != "..") && !loc.chars().any(char::is_control) {
        common::check_job_path(&loc);
    }
    let joined = http::join(&request, loc.split('/'));
    let _ = http::describe(&reqwest::Method::GET, &joined);
    let r = BuildResult::parse(&loc);
    assert_eq!(BuildResult::parse(r.as_str()), r);
    if let Some(f) = FlagStatus::parse(&loc) {
        assert_eq!(FlagStatus::parse(f.as_str()), Some(f));
    }
});
