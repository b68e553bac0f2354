//! What the Pagure and Jenkins clients share: building the reqwest client,
//! reading answers with a size cap, and sorting failures into "try again
//! later" and "give up".
//!
//! Every message built here names the request as `METHOD /path` only: no
//! host, query string, header or body, so none can carry a credential.

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::redirect::Policy;
use reqwest::{Certificate, Client, ClientBuilder, Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::PeerConfig;

pub const USER_AGENT: &str = concat!("poormanci/", env!("CARGO_PKG_VERSION"));

/// How much of an error answer we read: enough for any JSON error or the
/// start of an HTML page, and a peer sending gigabytes cannot hurt us.
pub const ERROR_BODY_CAP: usize = 64 * 1024;

/// Longest piece of peer-supplied text put into one message.
const DETAIL_CAP: usize = 300;

/// Why a call to a peer failed. The message is one line, safe to log.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// Worth trying again later: the peer is down, slow, overloaded or busy.
    #[error("{0}")]
    Retry(String),
    /// Will not get better by waiting: wrong config or credentials, no such
    /// thing, or an answer that is not the documented shape.
    #[error("{0}")]
    Fatal(String),
    /// Refused for authorization (401, 403): fixed by a new token or ACL,
    /// not by waiting, but worth trying again once it is fixed.
    #[error("{0}")]
    Unauthorized(String),
}

impl PeerError {
    pub fn is_retry(&self) -> bool {
        matches!(self, PeerError::Retry(_))
    }

    pub fn message(&self) -> &str {
        match self {
            PeerError::Retry(m) | PeerError::Fatal(m) | PeerError::Unauthorized(m) => m,
        }
    }

    /// The variant an HTTP status deserves, with the given message.
    pub fn for_status(status: StatusCode, message: String) -> PeerError {
        if is_retryable(status) {
            PeerError::Retry(message)
        } else {
            PeerError::Fatal(message)
        }
    }
}

/// Statuses that may well be different if asked again later.
pub fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS
        )
}

/// Redirects followed in a row at most (same origin only).
const MAX_REDIRECTS: usize = 5;

