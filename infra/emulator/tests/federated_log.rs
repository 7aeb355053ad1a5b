//! What the emulator logs on the secretless path: never the AWS JWT, the client assertion or the
//! caller's access key id. Its own test binary, because it installs the global subscriber.

use std::net::SocketAddr;

use defender_emulator::demo::{CLIENT_ID, CONTOSO_TENANT_ID as CONTOSO, FIC_AUDIENCE};
use defender_emulator::{RunningEmulator, Scenario};
use reqwest::StatusCode;

const ACCESS_KEY_ID: &str = "AKIDLOGTEST";

async fn aws_jwt(emulator: &RunningEmulator) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/sts", emulator.base_url()))
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20261203/eu-west-1/sts/aws4_request, \
                     SignedHeaders=host, Signature=0000"
            ),
        )
        .form(&[
            ("Action", "GetWebIdentityToken"),
            ("Version", "2011-06-15"),
            ("SigningAlgorithm", "RS256"),
            ("Audience.member.1", FIC_AUDIENCE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let start = text.find("<WebIdentityToken>").unwrap() + "<WebIdentityToken>".len();
    let end = text.find("</WebIdentityToken>").unwrap();
    text[start..end].to_owned()
}

async fn token_status(emulator: &RunningEmulator, assertion: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!(
            "{}/{CONTOSO}/oauth2/v2.0/token",
            emulator.base_url()
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", "https://api.security.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

/// Collects everything the emulator logs.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn neither_the_aws_token_nor_the_assertion_reaches_the_log() {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "defender_emulator=trace",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global, and alone in this test binary: a thread-local subscriber misses events whose
    // callsites another test thread evaluated first.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let emulator =
        defender_emulator::start(Scenario::demo(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
    let token = aws_jwt(&emulator).await;
    assert_eq!(token_status(&emulator, &token).await, StatusCode::OK);
    emulator
        .handle()
        .set_federated_credentials(CLIENT_ID, &[])
        .unwrap();
    assert_eq!(
        token_status(&emulator, &token).await,
        StatusCode::BAD_REQUEST
    );
    emulator.shutdown().await;

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("sts GetWebIdentityToken issued a token"),
        "{text}"
    );
    assert!(text.contains("token request"), "{text}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "the JWT reached the log");
    assert!(
        !text.contains(ACCESS_KEY_ID),
        "the access key id reached the log"
    );
}
