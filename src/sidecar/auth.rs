//! Who is calling, and may they? Tokens are checked with a Kubernetes
//! TokenReview, Basic credentials against a users file of bcrypt hashes;
//! every decision is a SubjectAccessReview. Results are cached briefly under
//! a hash of the credential, never the credential itself, and no credential
//! is ever logged.

use std::path::Path;
use std::sync::Arc;
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

use crate::labels::digest;

/// How callers are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// TokenReview and the users file; SubjectAccessReview for every decision.
    Kubernetes,
    /// Trust every caller with every right. For local use only.
    None,
}

/// An authenticated caller, as Kubernetes knows them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub username: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
}

/// What the request presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Token(String),
    Basic { user: String, password: String },
    Malformed,
}

impl std::fmt::Debug for Credentials {
    // Never print a secret, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Malformed => f.write_str("Malformed"),
        }
    }
}

/// Reads credentials: `Authorization: Bearer|bearer <t>`, `Authorization:
/// Basic <b64>`, then `X-Auth-Token: <t>`.
pub fn credentials(headers: &HeaderMap) -> Credentials {
    if let Some(value) = headers.get(warp::http::header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else {
            return Credentials::Malformed;
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        return match scheme.to_ascii_lowercase().as_str() {
            "bearer" if !rest.is_empty() => Credentials::Token(rest.to_string()),
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
                .unwrap_or(Credentials::Malformed),
            _ => Credentials::Malformed,
        };
    }
    match headers.get("x-auth-token").map(|v| v.to_str()) {
        Some(Ok(t)) if !t.trim().is_empty() => Credentials::Token(t.trim().to_string()),
        Some(_) => Credentials::Malformed,
        None => Credentials::None,
    }
}

/// Why a caller is not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Nothing presented.
    Missing,
    /// Presented, but not valid.
    Invalid,
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

/// The users file (YAML or JSON): `users: [{name, passwordHash, username, groups}]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UsersFile {
    #[serde(default)]
    pub users: Vec<FileUser>,
}

impl UsersFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read users file {}: {e}", path.display()))?;
        let file: UsersFile = yaml_serde::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid users file {}: {e}", path.display()))?;
        for u in &file.users {
            if !u.password_hash.starts_with("$2") {
                anyhow::bail!(
                    "user {} in {}: passwordHash is not a bcrypt hash",
                    u.name,
                    path.display()
                );
            }
        }
        Ok(file)
    }
}

/// Authenticates and authorises callers.
#[derive(Clone)]
pub struct Authenticator {
    mode: AuthMode,
    client: Client,
    users: Arc<UsersFile>,
    /// Checked in place of an unknown user's hash, so that a login takes as
    /// long whether or not the user exists.
    decoy_hash: Arc<String>,
    /// sha256(token) → identity (None: rejected).
    tokens: Cache<String, Option<Identity>>,
    /// sha256(user, password) → identity, for verified Basic logins.
    logins: Cache<String, Option<Identity>>,
    /// (identity, verb, resource, namespace) → allowed.
    decisions: Cache<String, bool>,
}

const GROUP: &str = "cancel.dev";

impl Authenticator {
    pub fn new(mode: AuthMode, client: Client, users: UsersFile, ttl: Duration) -> Self {
        // As costly as the users' own hashes ("$2b$NN$...").
        let cost = users
            .users
            .first()
            .and_then(|u| u.password_hash.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(4);
        let decoy_hash = bcrypt::hash("no such user", cost).unwrap_or_default();
        Authenticator {
            mode,
            client,
            users: Arc::new(users),
            decoy_hash: Arc::new(decoy_hash),
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
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
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
            Credentials::Malformed => Err(AuthError::Invalid),
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
                let found = self.users.users.iter().find(|u| &u.name == user).cloned();
                let hash = found
                    .as_ref()
                    .map(|u| u.password_hash.clone())
                    .unwrap_or_else(|| self.decoy_hash.as_ref().clone());
                let password = password.clone();
                // bcrypt is slow by design: keep it off the async workers.
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
        self.decisions.insert(key, allowed).await;
        Ok(allowed)
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
            Credentials::Malformed
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "Bearer ")])),
            Credentials::Malformed
        );
        assert_eq!(
            credentials(&headers(&[("authorization", "Digest x")])),
            Credentials::Malformed
        );
        assert_eq!(
            credentials(&headers(&[("x-auth-token", " ")])),
            Credentials::Malformed
        );
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
}
