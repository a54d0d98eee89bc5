//! Who is calling, and may they? Tokens are checked with a Kubernetes
//! TokenReview, Basic credentials against a users file of bcrypt hashes,
//! Huawei AK/SK signatures against the same file's access keys; every
//! decision is a SubjectAccessReview. Results are cached briefly under
//! a hash of the credential, never the credential itself, and no credential
//! is ever logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use moka::future::Cache;
use serde::Deserialize;
use warp::http::HeaderMap;

pub use super::identity::Identity;

use super::aksk::{self, AccessKey, SdkAuthorization, Verifier};
use super::http::Call;
use crate::labels::digest;

/// How callers are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// TokenReview and the users file; SubjectAccessReview for every decision.
    Kubernetes,
    /// Trust every caller with every right. For local use only.
    None,
}

/// What the request presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Token(String),
    Basic {
        user: String,
        password: String,
    },
    /// Huawei AK/SK: `Authorization: SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
    Signed(SdkAuthorization),
    /// Presented, but unusable; the reason may be shown to the caller.
    Malformed(Option<String>),
}

impl std::fmt::Debug for Credentials {
    // Never print a secret, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Signed(a) => write!(f, "Signed({a:?})"),
            Credentials::Malformed(_) => f.write_str("Malformed"),
        }
    }
}

/// Reads credentials: `Authorization: Bearer|bearer <t>`, `Authorization:
/// Basic <b64>`, `Authorization: SDK-HMAC-SHA256 …`, then `X-Auth-Token: <t>`.
/// An Authorization header of another scheme (say, one a proxy adds) does
/// not hide an `X-Auth-Token`.
pub fn credentials(headers: &HeaderMap) -> Credentials {
    // None: a scheme this server does not handle.
    let authorization = headers.get(warp::http::header::AUTHORIZATION).map(|value| {
        let Ok(value) = value.to_str() else {
            return None;
        };
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        Some(match scheme.to_ascii_lowercase().as_str() {
            "bearer" if !rest.is_empty() => Credentials::Token(rest.to_string()),
            "bearer" => Credentials::Malformed(None),
            "basic" => base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    s.split_once(':').map(|(u, p)| Credentials::Basic {
                        user: u.to_string(),
                        password: p.to_string(),
                    })
                })
                .unwrap_or(Credentials::Malformed(None)),
            _ if scheme == aksk::ALGORITHM => match aksk::parse_authorization(rest) {
                Ok(a) => Credentials::Signed(a),
                Err(why) => Credentials::Malformed(Some(why)),
            },
            _ if scheme.starts_with("SDK-HMAC-") => Credentials::Malformed(Some(format!(
                "signing algorithm {scheme} is not supported; use {}",
                aksk::ALGORITHM
            ))),
            _ => return None,
        })
    });
    let token = match headers.get("x-auth-token").map(|v| v.to_str()) {
        Some(Ok(t)) if !t.trim().is_empty() => Credentials::Token(t.trim().to_string()),
        Some(_) => Credentials::Malformed(None),
        None => Credentials::None,
    };
    match authorization {
        Some(Some(creds)) => creds,
        // A scheme this server does not handle: X-Auth-Token may still say who calls.
        Some(None) if token == Credentials::None => Credentials::Malformed(None),
        Some(None) | None => token,
    }
}

/// Why a caller is not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Nothing presented.
    Missing,
    /// Presented, but not valid.
    Invalid,
    /// Presented, but refused for a reason the caller may be told.
    Rejected(String),
    /// The API server could not be asked.
    Unavailable(String),
}

/// One user of the users file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileUser {
    /// Login name for HTTP Basic.
    pub name: String,
    /// bcrypt hash of the password.
    pub password_hash: String,
    /// Kubernetes username to authorise as (default: `name`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Shortest secret key accepted (Huawei's are 40 characters).
pub const MIN_SECRET_KEY_LEN: usize = 16;

/// The users file (YAML or JSON): `users: [{name, passwordHash, username,
/// groups}]` for HTTP Basic and `accessKeys: [{accessKey, secretKey,
/// username, groups}]` for Huawei AK/SK signing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsersFile {
    #[serde(default)]
    pub users: Vec<FileUser>,
    #[serde(default)]
    pub access_keys: Vec<AccessKey>,
}

