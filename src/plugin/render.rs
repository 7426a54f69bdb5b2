//! `kubectl secret-relay render -f es.yaml [-f more.yaml] (--values values.yaml |
//! --from-cluster) [--show-values]`: the Secret an ExternalSecret would produce (keys, type, labels,
//! annotations), built by the operator's own fetch and build steps
//! ([`crate::controller::external_secret::preview`]): `data`, `dataFrom` (`extract`, `find`
//! by name and path), `rewrite`, decoding, and templates exactly as a sync evaluates them (ESO's
//! `esoctl template`).
//!
//! The remote values come from `--values`, a YAML map of remote key → value: a string is the
//! value as stored; a map or list is stored as its JSON text (what `property` and `extract`
//! read). A `remoteRef.version` reads `<key>:<version>` if given, else `<key>`. The store is
//! the SecretStore or ClusterSecretStore among the `-f` files that the ExternalSecret names
//! (else a Parameter Store placeholder, which only shapes messages); ConfigMaps and Secrets
//! among them are the `templateFrom` sources. Nothing is read from the cluster.
//!
//! With `--from-cluster` the values come from the ExternalSecret's real store instead: the
//! store, its credential Secrets and the `templateFrom` objects are read from the cluster with
//! your kubeconfig's permissions (in the ExternalSecret's namespace, else `-n`'s, else the
//! context's), the provider is built as the operator builds it (no ambient identity, no
//! API-server audience) and the backend is called from this machine. Nothing is written.
//!
//! Values are masked (`<6 bytes>`) unless `--show-values`, which prints the Secret as
//! `kubectl apply` takes it.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::{Error, Outcome, documents, read};
use crate::{
    api::{
        ClusterSecretStore, ExternalSecret, SecretStore,
        external_secret::{ExternalSecretFind, StoreKind},
        secret_store::SecretStoreProvider,
    },
    controller::{build::TemplateSources, external_secret::preview, secret_store::ResolvedStore},
    providers::{ErrorKind, Provider, ProviderError, SecretMap, SecretValue, SharedProvider},
};

/// `render`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Manifests: the ExternalSecret, and optionally its store and `templateFrom` ConfigMaps
    /// and Secrets.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// YAML map of remote key → value.
    #[arg(
        long,
        required_unless_present = "from_cluster",
        conflicts_with = "from_cluster"
    )]
    pub values: Option<PathBuf>,
    /// Read the values from the ExternalSecret's store in the cluster instead.
    #[arg(long)]
    pub from_cluster: bool,
    /// The namespace of ExternalSecrets that name none (with `--from-cluster`; default: the
    /// kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Print the values (base64, as in a Secret) instead of their sizes.
    #[arg(long)]
    pub show_values: bool,
}

/// A provider serving fixed values (the `--values` file).
pub struct StaticProvider {
    values: BTreeMap<String, SecretValue>,
}

impl StaticProvider {
    /// Values from the `--values` YAML: remote key → string, or any YAML (stored as JSON).
    /// Errors: not a map.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let map: BTreeMap<String, serde_yaml::Value> = serde_yaml::from_str(text)
            .map_err(|e| Error::Input(format!("--values: a map of remote key to value: {e}")))?;
        let mut values = BTreeMap::new();
        for (k, v) in map {
            let bytes = match v {
                serde_yaml::Value::String(s) => s.into_bytes(),
                other => serde_json::to_vec(&other)
                    .map_err(|e| Error::Input(format!("--values: {k}: {e}")))?,
            };
            values.insert(k, SecretValue::new(bytes));
        }
        Ok(StaticProvider { values })
    }
}

#[async_trait]
impl Provider for StaticProvider {
    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<SecretValue>, ProviderError> {
        let versioned = version.and_then(|v| self.values.get(&format!("{key}:{v}")));
        Ok(versioned.or_else(|| self.values.get(key)).cloned())
    }

