//! A declared body above the limit is refused before the body is read: JSON
//! 413 at once, not a wait for a body that may never come.

mod api_common;

use std::time::Duration;

use serde_json::Value;
use sync_api::auth::KeySource;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use api_common::{claims, sign_hs256, Options, Service};

#[tokio::test]
async fn a_huge_content_length_gets_a_json_413_before_any_body() {
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let mut options = Options::new(KeySource::Hs256Secret(secret.clone()));
    // Longer than the wait below: a 503 after the request timeout would fail.
    options.limits.request_timeout = Duration::from_secs(120);
    let service = Service::start_with(options).await;
    let token = sign_hs256(&secret, &claims(service.fixture.user_a), None);
    let mut conn = tokio::net::TcpStream::connect(service.running.addr)
        .await
        .unwrap();
    conn.write_all(
        format!(
            "POST /api/v1/sync/progress HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{{\"sync_"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some((_, body)) = text.split_once("\r\n\r\n") {
                if serde_json::from_str::<Value>(body).is_ok() {
                    break;
                }
            }
        }
    })
    .await
    .expect("the 413 comes without the body being sent");
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["code"], "payload_too_large", "{text}");
    assert!(text
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
}