impl UsersFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read users file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("users file {}: {e}", path.display()))
    }

    /// Parses and checks a users file's content.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: UsersFile =
            yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("invalid: {e}"))?;
        for u in &file.users {
            if !u.password_hash.starts_with("$2") {
                anyhow::bail!("user {}: passwordHash is not a bcrypt hash", u.name);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for k in &file.access_keys {
            if k.access_key.trim().is_empty() {
                anyhow::bail!("an access key has an empty accessKey");
            }
            if !seen.insert(k.access_key.as_str()) {
                anyhow::bail!("access key {} is listed twice", k.access_key);
            }
            if k.secret_key.len() < MIN_SECRET_KEY_LEN {
                anyhow::bail!(
                    "access key {}: secretKey must have at least {MIN_SECRET_KEY_LEN} characters",
                    k.access_key
                );
            }
            if k.username.trim().is_empty() {
                anyhow::bail!("access key {}: username is required", k.access_key);
            }
        }
        Ok(file)
    }
}

/// Re-reads a users file when its content changes (a Secret volume swaps
/// its `..data` symlink; reading the path again follows it).
pub struct UsersFileWatch {
    path: PathBuf,
    /// Digest of the content last seen, loaded or not.
    seen: Option<String>,
}

impl UsersFileWatch {
    /// Watches `path`, whose current content is already loaded.
    pub fn new(path: PathBuf) -> Self {
        let seen = std::fs::read(&path).ok().map(|b| content_digest(&b));
        UsersFileWatch { path, seen }
    }

    /// The new users when the content changed and is valid. An invalid file
    /// is logged once and ignored: the users loaded before stay in force.
    pub fn poll(&mut self) -> Option<UsersFile> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the users file; keeping the users loaded before");
                return None;
            }
        };
        let digest = content_digest(&bytes);
        if self.seen.as_deref() == Some(digest.as_str()) {
            return None;
        }
        self.seen = Some(digest);
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| anyhow::anyhow!("not UTF-8: {e}"))
            .and_then(UsersFile::parse);
        match parsed {
            Ok(file) => {
                tracing::info!(
                    path = %self.path.display(),
                    users = file.users.len(),
                    access_keys = file.access_keys.len(),
                    "users file reloaded"
                );
                Some(file)
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "the changed users file is invalid; keeping the users loaded before");
                None
            }
        }
    }
}

fn content_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The users in force, with the decoy hash that matches their cost.
struct Users {
    file: UsersFile,
    /// Checked in place of an unknown user's hash, so that a login takes as
    /// long whether or not the user exists.
    decoy_hash: String,
}

impl Users {
    fn new(file: UsersFile) -> Self {
        // As costly as the users' own hashes ("$2b$NN$...").
        let cost = file
            .users
            .first()
            .and_then(|u| u.password_hash.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(4);
        let decoy_hash = bcrypt::hash("no such user", cost).unwrap_or_default();
        Users { file, decoy_hash }
    }
}

/// Settings of AK/SK verification.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct SigningConfig {
    /// Largest difference, in seconds, allowed between a signed request's
    /// X-Sdk-Date and the server's clock (AK/SK signing).
    #[arg(long = "aksk-max-skew-seconds", value_name = "AKSK_MAX_SKEW_SECONDS", default_value = "900", value_parser = super::flags::seconds_in(1, 86400))]
    pub max_skew: Duration,
    /// Signatures remembered (within the skew window) to refuse replayed
    /// signed writes (reads are exempt); when that many are live, further
    /// signed writes are refused until some expire. About 100 bytes each.
    #[arg(long = "aksk-replay-capacity", value_name = "AKSK_REPLAY_CAPACITY", default_value = "50000", value_parser = super::flags::count(1, 10_000_000))]
    pub replay_capacity: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        super::flags::defaults()
    }
}

