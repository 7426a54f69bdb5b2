//! Google Cloud KMS has no emulator, so this test runs a stand-in of the two endpoints the
//! operator calls, asserting what the real API requires:
//! - the OAuth token endpoint (`token_uri` of a service-account key): a JWT-bearer grant
//!   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`) whose assertion is an RS256 JWT
//!   signed by the key (checked with `openssl dgst -verify`), issued by the account's
//!   `client_email`, for the `token_uri` audience, with the Cloud KMS scope;
//! - `POST /v1/{name}:decrypt` (projects.locations.keyRings.cryptoKeys.decrypt): the bearer
//!   token it issued, a full key resource name, and a JSON body whose `ciphertext` is base64.
//!   Its "ciphertext" is `GCPKMS1` + the plaintext XOR 0x5a; it answers `{"plaintext"}` as the
//!   real API does, or the real API's error shape;
//! - `POST /v1/{name}:encrypt`, for the real `sops` binary (Google's REST client, pointed at the
//!   stand-in by `SOPS_GCP_KMS_ENDPOINT`) making a `gcp_kms` document that the operator then
//!   decrypts end to end.

mod common;
mod operator;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use secret_relay::api::{ExternalSecret, SecretStore};
use serde_json::json;

use common::TestEnv;
use operator::{apply_yaml, ready_message, secret_data, wait_reason};

const KEY_NAME: &str = "projects/p1/locations/global/keyRings/ring/cryptoKeys/app";
const TOKEN: &str = "ya29.stand-in-token";
const CLIENT_EMAIL: &str = "relay@p1.iam.gserviceaccount.com";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn url_b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .expect("JWT part is base64url")
}

/// The stand-in's ciphertext of `plaintext`.
fn standin_encrypt(plaintext: &[u8]) -> Vec<u8> {
    let mut out = b"GCPKMS1".to_vec();
    out.extend(plaintext.iter().map(|b| b ^ 0x5a));
    out
}

#[derive(Clone)]
struct StandIn {
    public_key_pem: std::path::PathBuf,
    token_uri: Arc<Mutex<String>>,
    /// Every request's failures of the real API's requirements (must stay empty).
    violations: Arc<Mutex<Vec<String>>>,
    decrypt_calls: Arc<Mutex<u32>>,
}

impl StandIn {
    fn violation(&self, v: String) {
        eprintln!("stand-in: the real API would refuse: {v}");
        self.violations.lock().unwrap().push(v);
    }
}

async fn token(State(s): State<StandIn>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        s.violation(format!(
            "token: content-type {:?}",
            headers.get("content-type")
        ));
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        s.violation(format!("token: grant_type {:?}", form.get("grant_type")));
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"unsupported_grant_type"}"#.into(),
        );
    }
    let Some(jwt) = form.get("assertion") else {
        s.violation("token: no assertion".into());
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request"}"#.into(),
        );
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        s.violation("token: assertion is not a JWS".into());
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant"}"#.into(),
        );
    }
    let header: serde_json::Value = serde_json::from_slice(&url_b64(parts[0])).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&url_b64(parts[1])).unwrap();
    if header["alg"] != "RS256" {
        s.violation(format!("token: alg {}", header["alg"]));
    }
    if claims["iss"] != CLIENT_EMAIL {
        s.violation(format!("token: iss {}", claims["iss"]));
    }
    if claims["aud"] != *s.token_uri.lock().unwrap() {
        s.violation(format!("token: aud {}", claims["aud"]));
    }
    let scope = claims["scope"].as_str().unwrap_or_default();
    if !scope.split(' ').any(|sc| {
        sc == "https://www.googleapis.com/auth/cloudkms"
            || sc == "https://www.googleapis.com/auth/cloud-platform"
    }) {
        s.violation(format!("token: scope {scope:?}"));
    }
    // The signature over `header.claims`, checked by openssl with the account's public key.
    let dir = std::env::temp_dir().join(format!("sr-gcp-{}", common::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("signed"), format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(dir.join("sig"), url_b64(parts[2])).unwrap();
    let verified = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&s.public_key_pem)
        .arg("-signature")
        .arg(dir.join("sig"))
        .arg(dir.join("signed"))
        .output()
        .expect("run openssl");
    let _ = std::fs::remove_dir_all(&dir);
    if !verified.status.success() {
        s.violation("token: the JWT signature does not verify with the account's key".into());
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant"}"#.into(),
        );
    }
    (
        StatusCode::OK,
        json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}).to_string(),
    )
}

