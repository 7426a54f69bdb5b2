//! `SecretsManagerProvider` against moto's Secrets Manager and STS, and the operator on it
//! against the test environment's API server (issue 30). Run with
//! `hack/test.sh --test provider_secretsmanager`.
//!
//! Every test works on its own secret names (a random prefix). Metrics are process-wide, so
//! the tests that count calls take [`METRICS`] exclusively and every other test shares it.

mod common;
mod operator;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_secretsmanager::{primitives::Blob, types::Tag};
use common::{TestEnv, random_suffix};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secret_relay::api::ExternalSecret;
use secret_relay::api::external_secret::{ExternalSecretFind, FindName};
use secret_relay::api::secret_store::{AwsConnection, AwsProvider, AwsService};
use secret_relay::metrics::provider_calls_total;
use secret_relay::providers::aws::SecretsManagerProvider;
use secret_relay::providers::{AuthContext, Provider};
use tokio::sync::RwLock;

use operator::{apply_yaml, secret_data, wait_for, wait_reason};

/// Held shared by every test, exclusively by those that count calls.
static METRICS: RwLock<()> = RwLock::const_new(());

fn batch_calls() -> u64 {
    provider_calls_total("aws_secretsmanager", "BatchGetSecretValue")
}

fn single_calls() -> u64 {
    provider_calls_total("aws_secretsmanager", "GetSecretValue")
}

