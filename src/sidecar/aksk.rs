//! Huawei Cloud AK/SK request signing (`SDK-HMAC-SHA256`), verified exactly
//! as the Huawei Cloud SDKs compute it:
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n
//!                    CanonicalHeaders \n \n SignedHeaders \n hex(sha256(body))
//! StringToSign     = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(CanonicalRequest))
//! Signature        = hex(hmac_sha256(SK, StringToSign))
//! ```
//!
//! The canonical URI is the percent-decoded path, each segment encoded again
//! (everything but letters, digits and `_.-~`), always ending in `/`. The
//! canonical query is every parameter, decoded and encoded the same way,
//! sorted by name then value. Each signed header is `name:value` (name
//! lowercased, value trimmed), one a line.
//!
//! Beyond the signature itself, a request must sign `x-sdk-date` (every
//! official signer does; `host` is signed by the Python, Java and Node.js
//! SDKs but not by the Go SDK), be dated within the allowed skew, and, unless
//! it is a read (GET, HEAD), not repeat a signature already seen within that
//! window. Secret keys are never logged or shown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use k8s_openapi::jiff::{Timestamp, civil, tz::TimeZone};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::http::Method;

/// A request as received: what a signature covers.
pub use super::http::Call;
use super::identity::Identity;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The header carrying the signing time, `YYYYMMDDTHHMMSSZ` (UTC).
pub const DATE_HEADER: &str = "x-sdk-date";
/// A payload hash the client may send instead of letting it be computed.
const CONTENT_HEADER: &str = "x-sdk-content-sha256";
/// hex(sha256("")).
const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A secret key; never printed.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(s: impl Into<String>) -> Self {
        SecretKey(s.into())
    }
    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The parsed `Authorization: SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
#[derive(Clone, PartialEq, Eq)]
pub struct SdkAuthorization {
    pub access: String,
    /// Lowercase header names, as the client listed them.
    pub signed_headers: Vec<String>,
    /// The hex signature as sent.
    pub signature: String,
}

impl std::fmt::Debug for SdkAuthorization {
    // The signature is a one-time credential within its window: not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SdkAuthorization({}, {}, <signature>)",
            self.access,
            self.signed_headers.join(";")
        )
    }
}

/// Parses the part of the Authorization header after the algorithm.
pub fn parse_authorization(params: &str) -> Result<SdkAuthorization, String> {
    let (mut access, mut signed, mut signature) = (None, None, None);
    for part in params.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!(
                "malformed {ALGORITHM} Authorization header: {part:?} is not name=value"
            ));
        };
        let v = v.trim();
        match k.trim() {
            "Access" => access = Some(v.to_string()),
            "SignedHeaders" => signed = Some(v.to_string()),
            "Signature" => signature = Some(v.to_string()),
            _ => {}
        }
    }
    let missing = |what: &str| format!("malformed {ALGORITHM} Authorization header: no {what}");
    let access = access
        .filter(|a| !a.is_empty())
        .ok_or_else(|| missing("Access"))?;
    let signed = signed
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("Signature"))?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(format!(
            "malformed {ALGORITHM} Authorization header: SignedHeaders must be lowercase header names separated by ';'"
        ));
    }
    Ok(SdkAuthorization {
        access,
        signed_headers,
        signature,
    })
}

/// Percent-encodes everything but letters, digits and `_.-~` (Python's
/// `urllib.parse.quote(s, safe='~')`, as the SDK does).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn url_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The SDK's canonical URI: decoded, each segment encoded, ending in `/`.
pub fn canonical_uri(path: &str) -> String {
    let decoded = url_decode(path);
    let mut uri = decoded
        .split('/')
        .map(url_encode)
        .collect::<Vec<_>>()
        .join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// The SDK's canonical query: parameters decoded, sorted by name then value,
/// encoded again.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The canonical request for `signed_headers`; an error names a signed header
/// the request lacks, or a payload hash that is not the body's.
pub fn canonical_request(req: &Call<'_>, signed_headers: &[String]) -> Result<String, String> {
    let mut headers = String::new();
    for name in signed_headers {
        let mut values = req.headers.get_all(name.as_str()).iter();
        let value = values
            .next()
            .ok_or_else(|| format!("signed header {name} is not in the request"))?;
        if values.next().is_some() {
            return Err(format!("signed header {name} appears more than once"));
        }
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| format!("signed header {name} is not UTF-8"))?;
        headers.push_str(name);
        headers.push(':');
        headers.push_str(value.trim());
        headers.push('\n');
    }
    let payload = if req.body.is_empty() {
        EMPTY_HASH.to_string()
    } else {
        let hash = hex_sha256(req.body);
        if let Some(sent) = req.headers.get(CONTENT_HEADER) {
            // The SDK signs the header's value instead of the body when it
            // is present ("UNSIGNED-PAYLOAD" for non-JSON bodies); only the
            // body's true hash is accepted, so that the body is always covered.
            if !sent.as_bytes().eq_ignore_ascii_case(hash.as_bytes()) {
                return Err(
                    "X-Sdk-Content-Sha256 is not the SHA-256 of the body; unsigned payloads are not accepted"
                        .into(),
                );
            }
        }
        hash
    };
    // The SDK ends the canonical headers with a newline and then joins the
    // parts with another: a blank line precedes the signed headers.
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.as_str().to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        headers,
        signed_headers.join(";"),
        payload
    ))
}

/// `SDK-HMAC-SHA256\n<date>\n<hex sha256(canonical request)>`.
pub fn string_to_sign(date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{date}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

type HmacSha256 = hmac::Hmac<Sha256>;

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Parses `YYYYMMDDTHHMMSSZ` strictly.
pub fn parse_sdk_date(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let date = civil::Date::new(
        digits(0..4)? as i16,
        digits(4..6)? as i8,
        digits(6..8)? as i8,
    )
    .ok()?;
    let time = civil::Time::new(
        digits(9..11)? as i8,
        digits(11..13)? as i8,
        digits(13..15)? as i8,
        0,
    )
    .ok()?;
    date.to_datetime(time)
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// One access key of the users file.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: SecretKey,
    /// Kubernetes username to authorise as.
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Signatures already accepted, until their date leaves the skew window
/// (after which the date check refuses them anyway). At most `capacity`
/// are held: when that many are live, further signed requests are refused
/// until some expire, rather than forgetting one and allowing its replay.
struct ReplayGuard {
    capacity: usize,
    /// signature → unix second after which it is refused by its date.
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl ReplayGuard {
    /// Records `sig`; false if it was seen before (or no room is left).
    fn first_use(&self, sig: [u8; 32], expires: i64, now: i64) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(exp) = seen.get(&sig)
            && *exp >= now
        {
            return Err("this signature was already used: sign every request anew".into());
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, exp| *exp >= now);
            if seen.len() >= self.capacity {
                return Err(
                    "too many signed requests within the allowed clock skew; try again later"
                        .into(),
                );
            }
        }
        seen.insert(sig, expires);
        Ok(())
    }
}

/// Checks signed requests against the access keys of the users file.
pub struct Verifier {
    max_skew: Duration,
    replay: ReplayGuard,
}

impl Verifier {
    pub fn new(max_skew: Duration, replay_capacity: usize) -> Self {
        Verifier {
            max_skew,
            replay: ReplayGuard {
                capacity: replay_capacity.max(1),
                seen: Mutex::new(HashMap::new()),
            },
        }
    }

    /// Verifies `auth` over `req` at `now`. The error says what is wrong,
    /// never anything about the secret key.
    pub fn verify(
        &self,
        keys: &[AccessKey],
        auth: &SdkAuthorization,
        req: &Call<'_>,
        now: Timestamp,
    ) -> Result<Identity, String> {
        // Look at every key, so that the time taken does not depend on
        // where (or whether) the access key is listed.
        let key = keys
            .iter()
            .fold(None, |found, k| {
                let eq: bool = k.access_key.as_bytes().ct_eq(auth.access.as_bytes()).into();
                if eq { Some(k) } else { found }
            })
            .ok_or_else(|| format!("unknown access key {}", auth.access))?;
        // X-Sdk-Date is the one header every official signer signs. Host is
        // not: Huawei's Go SDK signs only the headers it sets itself. Where
        // Host is signed, the signature covers the Host received, so a
        // request sent to another host than the one signed does not verify.
        // Leaving Host out opens no replay that was closed before: the
        // sidecar does not check Host against a name of its own, so a
        // replayer could always send the signed Host unchanged; the replay
        // memory below is keyed by the signature alone, which a changed Host
        // does not change; and method, path, query, body and date are
        // covered whatever the client signs.
        if !auth.signed_headers.iter().any(|h| h == DATE_HEADER) {
            return Err(format!("SignedHeaders must include {DATE_HEADER}"));
        }
        let date = req
            .headers
            .get(DATE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("X-Sdk-Date header is missing")?;
        let signed_at = parse_sdk_date(date).ok_or_else(|| {
            format!("X-Sdk-Date {date:?} is not a UTC time of the form YYYYMMDDTHHMMSSZ")
        })?;
        let skew = self.max_skew.as_secs() as i64;
        let offset = now.as_second() - signed_at.as_second();
        if offset.abs() > skew {
            return Err(format!(
                "X-Sdk-Date {date} is {}s {} the server's time; at most {skew}s are allowed",
                offset.abs(),
                if offset > 0 { "behind" } else { "ahead of" }
            ));
        }
        let sent: [u8; 32] = hex::decode(&auth.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("Signature is not 64 hexadecimal digits")?;
        let canonical = canonical_request(req, &auth.signed_headers)?;
        let expected = hmac_sha256(
            key.secret_key.expose(),
            string_to_sign(date, &canonical).as_bytes(),
        );
        if !bool::from(expected[..].ct_eq(&sent[..])) {
            return Err(
                "signature does not match: the request (method, path, query, signed headers or body) differs from what was signed, or the secret key is wrong"
                    .into(),
            );
        }
        // Reads are exempt: X-Sdk-Date has a resolution of one second, so a
        // client that polls (the SDK asking for a build's status twice within
        // a second) sends the very same signature, and a replayed read
        // changes nothing.
        if !matches!(*req.method, Method::GET | Method::HEAD) {
            self.replay
                .first_use(sent, signed_at.as_second() + skew, now.as_second())?;
        }
        Ok(Identity {
            username: key.username.clone(),
            groups: key.groups.clone(),
            uid: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::{HeaderMap, HeaderValue};

    const AK: &str = "QTWAOYTTINDUT2QVKYUC";
    const SK: &str = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc";
    const DATE: &str = "20260102T030405Z";
    const HOST: &str = "127.0.0.1:8153";
    const STOP_BODY: &str = r#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "20"}"#;

    struct Vector {
        sdk: &'static str,
        method: Method,
        path: &'static str,
        query: &'static str,
        body: &'static str,
        /// What the SDK sends besides Host (always `HOST`) and Authorization.
        headers: &'static [(&'static str, &'static str)],
        authorization: &'static str,
    }

    const PYTHON_HEADERS: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("x-sdk-date", DATE),
        ("user-agent", "huaweicloud-usdk-python/3.0"),
    ];
    const GO_HEADERS: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("user-agent", "huaweicloud-usdk-go/3.0"),
        ("x-project-id", "cancel-operator"),
        ("x-sdk-date", DATE),
    ];
    const NODE_HEADERS: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("x-project-id", "cancel-operator"),
        ("x-sdk-date", DATE),
    ];

    /// Requests signed by each SDK's own signer at `DATE`.
    fn vectors() -> Vec<Vector> {
        let python = |method, path, query, body, authorization| Vector {
            sdk: "python",
            method,
            path,
            query,
            body,
            headers: PYTHON_HEADERS,
            authorization,
        };
        let go = |method, path, query, body, authorization| Vector {
            sdk: "go",
            headers: GO_HEADERS,
            ..python(method, path, query, body, authorization)
        };
        let node = |method, path, query, body, authorization| Vector {
            sdk: "node",
            headers: NODE_HEADERS,
            ..python(method, path, query, body, authorization)
        };
        vec![
            // huaweicloudsdkcore 3.1.219: tests/clients/aksk_vectors.py.
            python(
                Method::POST,
                "/v3/jobs/stop",
                "",
                STOP_BODY,
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;user-agent;x-sdk-date, Signature=29786a1c56639d467d76fcbb2b18364bce4d8fe3dbc2d8a7eab3e6208162be28",
            ),
            python(
                Method::GET,
                "/v3/jobs/f9d6c8466d614a9788e9a0acf6c15f46/status",
                "",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;user-agent;x-sdk-date, Signature=582112e56540a20fea1fd1d6013807bc729a561ba560281f33b559b96f330842",
            ),
            python(
                Method::GET,
                "/v3/jobs/demo/history",
                "interval=30&limit=10&offset=0",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;user-agent;x-sdk-date, Signature=b1c03c987c35b3bc5f6cab181ad2f24f21945d15ece4ef57ca42d7a21615e984",
            ),
            python(
                Method::POST,
                "/v3/jobs/my%20job/3/stop",
                "a=%C3%A9~%2A&b=x%20y",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;user-agent;x-sdk-date, Signature=49fa4e3362989d50f5045b2b36515cb86d930d1d2fee77f0fcc90524d79ba979",
            ),
            // huaweicloud-sdk-go-v3 v0.1.215: tests/clients/go/vectors. It
            // signs the headers it sets, never Host.
            go(
                Method::POST,
                "/v3/jobs/stop",
                "",
                "{\"build_no\":\"20\",\"job_id\":\"f9d6c8466d614a9788e9a0acf6c15f46\"}\n",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=user-agent;x-project-id;x-sdk-date, Signature=0cf76fd0e0769e87092320cf225bfdbcd27bfe93febe97810e8e20687019da9c",
            ),
            go(
                Method::GET,
                "/v3/jobs/f9d6c8466d614a9788e9a0acf6c15f46/status",
                "",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=user-agent;x-project-id;x-sdk-date, Signature=49aefadcb7552e1c79f7e292a800f02ec31b7a0ebefdbf2a146fbde015a551e8",
            ),
            go(
                Method::GET,
                "/v3/jobs/demo/history",
                "interval=30&limit=10&offset=0",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=user-agent;x-project-id;x-sdk-date, Signature=7f19c8b0f1ed083bc43d8b35390422e3208f654034f705cc5083ad86f75f7191",
            ),
            go(
                Method::POST,
                "/v3/jobs/my%20job/3/stop",
                "a=%C3%A9~%2A&b=x%20y",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=user-agent;x-project-id;x-sdk-date, Signature=088750de2fddb2276c0e9778a499f0274d14f683260b456e81f97fd976ead5ef",
            ),
            // @huaweicloud/huaweicloud-sdk-core 3.1.211: tests/clients/node/vectors.js.
            node(
                Method::POST,
                "/v3/jobs/stop",
                "",
                r#"{"job_id":"f9d6c8466d614a9788e9a0acf6c15f46","build_no":"20"}"#,
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=3623139c7110de9d9187f4821085371af6de689d7dc26812d9af7c01b4dcc187",
            ),
            node(
                Method::GET,
                "/v3/jobs/f9d6c8466d614a9788e9a0acf6c15f46/status",
                "",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=cd10f00b50ffa4691abd143ada3692b21103ebf6752ef12fe5341ff7b8bb4117",
            ),
            node(
                Method::GET,
                "/v3/jobs/demo/history",
                "offset=0&limit=10&interval=30",
                "",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=cdb71d1368be9d1f540b6876bbb49f6732b242a01bd675723b5116426a34b554",
            ),
            node(
                Method::POST,
                "/v3/jobs/my-job/3/stop",
                "b=x%20y&a=%C3%A9~*",
                "{}",
                "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=306c93d07bdc1ba9a885279a3af7716ad22928aba56c7f9dd250ec7f3ead6793",
            ),
        ]
    }

    /// The first vector of `sdk`.
    fn vector(sdk: &str) -> Vector {
        vectors()
            .into_iter()
            .find(|v| v.sdk == sdk)
            .expect("a vector of that SDK")
    }

    fn headers(v: &Vector) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in v.headers {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h.insert("host", HeaderValue::from_static(HOST));
        h.insert("authorization", HeaderValue::from_static(v.authorization));
        h
    }

    fn keys() -> Vec<AccessKey> {
        vec![
            AccessKey {
                access_key: "OTHERKEY".into(),
                secret_key: SecretKey::new("another secret key, not this one"),
                username: "other".into(),
                groups: vec![],
            },
            AccessKey {
                access_key: AK.into(),
                secret_key: SecretKey::new(SK),
                username: "codearts-bot".into(),
                groups: vec!["ci".into()],
            },
        ]
    }

    fn at(date: &str) -> Timestamp {
        parse_sdk_date(date).unwrap()
    }

    fn auth_of(h: &HeaderMap) -> SdkAuthorization {
        let v = h.get("authorization").unwrap().to_str().unwrap();
        parse_authorization(v.strip_prefix("SDK-HMAC-SHA256 ").unwrap()).unwrap()
    }

    fn check(
        verifier: &Verifier,
        v: &Vector,
        h: &HeaderMap,
        now: Timestamp,
    ) -> Result<Identity, String> {
        let req = Call {
            method: &v.method,
            path: v.path,
            query: v.query,
            headers: h,
            body: v.body.as_bytes(),
        };
        verifier.verify(&keys(), &auth_of(h), &req, now)
    }

    fn verifier() -> Verifier {
        Verifier::new(Duration::from_secs(15 * 60), 100)
    }

    #[test]
    fn the_sdk_signatures_verify() {
        let verifier = verifier();
        for v in vectors() {
            let who = check(&verifier, &v, &headers(&v), at(DATE)).unwrap_or_else(|e| {
                panic!("{}: {} {}: {e}", v.sdk, v.method, v.path);
            });
            assert_eq!(who.username, "codearts-bot");
            assert_eq!(who.groups, vec!["ci".to_string()]);
        }
    }

    #[test]
    fn canonical_parts_follow_the_sdk() {
        assert_eq!(canonical_uri("/v3/jobs/stop"), "/v3/jobs/stop/");
        assert_eq!(canonical_uri("/v3/jobs/stop/"), "/v3/jobs/stop/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a%20b/c*d"), "/a%20b/c%2Ad/");
        assert_eq!(
            canonical_query("offset=0&limit=10&interval=30"),
            "interval=30&limit=10&offset=0"
        );
        assert_eq!(canonical_query("b=2&a=x%20y&a=1&c"), "a=1&a=x%20y&b=2&c=");
        assert_eq!(canonical_query(""), "");
    }

    #[test]
    fn dates_are_parsed_strictly() {
        assert_eq!(
            parse_sdk_date("20260102T030405Z").unwrap().to_string(),
            "2026-01-02T03:04:05Z"
        );
        for bad in [
            "2026012T030405Z",
            "20260102T030405",
            "20261302T030405Z",
            "20260102T250405Z",
            "2026-01-02T03:04:05Z",
            "+0260102T030405Z",
            "",
        ] {
            assert!(parse_sdk_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn each_failure_is_refused_with_its_reason() {
        let v = &vectors()[0];
        let now = at(DATE);
        let refused =
            |h: &HeaderMap, v: &Vector, now: Timestamp| check(&verifier(), v, h, now).unwrap_err();

        // Bad signature.
        let mut h = headers(v);
        let tampered = v.authorization.replace("Signature=2", "Signature=3");
        h.insert("authorization", HeaderValue::from_str(&tampered).unwrap());
        assert!(refused(&h, v, now).contains("signature does not match"));

        // Unknown access key.
        let mut h = headers(v);
        let unknown = v.authorization.replace(AK, "NOSUCHKEY");
        h.insert("authorization", HeaderValue::from_str(&unknown).unwrap());
        assert!(refused(&h, v, now).contains("unknown access key NOSUCHKEY"));

        // Dated outside the skew window, either way.
        let h = headers(v);
        let e = refused(&h, v, at("20260102T031906Z"));
        assert!(e.contains("901s behind"), "{e}");
        let e = refused(&h, v, at("20260102T024904Z"));
        assert!(e.contains("901s ahead of"), "{e}");
        assert!(check(&verifier(), v, &h, at("20260102T031905Z")).is_ok());

        // A malformed date.
        let mut h = headers(v);
        h.insert(
            "x-sdk-date",
            HeaderValue::from_static("2026-01-02 03:04:05"),
        );
        assert!(refused(&h, v, now).contains("YYYYMMDDTHHMMSSZ"));

        // X-Sdk-Date not signed (the signature is checked after the
        // required headers).
        let mut h = headers(v);
        let no_date = v
            .authorization
            .replace("user-agent;x-sdk-date", "user-agent");
        h.insert("authorization", HeaderValue::from_str(&no_date).unwrap());
        assert!(refused(&h, v, now).contains("SignedHeaders must include x-sdk-date"));

        // Host taken out of a signature that covered it.
        let mut h = headers(v);
        let no_host = v
            .authorization
            .replace("content-type;host;user-agent", "content-type;user-agent");
        h.insert("authorization", HeaderValue::from_str(&no_host).unwrap());
        assert!(refused(&h, v, now).contains("signature does not match"));

        // A signed header that is not sent.
        let mut h = headers(v);
        h.remove("user-agent");
        assert!(refused(&h, v, now).contains("signed header user-agent is not in the request"));

        // Another host than the one signed, whichever SDK signed it.
        for v in [v, &vector("node")] {
            let mut h = headers(v);
            h.insert("host", HeaderValue::from_static("evil.example"));
            assert!(refused(&h, v, now).contains("signature does not match"));
        }

        // Tampered body.
        let h = headers(v);
        let body = Vector {
            body: r#"{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "21"}"#,
            ..clone(v)
        };
        assert!(refused(&h, &body, now).contains("signature does not match"));

        // Unsigned payload.
        let mut h = headers(v);
        h.insert(
            "x-sdk-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        assert!(refused(&h, v, now).contains("unsigned payloads are not accepted"));

        // Tampered query and path.
        let history = &vectors()[2];
        let h = headers(history);
        let query = Vector {
            query: "interval=30&limit=100&offset=0",
            ..clone(history)
        };
        assert!(refused(&h, &query, now).contains("signature does not match"));
        let path = Vector {
            path: "/v3/jobs/other/history",
            ..clone(history)
        };
        assert!(refused(&h, &path, now).contains("signature does not match"));
        let method = Vector {
            method: Method::DELETE,
            ..clone(history)
        };
        assert!(refused(&h, &method, now).contains("signature does not match"));
        // The query's order does not matter.
        let reordered = Vector {
            query: "offset=0&interval=30&limit=10",
            ..clone(history)
        };
        assert!(check(&verifier(), &reordered, &h, now).is_ok());
    }

    fn clone(v: &Vector) -> Vector {
        Vector {
            method: v.method.clone(),
            ..*v
        }
    }

    #[test]
    fn a_signature_without_host_covers_the_rest_of_the_request() {
        // The Go SDK signs only the headers it sets: the Host it reached is
        // not part of the signature, but everything else is.
        let v = &vector("go");
        assert!(!v.authorization.contains("host"));
        let now = at(DATE);
        let refused = |h: &HeaderMap, v: &Vector| check(&verifier(), v, h, now).unwrap_err();

        let mut h = headers(v);
        h.insert("host", HeaderValue::from_static("sidecar.example:443"));
        assert!(check(&verifier(), v, &h, now).is_ok());

        for (name, value) in [
            ("x-project-id", "another-project"),
            ("user-agent", "curl/8"),
            ("x-sdk-date", "20260102T030406Z"),
        ] {
            let mut h = headers(v);
            h.insert(name, HeaderValue::from_static(value));
            assert!(
                refused(&h, v).contains("signature does not match"),
                "{name}"
            );
        }
        let mut h = headers(v);
        h.remove("x-project-id");
        assert!(refused(&h, v).contains("signed header x-project-id is not in the request"));

        let h = headers(v);
        let other_body = Vector {
            body: "{\"build_no\":\"21\",\"job_id\":\"f9d6c8466d614a9788e9a0acf6c15f46\"}\n",
            ..clone(v)
        };
        assert!(refused(&h, &other_body).contains("signature does not match"));
        let other_path = Vector {
            path: "/v3/jobs/other/1/stop",
            ..clone(v)
        };
        assert!(refused(&h, &other_path).contains("signature does not match"));
        let history = &vectors()
            .into_iter()
            .find(|v| v.sdk == "go" && !v.query.is_empty())
            .unwrap();
        let other_query = Vector {
            query: "interval=30&limit=100&offset=0",
            ..clone(history)
        };
        assert!(refused(&headers(history), &other_query).contains("signature does not match"));
    }

    #[test]
    fn a_signature_without_host_is_not_replayed_at_another_host() {
        let verifier = verifier();
        let v = &vector("go");
        assert!(check(&verifier, v, &headers(v), at(DATE)).is_ok());
        let mut h = headers(v);
        h.insert("host", HeaderValue::from_static("sidecar.example:443"));
        let e = check(&verifier, v, &h, at("20260102T030406Z")).unwrap_err();
        assert!(e.contains("already used"), "{e}");
    }

    #[test]
    fn a_signature_is_accepted_once() {
        let verifier = verifier();
        let v = &vectors()[0];
        let h = headers(v);
        assert!(check(&verifier, v, &h, at(DATE)).is_ok());
        let e = check(&verifier, v, &h, at("20260102T030406Z")).unwrap_err();
        assert!(e.contains("already used"), "{e}");
        // Another request is still welcome, and a read may be repeated (a
        // client polling within one second sends the same signature).
        let v2 = &vectors()[1];
        assert_eq!(v2.method, Method::GET);
        assert!(check(&verifier, v2, &headers(v2), at(DATE)).is_ok());
        assert!(check(&verifier, v2, &headers(v2), at(DATE)).is_ok());
    }

    #[test]
    fn the_replay_memory_is_bounded() {
        let guard = ReplayGuard {
            capacity: 2,
            seen: Mutex::new(HashMap::new()),
        };
        assert!(guard.first_use([1; 32], 100, 0).is_ok());
        assert!(guard.first_use([2; 32], 200, 0).is_ok());
        // Full of live signatures: refused rather than forgetting one.
        assert!(
            guard
                .first_use([3; 32], 300, 50)
                .unwrap_err()
                .contains("too many")
        );
        // Once one expires, its room is reused.
        assert!(guard.first_use([3; 32], 300, 150).is_ok());
        assert!(
            guard
                .first_use([2; 32], 200, 150)
                .unwrap_err()
                .contains("already used")
        );
        assert_eq!(guard.seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn authorization_headers_are_parsed() {
        let a =
            parse_authorization("Access=AK, SignedHeaders=host;x-sdk-date, Signature=ab").unwrap();
        assert_eq!(a.access, "AK");
        assert_eq!(a.signed_headers, vec!["host", "x-sdk-date"]);
        assert!(!format!("{a:?}").contains("ab)"));
        for bad in [
            "",
            "Access=AK, Signature=ab",
            "Access=AK, SignedHeaders=Host, Signature=ab",
            "Access=AK SignedHeaders=host Signature=ab",
            "Access=, SignedHeaders=host, Signature=ab",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_keys_never_show_in_debug_output() {
        let k = &keys()[1];
        let shown = format!("{k:?}");
        assert!(!shown.contains(SK), "{shown}");
        assert!(shown.contains(AK));
    }
}