/// `POST /v1/{name}:decrypt` and `:encrypt`.
async fn crypto_key_call(
    State(s): State<StandIn>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    *s.decrypt_calls.lock().unwrap() += 1;
    let error = |code: u16, status: &str, message: &str| {
        (
            StatusCode::from_u16(code).unwrap(),
            json!({"error": {"code": code, "message": message, "status": status}}).to_string(),
        )
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        s.violation(format!(
            "decrypt: authorization {:?}",
            headers.get("authorization")
        ));
        return error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let (name, encrypt) = match (rest.strip_suffix(":decrypt"), rest.strip_suffix(":encrypt")) {
        (Some(name), _) => (name, false),
        (None, Some(name)) => (name, true),
        (None, None) => {
            s.violation(format!(
                "decrypt: path {rest:?} ends in neither :decrypt nor :encrypt"
            ));
            return error(404, "NOT_FOUND", "no such method");
        }
    };
    if name != KEY_NAME {
        return error(404, "NOT_FOUND", &format!("CryptoKey {name} not found."));
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        s.violation("decrypt: body is not JSON".into());
        return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
    };
    if encrypt {
        // projects.locations.keyRings.cryptoKeys.encrypt (sops encrypting a data key).
        let Some(Ok(plaintext)) = req["plaintext"].as_str().map(|p| b64().decode(p)) else {
            s.violation(format!(
                "encrypt: plaintext is not base64: {}",
                req["plaintext"]
            ));
            return error(400, "INVALID_ARGUMENT", "Invalid value at 'plaintext'.");
        };
        return (
            StatusCode::OK,
            json!({"name": format!("{KEY_NAME}/cryptoKeyVersions/1"),
                   "ciphertext": b64().encode(standin_encrypt(&plaintext))})
            .to_string(),
        );
    }
    let Some(Ok(ciphertext)) = req["ciphertext"].as_str().map(|c| b64().decode(c)) else {
        s.violation(format!(
            "decrypt: ciphertext is not base64: {}",
            req["ciphertext"]
        ));
        return error(400, "INVALID_ARGUMENT", "Invalid value at 'ciphertext'.");
    };
    let Some(inner) = ciphertext.strip_prefix(b"GCPKMS1") else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "Decryption failed: the ciphertext is invalid.",
        );
    };
    let plaintext: Vec<u8> = inner.iter().map(|b| b ^ 0x5a).collect();
    (
        StatusCode::OK,
        json!({"plaintext": b64().encode(plaintext), "usedPrimary": true}).to_string(),
    )
}

/// The stand-in serving on a loopback port, with a service-account key whose `token_uri` is
/// its token endpoint.
struct Running {
    state: StandIn,
    base: String,
    key_json: serde_json::Value,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    dir: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    fn assert_no_violations(&self) {
        let violations = self.state.violations.lock().unwrap().clone();
        assert!(
            violations.is_empty(),
            "requests the real API would refuse: {violations:#?}"
        );
    }
}