/// A Secrets Manager store of the environment's moto (default credential chain: the
/// environment's static test keys), with `prefix`.
fn store(env: &TestEnv, prefix: Option<&str>) -> AwsProvider {
    AwsProvider {
        service: AwsService::SecretsManager,
        prefix: prefix.map(String::from),
        connection: AwsConnection {
            region: env.aws_region.clone(),
            endpoint: Some(env.aws_endpoint.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn provider(env: &TestEnv, prefix: Option<&str>) -> SecretsManagerProvider {
    SecretsManagerProvider::new(
        &store(env, prefix),
        &AuthContext::new(env.kube.clone(), "default", false),
    )
    .await
    .expect("SecretsManagerProvider::new")
}

async fn client(env: &TestEnv) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&env.aws_sdk_config().await)
}

/// CreateSecret with a string value and tags.
async fn create(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
    tags: &[(&str, &str)],
) {
    let mut call = sm.create_secret().name(name).secret_string(value);
    for (k, v) in tags {
        call = call.tags(Tag::builder().key(*k).value(*v).build());
    }
    call.send()
        .await
        .unwrap_or_else(|e| panic!("CreateSecret {name}: {e:?}"));
}

fn text(v: &Option<secret_relay::providers::SecretValue>) -> Option<String> {
    v.as_ref().map(|v| v.as_str().expect("utf-8").to_string())
}

/// The keys due at one tick (45 distinct secrets, each read twice) cost ceil(45 / 20) = 3
/// `BatchGetSecretValue` calls, whatever the scheduling: they come as one group.
#[tokio::test]
async fn the_keys_of_a_tick_cost_one_batch_call_per_twenty_secrets() {
    let Some(env) = TestEnv::get("the_keys_of_a_tick_cost_one_batch_call_per_twenty_secrets").await
    else {
        return;
    };
    let _counting = METRICS.write().await;
    let sm = client(&env).await;
    let prefix = format!("sm-batch-{}", random_suffix());
    for i in 0..45 {
        create(&sm, &format!("{prefix}/s{i}"), &format!("value-{i}"), &[]).await;
    }
    let p = provider(&env, None).await;
    let keys: Vec<(String, Option<String>)> = (0..90)
        .map(|i| (format!("{prefix}/s{}", i % 45), None))
        .collect();
    let (batch0, single0) = (batch_calls(), single_calls());
    let results = p.get_many(&keys).await;
    assert_eq!(batch_calls() - batch0, 3, "45 distinct secrets, 20 a call");
    assert_eq!(single_calls() - single0, 0);
    for (i, r) in results.iter().enumerate() {
        let got = text(r.as_ref().expect("read"));
        assert_eq!(got, Some(format!("value-{}", i % 45)));
    }
}

/// One missing secret in a batch fails only its own read, and a secret scheduled for deletion
/// reads as absent (ESO's rule), in the same single call as the others.
#[tokio::test]
async fn a_missing_secret_fails_only_its_readers() {
    let Some(env) = TestEnv::get("a_missing_secret_fails_only_its_readers").await else {
        return;
    };
    let _counting = METRICS.write().await;
    let sm = client(&env).await;
    let prefix = format!("sm-missing-{}", random_suffix());
    create(&sm, &format!("{prefix}/here"), "present", &[]).await;
    create(&sm, &format!("{prefix}/deleting"), "going", &[]).await;
    sm.delete_secret()
        .secret_id(format!("{prefix}/deleting"))
        .recovery_window_in_days(7)
        .send()
        .await
        .expect("DeleteSecret with a recovery window");
    let p = provider(&env, None).await;
    let keys = [
        (format!("{prefix}/here"), None),
        (format!("{prefix}/nowhere"), None),
        (format!("{prefix}/deleting"), None),
    ];
    let batch0 = batch_calls();
    let results = p.get_many(&keys).await;
    assert_eq!(batch_calls() - batch0, 1);
    assert_eq!(
        text(results[0].as_ref().unwrap()).as_deref(),
        Some("present")
    );
    assert!(results[1].as_ref().unwrap().is_none(), "not found: absent");
    assert!(
        results[2].as_ref().unwrap().is_none(),
        "scheduled for deletion: absent"
    );
}

/// `SecretBinary` bytes are kept exact (not UTF-8, a NUL byte); versions by `uuid/<VersionId>`
/// and by staging label (`AWSPREVIOUS`, a custom stage) through `GetSecretValue`.
#[tokio::test]
async fn binary_values_versions_and_stages() {
    let Some(env) = TestEnv::get("binary_values_versions_and_stages").await else {
        return;
    };
    let _shared = METRICS.read().await;
    let sm = client(&env).await;
    let prefix = format!("sm-versions-{}", random_suffix());
    let bytes = vec![0u8, 159, 146, 150, 255, b'\n'];
    sm.create_secret()
        .name(format!("{prefix}/bin"))
        .secret_binary(Blob::new(bytes.clone()))
        .send()
        .await
        .expect("CreateSecret binary");
    let name = format!("{prefix}/rotated");
    create(&sm, &name, "v1", &[]).await;
    let first = sm
        .get_secret_value()
        .secret_id(&name)
        .send()
        .await
        .expect("GetSecretValue")
        .version_id
        .expect("a version id");
    sm.put_secret_value()
        .secret_id(&name)
        .secret_string("v2")
        .send()
        .await
        .expect("PutSecretValue v2");
    sm.put_secret_value()
        .secret_id(&name)
        .secret_string("canary")
        .version_stages("CANARY")
        .send()
        .await
        .expect("PutSecretValue canary");

    let p = provider(&env, None).await;
    let bin = p
        .get(&format!("{prefix}/bin"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bin.as_bytes(), bytes.as_slice());
    let read = |version: Option<&'static str>| {
        let p = &p;
        let name = &name;
        async move { text(&p.get(name, version).await.expect("read")) }
    };
    assert_eq!(read(None).await.as_deref(), Some("v2"));
    assert_eq!(read(Some("AWSCURRENT")).await.as_deref(), Some("v2"));
    assert_eq!(read(Some("AWSPREVIOUS")).await.as_deref(), Some("v1"));
    assert_eq!(read(Some("CANARY")).await.as_deref(), Some("canary"));
    let by_id = p
        .get(&name, Some(&format!("uuid/{first}")))
        .await
        .expect("read by version id");
    assert_eq!(text(&by_id).as_deref(), Some("v1"));
    let none = p
        .get(&name, Some("uuid/00000000-0000-0000-0000-00000000dead"))
        .await
        .expect("a missing version reads as absent");
    assert!(none.is_none());
}

/// `find`: `path` is a name prefix, `tags` must match as pairs (not a key of one tag and the
/// value of another), `name.regexp` is applied to the listed names; secrets scheduled for
/// deletion are not found. `metadataPolicy: Fetch` reads the tags; a store `prefix` is put in
/// front of `get` keys.
#[tokio::test]
async fn find_by_path_tags_and_name_metadata_and_prefix() {
    let Some(env) = TestEnv::get("find_by_path_tags_and_name_metadata_and_prefix").await else {
        return;
    };
    let _shared = METRICS.read().await;
    let sm = client(&env).await;
    let run = random_suffix();
    let base = format!("sm-find-{run}");
    create(
        &sm,
        &format!("{base}/a"),
        "A",
        &[("team", "x"), ("env", "prod")],
    )
    .await;
    create(&sm, &format!("{base}/b"), "B", &[("team", "x")]).await;
    // Has a tag `team` and a tag valued `x`, but not the pair team=x.
    create(
        &sm,
        &format!("{base}/c"),
        "C",
        &[("team", "y"), ("other", "x")],
    )
    .await;
    create(&sm, &format!("{base}/d"), "D", &[("team", "x")]).await;
    create(&sm, &format!("other-{run}/e"), "E", &[("team", "x")]).await;
    sm.delete_secret()
        .secret_id(format!("{base}/d"))
        .recovery_window_in_days(7)
        .send()
        .await
        .expect("DeleteSecret");
    let p = provider(&env, None).await;
    let find =
        |path: Option<&str>, tags: &[(&str, &str)], regexp: Option<&str>| ExternalSecretFind {
            path: path.map(String::from),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            name: regexp.map(|r| FindName {
                regexp: r.to_string(),
            }),
            ..Default::default()
        };
    let names = |m: secret_relay::providers::SecretMap| -> Vec<String> { m.into_keys().collect() };
    let by_tag = p
        .find(&find(Some(&base), &[("team", "x")], None))
        .await
        .expect("find by tag");
    assert_eq!(names(by_tag), [format!("{base}/a"), format!("{base}/b")]);
    let by_name = p
        .find(&find(None, &[], Some(&format!("^{base}/[ab]$"))))
        .await
        .expect("find by name");
    assert_eq!(
        text(&by_name.get(&format!("{base}/a")).cloned()).as_deref(),
        Some("A")
    );
    assert_eq!(by_name.len(), 2);
    let by_path = p
        .find(&find(Some(&format!("{base}/")), &[], None))
        .await
        .expect("find by path");
    assert_eq!(
        names(by_path),
        [
            format!("{base}/a"),
            format!("{base}/b"),
            format!("{base}/c")
        ]
    );
    let err = p.find(&find(None, &[], None)).await.unwrap_err();
    assert_eq!(
        err.message,
        "secretsmanager find: set at least one of path, name.regexp and tags"
    );

    let tags = p.get_metadata(&format!("{base}/a")).await.unwrap().unwrap();
    let tags: BTreeMap<String, String> = serde_json::from_slice(tags.as_bytes()).unwrap();
    assert_eq!(
        tags,
        BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("team".to_string(), "x".to_string())
        ])
    );
    assert!(
        p.get_metadata(&format!("{base}/zz"))
            .await
            .unwrap()
            .is_none()
    );

    let prefixed = provider(&env, Some(&format!("{base}/"))).await;
    assert_eq!(
        text(&prefixed.get("b", None).await.unwrap()).as_deref(),
        Some("B")
    );
}

