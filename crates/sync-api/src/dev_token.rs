//! Development tokens (`sync-api dev-token`): a JWT for one user, signed with a
//! local key file, so the dashboard and the API can be tried without an auth
//! provider. **For development only**: whoever holds the key file can act as
//! any user of a service that trusts it.
//!
//! The key file is either
//! * a PEM private key: EC P-256 (ES256), RSA (RS256) or Ed25519 (EdDSA),
//!   e.g. `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256
//!   -out dev-key.pem`; the service then verifies with the JWKS that
//!   [`public_jwks`] prints (`sync-api dev-token --print-jwks … > dev-jwks.json`,
//!   served with `--jwks-file dev-jwks.json`); or
//! * an HS256 secret of at least 32 bytes (any file not starting with
//!   `-----BEGIN`), the same file the service reads with
//!   `--jwt-hs256-secret-file`.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

/// Reads a PEM private key of one kind.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

/// Longest lifetime of a development token: one day.
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// A signing key read from a key file.
pub struct DevKey {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevKey {
    /// Reads a key file's bytes (see the module docs); asymmetric keys get
    /// `kid` in the tokens' header and the JWKS.
    ///
    /// # Errors
    /// A message when the PEM is not an EC P-256, RSA or Ed25519 private key,
    /// or an HS256 secret is shorter than 32 bytes.
    pub fn from_file_bytes(bytes: &[u8], kid: &str) -> Result<DevKey, String> {
        let text = String::from_utf8_lossy(bytes);
        if text.trim_start().starts_with("-----BEGIN") {
            let pem = text.as_bytes();
            let tries: [(Algorithm, PemParser); 3] = [
                (Algorithm::ES256, EncodingKey::from_ec_pem),
                (Algorithm::RS256, EncodingKey::from_rsa_pem),
                (Algorithm::EdDSA, EncodingKey::from_ed_pem),
            ];
            for (alg, parse) in tries {
                if let Ok(key) = parse(pem) {
                    // A key that parses but cannot sign (e.g. another curve) is skipped.
                    let probe =
                        jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({}), &key);
                    if probe.is_ok() {
                        return Ok(DevKey {
                            key,
                            alg,
                            kid: Some(kid.to_owned()),
                        });
                    }
                }
            }
            return Err(
                "the PEM key file is not an EC P-256, RSA or Ed25519 private key (PKCS#8 or SEC1)"
                    .into(),
            );
        }
        let mut secret = bytes.to_vec();
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        if secret.len() < 32 {
            return Err("an HS256 secret must be at least 32 bytes".into());
        }
        Ok(DevKey {
            key: EncodingKey::from_secret(&secret),
            alg: Algorithm::HS256,
            kid: None,
        })
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// A token for `user`: `sub`, `iss`, `aud`, `iat`, `exp = iat + ttl_secs`,
    /// `role: authenticated`.
    ///
    /// # Errors
    /// A message when `ttl_secs` is 0 or above [`MAX_TTL_SECS`], or signing fails.
    pub fn sign(
        &self,
        user: Uuid,
        issuer: &str,
        audience: &str,
        ttl_secs: u64,
    ) -> Result<String, String> {
        if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
            return Err(format!("the lifetime must be 1 to {MAX_TTL_SECS} seconds"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| format!("system clock: {e}"))?
            .as_secs();
        let claims = serde_json::json!({
            "sub": user.to_string(),
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + ttl_secs,
            "role": "authenticated",
        });
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("signing: {e}"))
    }

    /// The public JWKS (one key, with `kid` and `alg`) for the service's
    /// `--jwks-file`.
    ///
    /// # Errors
    /// A message for an HS256 secret (it has no public half: start the service
    /// with `--jwt-hs256-secret-file` and the same file instead).
    pub fn public_jwks(&self) -> Result<String, String> {
        if self.alg == Algorithm::HS256 {
            return Err("an HS256 secret has no public JWKS; start sync-api with \
                        --jwt-hs256-secret-file <the same file>"
                .into());
        }
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg)
            .map_err(|e| format!("deriving the public key: {e}"))?;
        jwk.common.key_id = self.kid.clone();
        serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] })
            .map_err(|e| format!("writing the JWKS: {e}"))
    }
}
