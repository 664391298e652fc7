//! Bearer JWT verification: asymmetric keys from a JWKS (file or URL), or one
//! shared HS256 secret, never both (no algorithm confusion).
//!
//! | check | rule |
//! |---|---|
//! | `alg` | JWKS: the algorithm of the key the `kid` names (ES256/ES384, RS*/PS*, EdDSA); HS256 mode: HS256 only. `none` never parses. |
//! | `exp` | required; `nbf` honoured when present; [`LEEWAY_SECS`] of clock skew |
//! | `iss` | must equal the configured issuer |
//! | `aud` | must contain the configured audience (default `authenticated`) |
//! | `sub` | required, a UUID: the user the tenant scope acts for |
//!
//! Every failure is a 401 whose body says only that the token was refused,
//! never whether the user exists (see [`AuthError`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use uuid::Uuid;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest token accepted, in bytes (checked before any parsing).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest JWKS document read from a URL or a file, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Keys fetched from a JWKS are used for at most this long before a refetch.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// At most one refetch per this interval on unknown `kid`s (rate limit).
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Bound on one JWKS fetch (connect + response).
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS document on disk (read at start-up and on unknown `kid`s).
    JwksFile(PathBuf),
    /// A JWKS URL (`https://…/.well-known/jwks.json`), fetched over HTTP(S).
    JwksUrl(String),
    /// A shared HS256 secret (the file's bytes, a trailing newline removed).
    Hs256Secret(Vec<u8>),
}

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The keys.
    pub keys: KeySource,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// At most one JWKS refetch per this interval on unknown `kid`s
    /// (normally [`JWKS_MIN_REFRESH`]).
    pub jwks_min_refresh: Duration,
}

/// Why a request was refused. Shown to the client only as a generic sentence;
/// the variant goes to the log (debug level).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing bearer token")]
    Missing,
    /// More than one `Authorization` header (a 400, not a 401).
    #[error("more than one Authorization header")]
    Ambiguous,
    /// Not `Bearer <token>`, too long, or not a JWT.
    #[error("malformed bearer token")]
    Malformed,
    /// Signature, algorithm, key, or a claim check failed.
    #[error("token refused: {0}")]
    Refused(String),
    /// The JWKS could not be obtained (a 503: not the client's fault).
    #[error("verification keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// A verified token: the user and the claims as they were signed.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `sub`.
    pub user: Uuid,
    /// Every claim of the token.
    pub claims: serde_json::Value,
}

struct JwksKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct JwksState {
    keys: HashMap<String, Arc<JwksKey>>,
    /// Keys without a `kid` (usable only when the set has exactly one key).
    only: Option<Arc<JwksKey>>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// The verifier shared by all requests.
pub struct Verifier {
    config: AuthConfig,
    hs256: Option<DecodingKey>,
    jwks: tokio::sync::RwLock<JwksState>,
    refresh: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

/// The algorithms a JWK may verify (never an HMAC one).
fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        let alg = match alg {
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        };
        return alg.into_iter().collect();
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys in a JWKS are ignored: a JWKS is public.
        AlgorithmParameters::OctetKey(_) => vec![],
    }
}

/// Parses a JWKS document into usable keys (unusable ones are skipped).
fn parse_jwks(bytes: &[u8]) -> Result<JwksState, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut state = JwksState::default();
    let mut usable = Vec::new();
    for jwk in &set.keys {
        let algorithms = algorithms_for(jwk);
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let key = Arc::new(JwksKey { key, algorithms });
        if let Some(kid) = &jwk.common.key_id {
            state.keys.insert(kid.clone(), key.clone());
        }
        usable.push(key);
    }
    if usable.is_empty() {
        return Err("the JWKS has no usable asymmetric signing key".into());
    }
    if usable.len() == 1 {
        state.only = usable.pop();
    }
    Ok(state)
}