/// Authenticates and authorises callers.
#[derive(Clone)]
pub struct Authenticator {
    mode: AuthMode,
    client: Client,
    users: Arc<RwLock<Arc<Users>>>,
    signatures: Arc<Verifier>,
    /// sha256(token) → identity (None: rejected).
    tokens: Cache<String, Option<Identity>>,
    /// sha256(user, password) → identity, for verified Basic logins.
    logins: Cache<String, Option<Identity>>,
    /// (identity, verb, resource, namespace) → allowed.
    decisions: Cache<String, bool>,
    /// One permit per core for bcrypt checks, so that a flood of Basic
    /// logins waits its turn instead of occupying the blocking pool.
    bcrypt: Arc<tokio::sync::Semaphore>,
}

const GROUP: &str = "cancel.dev";

impl Authenticator {
    pub fn new(
        mode: AuthMode,
        client: Client,
        users: UsersFile,
        ttl: Duration,
        signing: SigningConfig,
    ) -> Self {
        Authenticator {
            mode,
            client,
            users: Arc::new(RwLock::new(Arc::new(Users::new(users)))),
            signatures: Arc::new(Verifier::new(signing.max_skew, signing.replay_capacity)),
            tokens: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            logins: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            decisions: Cache::builder()
                .max_capacity(50_000)
                .time_to_live(ttl)
                .build(),
            bcrypt: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `file` in force; logins verified under the old file are forgotten.
    pub async fn replace_users(&self, file: UsersFile) {
        let users = tokio::task::spawn_blocking(move || Users::new(file))
            .await
            .expect("building the users never panics");
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
        self.logins.invalidate_all();
    }

    /// Re-reads the users file every `interval` until the task is dropped.
    pub async fn watch_users_file(self, path: PathBuf, interval: Duration) {
        let mut watch = UsersFileWatch::new(path);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(file) = watch.poll() {
                self.replace_users(file).await;
            }
        }
    }

    /// Who signed `req` with an access key of the users file.
    pub fn authenticate_signed(
        &self,
        auth: &SdkAuthorization,
        req: &Call<'_>,
    ) -> Result<Identity, AuthError> {
        let users = self.users();
        self.signatures
            .verify(
                &users.file.access_keys,
                auth,
                req,
                k8s_openapi::jiff::Timestamp::now(),
            )
            .map_err(|why| {
                tracing::info!(access_key = %auth.access, reason = %why, "signed request refused");
                AuthError::Rejected(why)
            })
    }

    /// Who is calling.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        if self.mode == AuthMode::None {
            let username = match creds {
                Credentials::Basic { user, .. } => user.clone(),
                _ => "anonymous".to_string(),
            };
            return Ok(Identity {
                username,
                groups: vec![],
                uid: None,
            });
        }
        match creds {
            Credentials::None => Err(AuthError::Missing),
            Credentials::Malformed(None) => Err(AuthError::Invalid),
            Credentials::Malformed(Some(why)) => Err(AuthError::Rejected(why.clone())),
            // Needs the whole request: see `authenticate_signed`.
            Credentials::Signed(_) => Err(AuthError::Invalid),
            Credentials::Token(token) => {
                let key = digest(&["token", token]);
                if let Some(hit) = self.tokens.get(&key).await {
                    return hit.ok_or(AuthError::Invalid);
                }
                let identity = self.token_review(token).await?;
                self.tokens.insert(key, identity.clone()).await;
                identity.ok_or(AuthError::Invalid)
            }
            Credentials::Basic { user, password } => {
                let key = digest(&["basic", user, password]);
                if let Some(hit) = self.logins.get(&key).await {
                    return hit.ok_or(AuthError::Invalid);
                }
                let users = self.users();
                let found = users.file.users.iter().find(|u| &u.name == user).cloned();
                let hash = found
                    .as_ref()
                    .map(|u| u.password_hash.clone())
                    .unwrap_or_else(|| users.decoy_hash.clone());
                let password = password.clone();
                // bcrypt is slow by design: keep it off the async workers.
                let _turn = self
                    .bcrypt
                    .acquire()
                    .await
                    .map_err(|_| AuthError::Unavailable("shutting down".into()))?;
                let ok = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(password, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                let identity = found.filter(|_| ok).map(|u| Identity {
                    username: u.username.clone().unwrap_or_else(|| u.name.clone()),
                    groups: u.groups.clone(),
                    uid: None,
                });
                self.logins.insert(key, identity.clone()).await;
                identity.ok_or(AuthError::Invalid)
            }
        }
    }