/// The operator on a Secrets Manager store: the ExternalSecrets reading a missing secret fail
/// with the secret named, the others sync; an unchanged refresh writes nothing to the API
/// server and costs at most one `BatchGetSecretValue` per secret and tick (one call per 20
/// secrets when the tick's keys come as one group: the benchmark's figure).
#[tokio::test]
async fn the_operator_syncs_from_secrets_manager_and_names_a_missing_secret() {
    let Some(env) =
        TestEnv::get("the_operator_syncs_from_secrets_manager_and_names_a_missing_secret").await
    else {
        return;
    };
    let _counting = METRICS.write().await;
    let ns = env.namespace("sm").await;
    operator::install_crds(&env.kube).await;
    let sm = client(&env).await;
    let prefix = format!("sm-op-{}", random_suffix());
    const SECRETS: usize = 25;
    const READERS: usize = 50;
    const INTERVAL: u64 = 4;
    for i in 0..SECRETS {
        create(
            &sm,
            &format!("{prefix}/s{i}"),
            &format!(r#"{{"user":"u{i}","password":"p{i}"}}"#),
            &[],
        )
        .await;
    }
    operator::create_secret(
        &env,
        &ns,
        "aws-creds",
        serde_json::json!({"id": "testing", "secret": "testing"}),
    )
    .await;
    let stores: Api<secret_relay::api::SecretStore> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &stores,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata:
  name: sm
spec:
  provider:
    aws:
      service: SecretsManager
      region: {region}
      endpoint: {endpoint}
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: aws-creds, key: id}}
          secretAccessKeySecretRef: {{name: aws-creds, key: secret}}