impl Verifier {
    /// A verifier for `config`. A JWKS file is read now; a JWKS URL is
    /// fetched on first use (so the service starts while the IdP is down).
    ///
    /// # Errors
    /// A message when the HS256 secret is shorter than 32 bytes, the issuer
    /// or audience is empty, or the JWKS file cannot be read or has no usable key.
    pub async fn new(config: AuthConfig) -> Result<Verifier, String> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err("the JWT issuer and audience must not be empty".into());
        }
        let hs256 = match &config.keys {
            KeySource::Hs256Secret(secret) if secret.len() < 32 => {
                return Err("the HS256 secret must be at least 32 bytes".into())
            }
            KeySource::Hs256Secret(secret) => Some(DecodingKey::from_secret(secret)),
            _ => None,
        };
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("building the JWKS HTTP client: {e}"))?;
        let verifier = Verifier {
            config,
            hs256,
            jwks: tokio::sync::RwLock::new(JwksState::default()),
            refresh: tokio::sync::Mutex::new(()),
            http,
        };
        if let KeySource::JwksFile(_) = verifier.config.keys {
            let state = verifier.load_jwks().await?;
            *verifier.jwks.write().await = state;
        }
        Ok(verifier)
    }

    async fn load_jwks(&self) -> Result<JwksState, String> {
        let bytes = match &self.config.keys {
            KeySource::JwksFile(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(format!(
                        "{} is larger than {MAX_JWKS_BYTES} bytes",
                        path.display()
                    ));
                }
                bytes
            }
            KeySource::JwksUrl(url) => {
                let mut resp = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("fetching the JWKS: {e}"))?;
                let mut bytes = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| format!("reading the JWKS: {e}"))?
                {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_JWKS_BYTES {
                        return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
                    }
                }
                bytes
            }
            KeySource::Hs256Secret(_) => return Err("no JWKS configured".into()),
        };
        let mut state = parse_jwks(&bytes)?;
        state.fetched = Some(Instant::now());
        Ok(state)
    }

    /// Refetches the JWKS unless another refetch happened within
    /// [`JWKS_MIN_REFRESH`] (or `force_stale` and the keys are past max age).
    async fn refresh(&self, stale_only: bool) -> Result<(), AuthError> {
        let _one = self.refresh.lock().await;
        {
            let state = self.jwks.read().await;
            let fresh = state.fetched.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE);
            if stale_only && fresh {
                return Ok(()); // another request refreshed it meanwhile
            }
            if fresh
                && state
                    .last_attempt
                    .is_some_and(|t| t.elapsed() < self.config.jwks_min_refresh)
            {
                return Ok(()); // rate-limited
            }
            if !fresh
                && state
                    .last_attempt
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return Err(AuthError::KeysUnavailable(
                    "the last JWKS fetch failed moments ago".into(),
                ));
            }
        }
        self.jwks.write().await.last_attempt = Some(Instant::now());
        match self.load_jwks().await {
            Ok(mut state) => {
                state.last_attempt = Some(Instant::now());
                *self.jwks.write().await = state;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed");
                Err(AuthError::KeysUnavailable(e))
            }
        }
    }

    async fn jwks_key(&self, kid: Option<&str>) -> Result<Arc<JwksKey>, AuthError> {
        let lookup = |state: &JwksState| match kid {
            Some(kid) => state.keys.get(kid).cloned().or_else(|| {
                // A key published without a kid matches any kid only when alone.
                state.only.clone().filter(|_| state.keys.is_empty())
            }),
            None => state.only.clone(),
        };
        let stale = {
            let state = self.jwks.read().await;
            state.fetched.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE)
        };
        if stale {
            self.refresh(true).await?;
        }
        if let Some(key) = lookup(&*self.jwks.read().await) {
            return Ok(key);
        }
        if kid.is_some() {
            // Unknown kid: the IdP may have rotated its keys (rate-limited).
            self.refresh(false).await?;
            if let Some(key) = lookup(&*self.jwks.read().await) {
                return Ok(key);
            }
        }
        Err(AuthError::Refused("no key for the token's kid".into()))
    }

    fn validation(&self, algorithms: Vec<Algorithm>) -> Validation {
        let mut v = Validation::new(algorithms[0]);
        v.algorithms = algorithms;
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v
    }

    /// Verifies `token` and returns its user and claims.
    ///
    /// # Errors
    /// [`AuthError::Malformed`] / [`AuthError::Refused`] for any token that
    /// does not pass; [`AuthError::KeysUnavailable`] when the JWKS URL cannot
    /// be fetched and no fresh keys are cached.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        if token.len() > MAX_TOKEN_BYTES || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        // `alg: none` and unknown algorithms fail here (no such Algorithm).
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let data = match &self.hs256 {
            Some(secret) => {
                if header.alg != Algorithm::HS256 {
                    return Err(AuthError::Refused(format!(
                        "algorithm {:?} is not HS256",
                        header.alg
                    )));
                }
                jsonwebtoken::decode::<serde_json::Value>(
                    token,
                    secret,
                    &self.validation(vec![Algorithm::HS256]),
                )
            }
            None => {
                if matches!(
                    header.alg,
                    Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                ) {
                    return Err(AuthError::Refused(
                        "HMAC tokens are not accepted with a JWKS".into(),
                    ));
                }
                let key = self.jwks_key(header.kid.as_deref()).await?;
                if !key.algorithms.contains(&header.alg) {
                    return Err(AuthError::Refused(format!(
                        "algorithm {:?} does not match the key",
                        header.alg
                    )));
                }
                jsonwebtoken::decode::<serde_json::Value>(
                    token,
                    &key.key,
                    &self.validation(key.algorithms.clone()),
                )
            }
        }
        .map_err(|e| AuthError::Refused(e.to_string()))?;
        let user = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .and_then(|s| s.parse::<Uuid>().ok())
            .ok_or_else(|| AuthError::Refused("sub is not a user id (UUID)".into()))?;
        Ok(Verified {
            user,
            claims: data.claims,
        })
    }
}
