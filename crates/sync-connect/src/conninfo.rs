//! Taking libpq's TLS parameters out of a connection string.
//!
//! tokio-postgres parses `sslmode` (disable / prefer / require only) but rejects
//! `sslmode=verify-ca`, `sslmode=verify-full` and `sslrootcert=…`, which libpq —
//! and so every `DATABASE_URL` copied from a provider's console — may carry.
//! [`split_tls_params`] removes what tokio-postgres cannot take and hands it back,
//! for both connection-string forms: a `postgres://` URL (query parameters) and a
//! `key=value` list.

/// The TLS parameters found in a connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// The `sslmode` value as written (any of libpq's names).
    pub(crate) sslmode: Option<String>,
    /// The `sslrootcert` value as written (a file path, or libpq's `system`).
    pub(crate) sslrootcert: Option<String>,
}

/// Splits `text` into a connection string tokio-postgres accepts and the TLS
/// parameters it carried. `sslrootcert` is removed; `sslmode=verify-ca` and
/// `sslmode=verify-full` become `sslmode=require` (the verification itself is
/// ours: see [`crate::TlsOptions`]). Everything else is kept as written.
pub(crate) fn split_tls_params(text: &str) -> Result<(String, TlsParams), String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(split_url(text))
    } else {
        split_key_value(text)
    }
}

fn wire_sslmode(value: &str) -> &str {
    match value {
        "verify-ca" | "verify-full" => "require",
        other => other,
    }
}

fn split_url(text: &str) -> (String, TlsParams) {
    let Some((base, query)) = text.split_once('?') else {
        return (text.to_owned(), TlsParams::default());
    };
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key).as_str() {
            "sslrootcert" => params.sslrootcert = Some(percent_decode(value)),
            "sslmode" => {
                let mode = percent_decode(value);
                kept.push(format!("sslmode={}", wire_sslmode(&mode)));
                params.sslmode = Some(mode);
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rebuilt, params)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses libpq's `key = value` list (values optionally single-quoted, `\` escapes).
fn parse_key_value(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("missing `=` after `{key}`"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value for `{key}`")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn split_key_value(text: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    for (key, value) in parse_key_value(text)? {
        match key.as_str() {
            "sslrootcert" => params.sslrootcert = Some(value),
            "sslmode" => {
                kept.push(format!("sslmode={}", wire_sslmode(&value)));
                params.sslmode = Some(value);
            }
            _ => {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push(format!("{key}='{quoted}'"));
            }
        }
    }
    Ok((kept.join(" "), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_loses_sslrootcert_and_verify_modes_become_require() {
        let (rest, p) = split_tls_params(
            "postgresql://u:p@db.example.com:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://u:p@db.example.com:5432/app?sslmode=require&application_name=x"
        );
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        rest.parse::<tokio_postgres::Config>().unwrap();
    }

    #[test]
    fn url_without_tls_params_is_unchanged() {
        let url = "postgres://u@localhost/db?application_name=a";
        assert_eq!(split_tls_params(url).unwrap().0, url);
        let (rest, p) = split_tls_params("postgres://u@h/db?sslrootcert=system").unwrap();
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(p.sslrootcert.as_deref(), Some("system"));
    }

    #[test]
    fn key_value_with_quotes_and_escapes() {
        let (rest, p) = split_tls_params(
            "host=db.example.com  password='it\\'s secret' sslmode = verify-ca sslrootcert='/a b/ca.pem'",
        )
        .unwrap();
        assert_eq!(p.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/a b/ca.pem"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's secret"[..]));
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn key_value_errors_are_reported() {
        assert!(split_tls_params("host").is_err());
        assert!(split_tls_params("password='open").is_err());
    }
}