/// Follow a redirect only to the configured peer's own origin (scheme, host
/// and port): another host's answer is not believed, and a 307/308 would
/// re-send the request body (a job token) there. The error names the origin
/// only, never a path or query that could hold a secret.
fn same_origin_redirects(peer: &Url) -> Policy {
    let origin = peer.origin();
    Policy::custom(move |attempt| {
        let to = attempt.url().origin();
        if to != origin {
            let shown = to.ascii_serialization();
            attempt.error(format!("redirected to another host, {shown}; not followed (is the configured url the peer's own address?)"))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// A client builder with the peer's timeouts and TLS trust, following
/// redirects within the peer's origin only; callers add their own settings
/// (Jenkins: no redirects, cookies) and build it.
pub fn builder(peer: &PeerConfig) -> Result<ClientBuilder, String> {
    let mut b = Client::builder()
        .connect_timeout(peer.timeout.min(Duration::from_secs(10)))
        .timeout(peer.timeout)
        .redirect(same_origin_redirects(&peer.url))
        .user_agent(USER_AGENT);
    if let Some(path) = &peer.ca_bundle {
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| format!("ca_bundle {shown}: {e}"))?;
        let certs = Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_bundle {shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("ca_bundle {shown}: no PEM certificate in it"));
        }
        // Extra roots next to the system's, not instead of them.
        b = b.tls_certs_merge(certs);
    }
    if peer.insecure {
        warn!("TLS verification is OFF for {} (insecure: True)", shown_url(&peer.url));
        b = b.tls_danger_accept_invalid_certs(true);
    }
    Ok(b)
}

pub fn client(peer: &PeerConfig) -> Result<reqwest::Client, String> {
    builder(peer)?.build().map_err(|e| format!("{}: cannot build an HTTP client: {}", shown_url(&peer.url), chain(&e)))
}

/// A URL for logs: no user:password@, query or fragment.
pub fn shown_url(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// `METHOD /path`, the way every message names a request.
pub fn describe(method: &Method, url: &Url) -> String {
    format!("{method} {}", url.path())
}

/// `base` with path segments appended, each percent-encoded as one segment
/// (so `a/b` given as one segment stays one). A trailing `""` gives a
/// trailing slash. Any query or fragment of `base` is dropped.
pub fn join<'a>(base: &Url, segments: impl IntoIterator<Item = &'a str>) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    // Only cannot-be-a-base URLs (mailto:) fail here; config allows http(s) only.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// A transport failure (no HTTP answer) as a PeerError.
pub fn from_reqwest(what: &str, e: reqwest::Error) -> PeerError {
    let e = e.without_url();
    if e.is_builder() || e.is_redirect() {
        return PeerError::Fatal(format!("{what}: {}", chain(&e)));
    }
    if e.is_timeout() {
        return PeerError::Retry(format!("{what}: timed out"));
    }
    // Refused, reset, DNS, TLS handshake, body cut short: the peer or the
    // network may be back later; the worker's retry deadline bounds it.
    PeerError::Retry(format!("{what}: {}", chain(&e)))
}

/// An error and its sources on one line: the innermost cause (say
/// "Connection refused") is what an operator needs to see.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    one_line(&out, usize::MAX)
}

/// `s` on one line, cut to about `max` bytes.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// A whole HTTP answer. A success body was read up to the caller's cap (more
/// is an error); an error body up to ERROR_BODY_CAP (more is dropped).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Send `req` to `peer` ("jenkins", "pagure": counted by it) and read its answer; `cap` bounds a success body.
pub async fn send(peer: &str, what: &str, req: RequestBuilder, cap: usize) -> Result<Answer, PeerError> {
    let sent = req.send().await;
    crate::web::metrics::request(peer, sent.as_ref().ok().map(|r| r.status().as_u16()));
    let mut resp = sent.map_err(|e| from_reqwest(what, e))?;
    let status = resp.status();
    debug!("{what}: {status}");
    let success = status.is_success();
    let limit = if success { cap } else { ERROR_BODY_CAP };
    let too_big = || PeerError::Fatal(format!("{what}: {status}: answer larger than {limit} bytes"));
    if success && resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| from_reqwest(what, e))? {
        if body.len() + chunk.len() > limit {
            if success {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk[..limit - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, headers: resp.headers().clone(), body })
}

impl Answer {
    /// The body as `T`; anything else is Fatal: the peer is not what we think.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, PeerError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PeerError::Fatal(format!(
                "{what}: {}: the answer is not the documented JSON ({})",
                self.status,
                one_line(&e.to_string(), DETAIL_CAP)
            ))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Location`, resolved against the request URL.
    pub fn location(&self, request: &Url) -> Option<Url> {
        request.join(self.header(LOCATION.as_str())?).ok()
    }

    /// `Retry-After` in seconds (the HTTP-date form is rare from these peers).
    pub fn retry_after(&self) -> Option<Duration> {
        self.header(RETRY_AFTER.as_str())?.trim().parse().ok().map(Duration::from_secs)
    }

    /// Whether the (error) body mentions `needle`, ignoring case.
    pub fn mentions(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.body).to_lowercase().contains(&needle.to_lowercase())
    }
}

/// A non-2xx answer as a PeerError: `{what}: {status}[: {detail}]`, plus the
/// Retry-After the peer asked for.
pub fn status_error(what: &str, answer: &Answer, detail: &str) -> PeerError {
    let mut msg = format!("{what}: {}", answer.status);
    if !detail.is_empty() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    if let Some(after) = answer.retry_after() {
        let _ = write!(msg, " (retry after {} s)", after.as_secs());
    }
    PeerError::for_status(answer.status, msg)
}

/// Clip peer-supplied text for a message.
pub fn detail(s: &str) -> String {
    one_line(s, DETAIL_CAP)
}

/// A stand-in HTTP/1.1 server for tests: it answers each connection with the
/// next canned response, closes it, and hands back the raw requests.
#[cfg(test)]
pub(crate) mod test_server {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use url::Url;

    pub struct Server {
        listener: TcpListener,
        pub url: Url,
    }

    pub async fn bind() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        Server { listener, url }
    }

    /// A full response; `Connection: close` makes the client dial anew, so
    /// one connection carries one request.
    pub fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        r.push_str(body);
        r
    }

    impl Server {
        pub fn answer(self, responses: Vec<String>) -> JoinHandle<Vec<String>> {
            tokio::spawn(async move {
                let mut requests = Vec::new();
                for response in responses {
                    let (mut sock, _) = self.listener.accept().await.unwrap();
                    requests.push(read_request(&mut sock).await);
                    sock.write_all(response.as_bytes()).await.unwrap();
                    sock.shutdown().await.ok();
                }
                requests
            })
        }
    }

    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                    .unwrap_or(0usize);
                if buf.len() >= end + 4 + length {
                    return text;
                }
            }
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before sending a whole request");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::{bind, response};
    use super::*;

    fn peer(url: Url) -> PeerConfig {
        PeerConfig {
            url,
            topic: "t".into(),
            timeout: Duration::from_secs(5),
            ca_bundle: None,
            insecure: false,
            concurrency: 1,
        }
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        Answer { status: StatusCode::from_u16(status).unwrap(), headers: map, body: body.into() }
    }

    #[test]
    fn statuses_sorted_into_retry_and_fatal() {
        for code in [500, 502, 503, 504, 408, 409, 429] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 405, 410, 422] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn status_error_message() {
        let e = status_error("POST /x", &answer(429, &[("Retry-After", "30")], ""), "slow down");
        assert_eq!(e, PeerError::Retry("POST /x: 429 Too Many Requests: slow down (retry after 30 s)".into()));
        let e = status_error("GET /y", &answer(404, &[], ""), "");
        assert_eq!(e.to_string(), "GET /y: 404 Not Found");
        assert!(!e.is_retry());
    }

    #[test]
    fn urls_and_descriptions_hide_credentials() {
        let base = Url::parse("https://ci:hunter2@jenkins.example.org/ci/?x=1#f").unwrap();
        let url = join(&base, ["job", "a b/c", "api", "json"]);
        assert_eq!(url.as_str(), "https://ci:hunter2@jenkins.example.org/ci/job/a%20b%2Fc/api/json");
        assert_eq!(describe(&Method::GET, &url), "GET /ci/job/a%20b%2Fc/api/json");
        assert_eq!(shown_url(&base), "https://jenkins.example.org/ci/");
        let no_slash = Url::parse("https://jenkins.example.org/ci").unwrap();
        assert_eq!(join(&no_slash, ["job", ""]).path(), "/ci/job/");
    }

    #[test]
    fn one_line_cuts_on_char_boundary() {
        assert_eq!(one_line("a\n  b\tc", 100), "a b c");
        assert_eq!(one_line("ééé", 3), "é…");
    }

    #[test]
    fn client_reads_ca_bundle() {
        let dir = std::env::temp_dir().join(format!("poormanci-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, TEST_CA).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let mut p = peer(Url::parse("https://pagure.example.org").unwrap());
        p.ca_bundle = Some(good);
        assert!(client(&p).is_ok());
        p.ca_bundle = Some(bad);
        assert!(client(&p).unwrap_err().contains("no PEM certificate"));
        p.ca_bundle = Some(dir.join("missing.pem"));
        assert!(client(&p).unwrap_err().starts_with("ca_bundle "));
        p.ca_bundle = None;
        p.insecure = true;
        assert!(client(&p).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn refused_connection_is_retry() {
        let server = bind().await;
        let url = join(&server.url, ["x"]);
        drop(server);
        let http = client(&peer(url.clone())).unwrap();
        let e = send("test", "POST /x", http.post(url).form(&[("token", "SECRET")]), 1024).await.unwrap_err();
        assert!(e.is_retry(), "{e}");
        assert!(e.message().starts_with("POST /x: ") && e.message().contains("refused"), "{e}");
        assert!(!e.message().contains("SECRET") && !e.message().contains("127.0.0.1"), "{e}");
    }

    #[tokio::test]
    async fn slow_peer_is_retry() {
        // Never accepted: the kernel completes the connection, nobody answers.
        let server = bind().await;
        let mut p = peer(server.url.clone());
        p.timeout = Duration::from_millis(200);
        let e = send("test", "GET /", client(&p).unwrap().get(server.url.clone()), 1024).await.unwrap_err();
        assert_eq!(e, PeerError::Retry("GET /: timed out".into()));
    }

    #[tokio::test]
    async fn body_cap_and_user_agent() {
        let server = bind().await;
        let url = server.url.clone();
        let big = "x".repeat(100);
        let seen = server.answer(vec![response("200 OK", &[], &big), response("500 Oops", &[], &big)]);
        let http = client(&peer(url.clone())).unwrap();
        let e = send("test", "GET /", http.get(url.clone()), 10).await.unwrap_err();
        assert_eq!(e, PeerError::Fatal("GET /: 200 OK: answer larger than 10 bytes".into()));
        // An error body under ERROR_BODY_CAP is read whole whatever the cap.
        let a = send("test", "GET /", http.get(url), 10).await.unwrap();
        assert_eq!((a.status.as_u16(), a.body.len()), (500, 100));
        let requests = seen.await.unwrap();
        assert!(requests[0].to_lowercase().contains(&format!("user-agent: {USER_AGENT}")), "{}", requests[0]);
    }

    #[tokio::test]
    async fn redirects_are_followed_within_the_peer_only() {
        let peer_server = bind().await;
        let base = peer_server.url.clone();
        // Another port on 127.0.0.1 and another loopback address: both are other hosts.
        let elsewhere = ["127.0.0.1:0", "127.0.0.2:0"].map(|a| std::net::TcpListener::bind(a).unwrap());
        let [other_port, other_addr] = elsewhere.each_ref().map(|l| format!("http://{}", l.local_addr().unwrap()));
        let seen = peer_server.answer(vec![
            response("307 Temporary Redirect", &[("Location", "/moved?x=1")], ""),
            response("200 OK", &[], "here"),
            response("307 Temporary Redirect", &[("Location", &format!("{other_port}/steal?token=S3CRET"))], ""),
            response("302 Found", &[("Location", &format!("{other_addr}/steal?token=S3CRET"))], ""),
        ]);
        let http = client(&peer(base.clone())).unwrap();
        // Same origin: followed, the body sent again to the peer itself.
        let a = send("test", "POST /x", http.post(join(&base, ["x"])).form(&[("token", "JOB")]), 1024).await.unwrap();
        assert_eq!((a.status.as_u16(), a.body.as_slice()), (200, &b"here"[..]));
        for (to, path) in [(&other_port, "/y"), (&other_addr, "/z")] {
            let e = send("test", &format!("POST {path}"), http.post(join(&base, [&path[1..]])).form(&[("token", "JOB")]), 1024).await.unwrap_err();
            assert!(!e.is_retry(), "{e}");
            assert!(e.message().starts_with(&format!("POST {path}: ")) && e.message().contains(&format!("redirected to another host, {to};")), "{e}");
            assert!(!e.message().contains("S3CRET") && !e.message().contains("/steal"), "{e}");
        }
        let requests = seen.await.unwrap();
        assert!(requests[1].starts_with("POST /moved?x=1 ") && requests[1].ends_with("token=JOB"), "{}", requests[1]);
        // Nothing ever connected to the other host: its accept queue is empty.
        for listener in elsewhere {
            listener.set_nonblocking(true).unwrap();
            assert_eq!(listener.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
        }
    }

    /// A throwaway self-signed CA (CN=poormanci test CA; its key was not kept).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBjjCCATOgAwIBAgIUHxMoyvFm/Cm1/BvX6T0aqIvkSTswCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRcG9vcm1hbmNpIHRlc3QgQ0EwHhcNMjYxMTI1MTU0NjM0WhcN
MzYxMTIyMTU0NjM0WjAcMRowGAYDVQQDDBFwb29ybWFuY2kgdGVzdCBDQTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABHECx1c32xbmohJWirY80QDDRlHAYD17Bgx5
baHbnAgy3fRpBq9DunAxY1GLGA5wjsTKQ2dFJgY5ttO3ige3roCjUzBRMB0GA1Ud
DgQWBBQ3R7XoTGEcSNCIDdbM1dj4Vnrs5jAfBgNVHSMEGDAWgBQ3R7XoTGEcSNCI
DdbM1dj4Vnrs5jAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQC2
dQa006EXKE/E4yDckFQVlMrdxvTi7zS9CdVlMOwtXAIhANWs43StgfqGEN3UqA8K
XJesp8RK0QOx1plpQFjOZ+c+
-----END CERTIFICATE-----
";
}