async fn start_stand_in() -> Running {
    // A service-account key: an RSA key made by openssl.
    let dir = std::env::temp_dir().join(format!("sr-gcp-key-{}", common::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key_pem, pub_pem) = (dir.join("key.pem"), dir.join("pub.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_pem)
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key_pem)
            .arg("-out")
            .arg(&pub_pem)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl made the key pair");

    let state = StandIn {
        public_key_pem: pub_pem.clone(),
        token_uri: Arc::default(),
        violations: Arc::default(),
        decrypt_calls: Arc::default(),
    };
    let app = Router::new()
        .route("/token", post(token))
        .route("/v1/{*rest}", post(crypto_key_call))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *state.token_uri.lock().unwrap() = format!("{base}/token");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let key_json = json!({
        "type": "service_account",
        "project_id": "p1",
        "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&key_pem).unwrap(),
        "client_email": CLIENT_EMAIL,
        "client_id": "1",
        "auth_uri": format!("{base}/auth"),
        "token_uri": format!("{base}/token"),
    });
    Running {
        state,
        base,
        key_json,
        server,
        dir,
    }
}

/// A namespace with the service-account key in Secret `gcp-sa`, and the operator watching it.
async fn namespace_with_key(
    env: &TestEnv,
    key_json: &serde_json::Value,
) -> (String, Api<Secret>, operator::Operator) {
    let ns = env.namespace("gcp").await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let sa: Secret = serde_json::from_value(json!({
        "metadata": {"name": "gcp-sa"},
        "stringData": {"key.json": key_json.to_string()}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &sa).await.unwrap();
    let op = operator::start(&env.kube, &ns, false).await;
    (ns, secrets, op)
}

#[tokio::test]
async fn gcp_kms_raw_ciphertext_through_a_stand_in() {
    let Some(env) = TestEnv::get("gcp_kms_raw_ciphertext_through_a_stand_in").await else {
        return;
    };
    let standin = start_stand_in().await;
    let (state, base) = (&standin.state, &standin.base);
    let (ns, secrets, _op) = namespace_with_key(&env, &standin.key_json).await;
    let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), &ns);
    for (name, key_name) in [
        ("gcp", KEY_NAME),
        (
            "gcp-other",
            "projects/p1/locations/global/keyRings/ring/cryptoKeys/gone",
        ),
    ] {
        apply_yaml(
            &stores,
            &format!(
                r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: {name}}}
spec:
  provider:
    kms:
      gcp:
        keyName: {key_name}
        endpoint: {base}
        auth:
          secretRef: {{name: gcp-sa, key: key.json}}
"#
            ),
        )
        .await;
    }
    let blob = b64().encode(standin_encrypt(b"gcp-s3cr3t"));
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let es_yaml = |name: &str, store: &str, key: &str| {
        format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  secretStoreRef: {{name: {store}}}
  data:
  - secretKey: token
    remoteRef: {{key: "{key}"}}
"#
        )
    };
    apply_yaml(&es, &es_yaml("app", "gcp", &blob)).await;
    wait_reason(&es, "app", "SecretSynced").await;
    let s = secrets.get("app").await.unwrap();
    assert_eq!(secret_data(&s)["token"], "gcp-s3cr3t");

    // The real API's refusals reach the condition with Google's status and message.
    apply_yaml(
        &es,
        &es_yaml("bad", "gcp", &b64().encode(b"not a ciphertext")),
    )
    .await;
    let bad = wait_reason(&es, "bad", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&bad),
        format!(
            "gcp kms decrypt {KEY_NAME}: INVALID_ARGUMENT: Decryption failed: the ciphertext is invalid."
        )
    );
    apply_yaml(&es, &es_yaml("gone", "gcp-other", &blob)).await;
    let gone = wait_reason(&es, "gone", "SecretSyncedError").await;
    assert!(
        ready_message(&gone).ends_with("NOT_FOUND: CryptoKey projects/p1/locations/global/keyRings/ring/cryptoKeys/gone not found."),
        "{}",
        ready_message(&gone)
    );

    assert!(*state.decrypt_calls.lock().unwrap() >= 3);
    standin.assert_no_violations();
}

#[tokio::test]
async fn gcp_kms_sops_document_through_a_stand_in() {
    let Some(env) = TestEnv::get("gcp_kms_sops_document_through_a_stand_in").await else {
        return;
    };
    let standin = start_stand_in().await;
    // The real sops encrypts with `--gcp-kms`, through Google's REST client pointed at the
    // stand-in (SOPS_GCP_KMS_ENDPOINT, SOPS_GCP_KMS_CLIENT_TYPE=rest) with its access token.
    let file = standin.dir.join("app.enc.yaml");
    std::fs::write(&file, "db:\n  password: gcp-sops-s3cr3t\nport: 5432\n").unwrap();
    // Async: the stand-in is served by this test's own (single-threaded) runtime.
    let out = tokio::process::Command::new(env.tool("SOPS"))
        .args(["-e", "-i", "--gcp-kms", KEY_NAME])
        .arg(&file)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &standin.dir)
        .env("SOPS_GCP_KMS_ENDPOINT", &standin.base)
        .env("SOPS_GCP_KMS_CLIENT_TYPE", "rest")
        .env("GOOGLE_OAUTH_ACCESS_TOKEN", TOKEN)
        .output()
        .await
        .expect("run sops");
    assert!(
        out.status.success(),
        "sops -e --gcp-kms: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = std::fs::read_to_string(&file).unwrap();
    assert!(doc.contains("gcp_kms:") && doc.contains(KEY_NAME), "{doc}");

    let (ns, secrets, _op) = namespace_with_key(&env, &standin.key_json).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(env.kube.clone(), &ns);
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "docs"}, "data": {"app.enc.yaml": doc}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &stores,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: gcp}}
spec:
  provider:
    kms:
      gcp:
        endpoint: {base}
        auth:
          secretRef: {{name: gcp-sa, key: key.json}}
"#,
            base = standin.base
        ),
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app}
spec:
  secretStoreRef: {name: gcp}
  dataFrom:
  - extract: {configMapRef: {name: docs}, key: app.enc.yaml}
"#,
    )
    .await;
    wait_reason(&es, "app", "SecretSynced").await;
    let s = secrets.get("app").await.unwrap();
    assert_eq!(
        secret_data(&s),
        [("db.password", "gcp-sops-s3cr3t"), ("port", "5432")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );
    assert!(
        *standin.state.decrypt_calls.lock().unwrap() >= 1,
        "the data key was decrypted by the stand-in's :decrypt"
    );
    standin.assert_no_violations();
}