    async fn find(&self, find: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
        if !find.tags.is_empty() {
            return Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "render: find.tags needs the backend's tags, which a --values file has not",
            ));
        }
        let name = crate::providers::find_name_regex(find, "render")?;
        Ok(self
            .values
            .iter()
            .filter(|(k, _)| find.path.as_deref().is_none_or(|p| k.starts_with(p)))
            .filter(|(k, _)| name.as_ref().is_none_or(|re| re.is_match(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// What the `-f` files hold.
#[derive(Default)]
struct Manifests {
    external_secrets: Vec<ExternalSecret>,
    stores: BTreeMap<(&'static str, String), SecretStoreProvider>,
    template_sources: TemplateSources,
}

fn parse<T: serde::de::DeserializeOwned>(doc: serde_yaml::Value, what: &str) -> Result<T, Error> {
    serde_yaml::from_value(doc).map_err(|e| Error::Input(format!("{what}: {e}")))
}

/// The items of a ConfigMap (`binaryData`, `data`) or Secret (`data`, `stringData`) as a
/// `templateFrom` source reads them: the text ones win, as the API server merges them.
fn items(
    bytes: Option<BTreeMap<String, k8s_openapi::ByteString>>,
    text: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = bytes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    out.extend(
        text.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    out
}

fn manifests(files: &[PathBuf]) -> Result<Manifests, Error> {
    let mut m = Manifests::default();
    for path in files {
        let text = read(path)?;
        for (line, doc) in documents(&text) {
            let at = format!("{}:{line}", path.display());
            let value: serde_yaml::Value =
                serde_yaml::from_str(&doc).map_err(|e| Error::Input(format!("{at}: {e}")))?;
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            match kind.as_str() {
                "ExternalSecret" => m.external_secrets.push(parse(value, &at)?),
                "SecretStore" => {
                    let s: SecretStore = parse(value, &at)?;
                    let name = s.metadata.name.clone().unwrap_or_default();
                    m.stores
                        .insert((StoreKind::SecretStore.as_str(), name), s.spec.provider);
                }
                "ClusterSecretStore" => {
                    let s: ClusterSecretStore = parse(value, &at)?;
                    let name = s.metadata.name.clone().unwrap_or_default();
                    m.stores.insert(
                        (StoreKind::ClusterSecretStore.as_str(), name),
                        s.spec.provider,
                    );
                }
                "ConfigMap" => {
                    let cm: ConfigMap = parse(value, &at)?;
                    m.template_sources.config_maps.insert(
                        cm.metadata.name.unwrap_or_default(),
                        items(cm.binary_data, cm.data),
                    );
                }
                "Secret" => {
                    let s: Secret = parse(value, &at)?;
                    m.template_sources.secrets.insert(
                        s.metadata.name.unwrap_or_default(),
                        items(s.data, s.string_data),
                    );
                }
                _ => {}
            }
        }
    }
    Ok(m)
}

/// A client that is never used: the offline render reads nothing from a cluster, but a
/// resolved store carries one.
fn unused_client() -> Result<kube::Client, Error> {
    let config = kube::Config::new(
        "http://127.0.0.1:9"
            .parse()
            .map_err(|e| Error::Input(format!("{e}")))?,
    );
    Ok(kube::Client::try_from(config)?)
}

/// The Secret `es` would produce from `provider`'s values, with `store` (its provider spec) and
/// the `templateFrom` objects of `sources`. `Ok(None)`: deleted under `deletionPolicy: Delete`.
/// Errors: the sync's error, as the ExternalSecret's condition would show it.
pub async fn render(
    es: &ExternalSecret,
    store: &SecretStoreProvider,
    provider: StaticProvider,
    sources: TemplateSources,
) -> Result<Result<Option<Secret>, String>, Error> {
    let r = &es.spec.secret_store_ref;
    let resolved = ResolvedStore::new(
        &unused_client()?,
        r.kind,
        &r.name,
        store,
        &Default::default(),
        es.metadata.namespace.clone().unwrap_or_default(),
    );
    let shared = Arc::new(SharedProvider::new(Arc::new(provider), "render", [0; 32]));
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    Ok(preview(es, &resolved, shared, sources, &now)
        .await
        .map_err(|e| e.to_string()))
}

/// `secret` as YAML, its values replaced by their sizes unless `show`.
pub fn to_yaml(secret: &Secret, show: bool) -> String {
    let mut value = serde_json::to_value(secret).unwrap_or_default();
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    if !show && let Some(data) = value.get_mut("data").and_then(|d| d.as_object_mut()) {
        for (k, v) in data.iter_mut() {
            let len = secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.len())
                .unwrap_or_default();
            *v = format!("<{len} bytes>").into();
        }
    }
    serde_yaml::to_string(&value).unwrap_or_default()
}

/// [`render`] from the cluster: the store `es` names (admitting its namespace, for a
/// ClusterSecretStore), its provider built with the client's credentials, and the
/// `templateFrom` objects read from the namespace. Errors: as the operator's condition would
/// say them (the inner `Err`), or a failed API request.
pub async fn render_from_cluster(
    client: &kube::Client,
    es: &ExternalSecret,
) -> Result<Result<Option<Secret>, String>, Error> {
    use crate::controller::{
        external_secret::read_template_sources,
        secret_store::{ProviderCache, namespace_allowed},
    };
    use kube::{Api, Resource};
    let ns = es.metadata.namespace.clone().unwrap_or_default();
    let r = &es.spec.secret_store_ref;
    let (provider, meta) = match r.kind {
        StoreKind::SecretStore => {
            match Api::<SecretStore>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await?
            {
                Some(s) => (s.spec.provider.clone(), s.meta().clone()),
                None => return Ok(Err(format!("SecretStore {ns}/{} not found", r.name))),
            }
        }
        StoreKind::ClusterSecretStore => {
            let Some(s) = Api::<ClusterSecretStore>::all(client.clone())
                .get_opt(&r.name)
                .await?
            else {
                return Ok(Err(format!("ClusterSecretStore {} not found", r.name)));
            };
            let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .get_metadata_opt(&ns)
                .await?;
            if !namespace_allowed(&s, &ns, namespace.as_ref()) {
                return Ok(Err(format!(
                    "ClusterSecretStore {} does not admit namespace {ns} (its conditions)",
                    r.name
                )));
            }
            (s.spec.provider.clone(), s.meta().clone())
        }
    };
    let resolved = ResolvedStore::new(client, r.kind, &r.name, &provider, &meta, ns);
    let shared = match ProviderCache::new(false).get(&resolved).await {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let sources = match read_template_sources(es, client).await {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    Ok(preview(es, &resolved, shared, sources, &now)
        .await
        .map_err(|e| e.to_string()))
}

/// Runs `render`: prints the Secret of every ExternalSecret in the files; all well when each
/// could be built.
pub async fn run(args: Args) -> Outcome {
    let mut m = manifests(&args.files)?;
    if m.external_secrets.is_empty() {
        return Err(Error::Input(
            "render: no ExternalSecret in the files".into(),
        ));
    }
    let cluster = if args.from_cluster {
        let (client, default_ns) = super::client().await?;
        let ns = args.namespace.clone().unwrap_or(default_ns);
        for es in &mut m.external_secrets {
            es.metadata.namespace.get_or_insert_with(|| ns.clone());
        }
        Some(client)
    } else {
        None
    };
    let values = match &args.values {
        Some(path) => read(path)?,
        None => String::new(),
    };
    let mut ok = true;
    for es in &m.external_secrets {
        let r = &es.spec.secret_store_ref;
        let store = m
            .stores
            .get(&(r.kind.as_str(), r.name.clone()))
            .cloned()
            .unwrap_or_else(placeholder_store);
        let name = es.metadata.name.clone().unwrap_or_default();
        let built = match &cluster {
            Some(client) => render_from_cluster(client, es).await?,
            None => {
                render(
                    es,
                    &store,
                    StaticProvider::from_yaml(&values)?,
                    m.template_sources.clone(),
                )
                .await?
            }
        };
        match built {
            Ok(Some(secret)) => {
                println!("---");
                print!("{}", to_yaml(&secret, args.show_values));
            }
            Ok(None) => println!("# ExternalSecret {name}: the Secret would be deleted"),
            Err(e) => {
                ok = false;
                println!("# ExternalSecret {name}: {e}");
            }
        }
    }
    Ok(ok)
}

/// A Parameter Store spec for an ExternalSecret whose store is not among the files.
fn placeholder_store() -> SecretStoreProvider {
    serde_yaml::from_str("aws: {region: render}").expect("a valid store spec")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es(yaml: &str) -> ExternalSecret {
        serde_yaml::from_str(yaml).expect("ExternalSecret")
    }

    #[tokio::test]
    async fn a_template_renders_as_the_operator_would_and_values_stay_masked() {
        let es = es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app, namespace: team-a}
spec:
  secretStoreRef: {name: ssm}
  target:
    template:
      type: kubernetes.io/basic-auth
      metadata: {labels: {team: a}}
      data:
        username: "{{ .user }}"
        password: "{{ .db | fromJson | dig \"password\" \"\" }}"
  data:
  - secretKey: user
    remoteRef: {key: /app/user}
  - secretKey: db
    remoteRef: {key: /app/db}
"#);
        let values =
            StaticProvider::from_yaml("/app/user: admin\n/app/db: {password: s3cret}\n").unwrap();
        let secret = render(&es, &placeholder_store(), values, Default::default())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let data = secret.data.clone().unwrap();
        assert_eq!(data["username"].0, b"admin");
        assert_eq!(data["password"].0, b"s3cret");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let masked = to_yaml(&secret, false);
        assert!(masked.contains("password: <6 bytes>"), "{masked}");
        assert!(!masked.contains("s3cret") && !masked.contains("czNjcmV0"));
        assert!(to_yaml(&secret, true).contains("czNjcmV0"));
    }

    #[tokio::test]
    async fn a_missing_key_is_the_syncs_error() {
        let es = es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app, namespace: team-a}
spec:
  secretStoreRef: {name: ssm}
  data:
  - secretKey: user
    remoteRef: {key: /app/missing}
"#);
        let values = StaticProvider::from_yaml("/app/user: admin\n").unwrap();
        let err = render(&es, &placeholder_store(), values, Default::default())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err, "ssm GetParameters \"/app/missing\": ParameterNotFound");
    }
}