"#,
            region = env.aws_region,
            endpoint = env.aws_endpoint
        ),
    )
    .await;
    let es_api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let es = |name: &str, key: &str| {
        format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata:\n  name: {name}\nspec:\n  refreshInterval: {INTERVAL}s\n  secretStoreRef: {{name: sm}}\n  data:\n  - secretKey: password\n    remoteRef: {{key: {key}, property: password}}\n"
        )
    };
    for i in 0..READERS {
        apply_yaml(
            &es_api,
            &es(&format!("app-{i}"), &format!("{prefix}/s{}", i % SECRETS)),
        )
        .await;
    }
    apply_yaml(&es_api, &es("broken", &format!("{prefix}/missing"))).await;
    let _operator = operator::start(&env.kube, &ns, false).await;

    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    wait_for("every reader synced", Duration::from_secs(60), || async {
        for i in 0..READERS {
            let s = secrets.get_opt(&format!("app-{i}")).await.ok()??;
            if secret_data(&s).get("password") != Some(&format!("p{}", i % SECRETS)) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let broken = wait_reason(&es_api, "broken", "SecretSyncedError").await;
    assert_eq!(
        operator::ready_message(&broken),
        format!(
            "secretsmanager BatchGetSecretValue \"{prefix}/missing\": ResourceNotFoundException (no such secret, or it is scheduled for deletion)"
        )
    );

    // Unchanged refreshes: no write, at most one call per secret per tick (scheduling-free).
    let mut versions = BTreeMap::new();
    for i in 0..READERS {
        let s = secrets.get(&format!("app-{i}")).await.expect("secret");
        versions.insert(i, s.metadata.resource_version.unwrap_or_default());
    }
    let calls0 = batch_calls() + single_calls();
    let window = Duration::from_secs(3 * INTERVAL + 1);
    tokio::time::sleep(window).await;
    let calls = batch_calls() + single_calls() - calls0;
    let ticks = window.as_secs().div_ceil(INTERVAL) + 1;
    println!("{window:?} of refreshes: {calls} Secrets Manager calls for {SECRETS} secrets");
    assert!(
        calls <= (SECRETS as u64 + 1) * ticks,
        "{calls} calls in {ticks} ticks for {SECRETS} secrets"
    );
    for (i, rv) in &versions {
        let now = secrets.get(&format!("app-{i}")).await.expect("secret");
        assert_eq!(
            now.metadata.resource_version.as_ref(),
            Some(rv),
            "an unchanged refresh writes nothing (app-{i})"
        );
    }

    // A changed value reaches its readers on the next tick.
    sm.put_secret_value()
        .secret_id(format!("{prefix}/s0"))
        .secret_string(r#"{"user":"u0","password":"rotated"}"#)
        .send()
        .await
        .expect("PutSecretValue");
    wait_for(
        "the readers of s0",
        Duration::from_secs(3 * INTERVAL),
        || async {
            let s = secrets.get_opt("app-0").await.ok()??;
            (secret_data(&s).get("password").map(String::as_str) == Some("rotated")).then_some(())
        },
    )
    .await;
}

/// A moto server of this test's own whose first `free` requests are not authorized (the
/// set-up) and every later one is checked against IAM policies (moto's
/// `INITIAL_NO_AUTH_ACTION_COUNT`); killed when dropped.
struct IamMoto {
    child: std::process::Child,
    url: String,
}

impl IamMoto {
    fn start(env: &TestEnv, free: u32) -> IamMoto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(env.tool("MOTO_SERVER"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", free.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting moto_server");
        IamMoto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// An IAM query API call (form-encoded), unsigned: moto routes it by the credential
    /// scope, and checks no signature while requests are still free. Returns the XML body.
    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Version", "2010-05-08")
            .extend_pairs(params)
            .finish();
        let resp = reqwest::Client::new()
            .post(&self.url)
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("IAM call");
        let status = resp.status();
        let body = resp.text().await.expect("IAM response");
        assert!(status.is_success(), "IAM {params:?}: {status} {body}");
        body
    }
}

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the first `<tag>` element of `xml`.
fn xml_text(xml: &str, tag: &str) -> String {
    let start = xml.find(&format!("<{tag}>")).expect(tag) + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>")).expect(tag);
    xml[start..end].to_string()
}

/// A store whose IAM policy was written for ESO (`secretsmanager:GetSecretValue`, no
/// `BatchGetSecretValue`) still reads its secrets: the refused batch call is made once, then
/// every read is one `GetSecretValue`.
#[tokio::test]
async fn a_policy_without_batch_get_reads_one_secret_at_a_time() {
    let Some(env) = TestEnv::get("a_policy_without_batch_get_reads_one_secret_at_a_time").await
    else {
        return;
    };
    let _counting = METRICS.write().await;
    // Free requests: CreateUser, PutUserPolicy, CreateAccessKey, 3 × CreateSecret.
    let moto = IamMoto::start(&env, 6);
    let sm = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&env.aws_sdk_config().await)
            .endpoint_url(&moto.url)
            .build(),
    );
    wait_for("own moto answers", Duration::from_secs(60), || async {
        reqwest::get(format!("{}/moto-api/", moto.url))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    moto.iam(&[("Action", "CreateUser"), ("UserName", "eso-reader")])
        .await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["secretsmanager:GetSecretValue","sts:GetCallerIdentity"],"Resource":"*"}]}"#;
    moto.iam(&[
        ("Action", "PutUserPolicy"),
        ("UserName", "eso-reader"),
        ("PolicyName", "eso"),
        ("PolicyDocument", policy),
    ])
    .await;
    let keys = moto
        .iam(&[("Action", "CreateAccessKey"), ("UserName", "eso-reader")])
        .await;
    let (id, secret) = (
        xml_text(&keys, "AccessKeyId"),
        xml_text(&keys, "SecretAccessKey"),
    );
    for i in 0..3 {
        create(&sm, &format!("app/s{i}"), &format!("value-{i}"), &[]).await;
    }

    let ns = env.namespace("sm-iam").await;
    operator::create_secret(
        &env,
        &ns,
        "aws-creds",
        serde_json::json!({"id": id, "secret": secret}),
    )
    .await;
    let spec: AwsProvider = serde_yaml::from_str(&format!(
        "service: SecretsManager\nregion: {}\nendpoint: {}\nauth:\n  secretRef:\n    accessKeyIDSecretRef: {{name: aws-creds, key: id}}\n    secretAccessKeySecretRef: {{name: aws-creds, key: secret}}\n",
        env.aws_region, moto.url
    ))
    .expect("store spec");
    let p = SecretsManagerProvider::new(&spec, &AuthContext::new(env.kube.clone(), &ns, false))
        .await
        .expect("SecretsManagerProvider::new");
    let wanted: Vec<(String, Option<String>)> =
        (0..3).map(|i| (format!("app/s{i}"), None)).collect();
    let (batch0, single0) = (batch_calls(), single_calls());
    for round in 0..2 {
        let results = p.get_many(&wanted).await;
        for (i, r) in results.iter().enumerate() {
            let got = text(r.as_ref().unwrap_or_else(|e| panic!("round {round}: {e}")));
            assert_eq!(got, Some(format!("value-{i}")), "round {round}");
        }
    }
    assert_eq!(
        batch_calls() - batch0,
        1,
        "the refused batch call is made once"
    );
    assert_eq!(
        single_calls() - single0,
        6,
        "then one GetSecretValue per secret"
    );
}