    async fn token_review(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let result = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = result.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        Ok(user.username.map(|username| Identity {
            username,
            groups: user.groups.unwrap_or_default(),
            uid: user.uid,
        }))
    }

    /// May `who` do `verb` on `resource` (group cancel.dev) in `namespace`?
    pub async fn allowed(
        &self,
        who: &Identity,
        verb: &str,
        resource: &str,
        namespace: &str,
    ) -> Result<bool, String> {
        if self.mode == AuthMode::None {
            return Ok(true);
        }
        let mut groups = who.groups.clone();
        groups.sort();
        let key = digest(&[&who.username, &groups.join(","), verb, resource, namespace]);
        if let Some(hit) = self.decisions.get(&key).await {
            return Ok(hit);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.username.clone()),
                groups: Some(who.groups.clone()),
                uid: who.uid.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    namespace: Some(namespace.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let result = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
        let allowed = result.status.is_some_and(|s| s.allowed);
        if !allowed && !self.api_server_ready().await {
            // A starting API server denies what its authorizer has not
            // loaded yet (RBAC's cache syncs after it starts serving): that
            // denial is not an answer; the caller is told to try again.
            return Err("the Kubernetes API server is not ready yet".into());
        }
        self.decisions.insert(key, allowed).await;
        Ok(allowed)
    }

    /// True when the API server reports itself ready (`/readyz`), as it does
    /// once its authorizers have synced.
    async fn api_server_ready(&self) -> bool {
        let request = warp::http::Request::get("/readyz").body(Vec::new());
        match request {
            Ok(r) => self.client.request_text(r).await.is_ok(),
            Err(_) => false,
        }
    }

    /// May `who` cancel StageRuns in `namespace`?
    pub async fn can_cancel(&self, who: &Identity, namespace: &str) -> Result<bool, String> {
        self.allowed(who, "create", "cancelrequests", namespace)
            .await
    }

    /// May `who` read StageRuns in `namespace`?
    pub async fn can_read(&self, who: &Identity, namespace: &str) -> Result<bool, String> {
        self.allowed(who, "list", "stageruns", namespace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_are_read_in_order() {
        assert_eq!(credentials(&headers(&[])), Credentials::None);
        assert_eq!(
            credentials(&headers(&[("authorization", "Bearer abc")])),
            Credentials::Token("abc".into())
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "bearer abc")])),
            Credentials::Token("abc".into())
        );
        assert_eq!(
            credentials(&headers(&[("x-auth-token", "xyz")])),
            Credentials::Token("xyz".into())
        );
        // admin:badger
        assert_eq!(
            credentials(&headers(&[("authorization", "Basic YWRtaW46YmFkZ2Vy")])),
            Credentials::Basic {
                user: "admin".into(),
                password: "badger".into()
            }
        );
        // Authorization wins over X-Auth-Token.
        assert_eq!(
            credentials(&headers(&[
                ("authorization", "Bearer a"),
                ("x-auth-token", "b")
            ])),
            Credentials::Token("a".into())
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "Basic !!!")])),
            Credentials::Malformed(None)
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "Bearer ")])),
            Credentials::Malformed(None)
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "Digest x")])),
            Credentials::Malformed(None)
        );
        assert_eq!(
            credentials(&headers(&[("x-auth-token", " ")])),
            Credentials::Malformed(None)
        );
        // Another scheme beside X-Auth-Token: the token is used.
        assert_eq!(
            credentials(&headers(&[
                ("authorization", "Digest x"),
                ("x-auth-token", "b")
            ])),
            Credentials::Token("b".into())
        );
        assert_eq!(
            credentials(&headers(&[
                ("authorization", "Negotiate"),
                ("x-auth-token", "b")
            ])),
            Credentials::Token("b".into())
        );
        // A broken credential of a known scheme is not replaced by the token.
        assert_eq!(
            credentials(&headers(&[
                ("authorization", "Basic !!!"),
                ("x-auth-token", "b")
            ])),
            Credentials::Malformed(None)
        );
        // Huawei AK/SK.
        let signed = credentials(&headers(&[(
            "authorization",
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=00",
        )]));
        assert!(matches!(&signed, Credentials::Signed(a) if a.access == "AK"));
        assert!(!format!("{signed:?}").contains("00)"));
        assert!(matches!(
            credentials(&headers(&[("authorization", "SDK-HMAC-SHA256 Access=AK")])),
            Credentials::Malformed(Some(why)) if why.contains("no SignedHeaders")
        ));
        assert!(matches!(
            credentials(&headers(&[("authorization", "SDK-HMAC-SM3 Access=AK")])),
            Credentials::Malformed(Some(why)) if why.contains("not supported")
        ));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = Credentials::Basic {
            user: "admin".into(),
            password: "badger".into(),
        };
        assert!(!format!("{c:?}").contains("badger"));
        assert!(!format!("{:?}", Credentials::Token("s3cret".into())).contains("s3cret"));
    }

    #[test]
    fn users_file_requires_bcrypt_hashes() {
        let dir = std::env::temp_dir().join(format!("users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(
            &good,
            "users:\n- name: admin\n  passwordHash: \"$2b$04$abcdefghijklmnopqrstuuOZlHqgGpL8yqq2F3yj8sjSXyqZcoRHC\"\n  groups: [ops]\n",
        )
        .unwrap();
        let f = UsersFile::load(&good).unwrap();
        assert_eq!(f.users[0].groups, vec!["ops".to_string()]);
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "users:\n- name: admin\n  passwordHash: badger\n").unwrap();
        assert!(
            UsersFile::load(&bad)
                .unwrap_err()
                .to_string()
                .contains("not a bcrypt hash")
        );
    }

    #[test]
    fn users_file_holds_access_keys() {
        let f = UsersFile::parse(
            "accessKeys:\n- accessKey: AK1\n  secretKey: 0123456789abcdef0123\n  username: bot\n  groups: [ci]\n",
        )
        .unwrap();
        assert_eq!(f.access_keys[0].username, "bot");
        assert!(!format!("{f:?}").contains("0123456789abcdef0123"));
        for (bad, why) in [
            (
                "accessKeys:\n- {accessKey: AK1, secretKey: short, username: bot}\n",
                "at least 16",
            ),
            (
                "accessKeys:\n- {accessKey: AK1, secretKey: 0123456789abcdef0123, username: bot}\n- {accessKey: AK1, secretKey: 0123456789abcdef0123, username: bot}\n",
                "listed twice",
            ),
            (
                "accessKeys:\n- {accessKey: AK1, secretKey: 0123456789abcdef0123, username: \"\"}\n",
                "username is required",
            ),
            (
                "accessKeys:\n- {accessKey: AK1, secretKey: 0123456789abcdef0123}\n",
                "username",
            ),
        ] {
            let e = UsersFile::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("0123456789abcdef0123"), "{e}");
        }
    }

    #[test]
    fn a_changed_users_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("users-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Laid out like a Secret volume: users.yaml -> ..data/users.yaml,
        // ..data -> a timestamped directory swapped atomically.
        let publish = |n: u32, text: &str| {
            let ts = dir.join(format!("..ts{n}"));
            std::fs::create_dir_all(&ts).unwrap();
            std::fs::write(ts.join("users.yaml"), text).unwrap();
            let tmp = dir.join("..data_tmp");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(format!("..ts{n}"), &tmp).unwrap();
            std::fs::rename(&tmp, dir.join("..data")).unwrap();
        };
        let key = |sk: &str| {
            format!("accessKeys:\n- {{accessKey: AK1, secretKey: {sk}, username: bot}}\n")
        };
        publish(1, &key("first-secret-key-0001"));
        let path = dir.join("users.yaml");
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink("..data/users.yaml", &path).unwrap();

        let mut watch = UsersFileWatch::new(path.clone());
        assert!(watch.poll().is_none(), "unchanged");
        publish(2, &key("second-secret-key-002"));
        let reloaded = watch.poll().expect("reloaded");
        assert_eq!(
            reloaded.access_keys[0].secret_key,
            aksk::SecretKey::new("second-secret-key-002")
        );
        assert!(watch.poll().is_none(), "seen already");
        publish(3, "accessKeys: [{accessKey: AK1}]\n");
        assert!(watch.poll().is_none(), "a broken file is ignored");
        publish(4, &key("fourth-secret-key-004"));
        assert!(watch.poll().is_some(), "a fixed file is loaded");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
