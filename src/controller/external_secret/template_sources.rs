//! Step 4a: the ConfigMaps and Secrets `target.template.templateFrom` names, read from the
//! ExternalSecret's own namespace (never another: a tenant reads only its own objects) at
//! every sync, so a changed template takes effect at the next refresh at the latest.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, ResourceExt};

use super::super::{Error, build::TemplateSources, build_template::MAX_TEMPLATE_SOURCE_BYTES};
use crate::api::ExternalSecret;

/// The items every `templateFrom` entry of `es` uses. Errors ([`Error::TemplateFrom`], retried
/// with backoff, the Secret left as it is): a missing object or key (as ESO: `error in
/// configmap NAME: missing key KEY`), items adding up to more than
/// [`MAX_TEMPLATE_SOURCE_BYTES`]; a failed read is [`Error::Kube`].
pub(super) async fn read(
    es: &ExternalSecret,
    client: &kube::Client,
) -> Result<TemplateSources, Error> {
    let mut sources = TemplateSources::default();
    let Some(template) = es.spec.target.template.as_ref() else {
        return Ok(sources);
    };
    let ns = es.namespace().unwrap_or_default();
    let mut total = 0usize;
    for from in &template.template_from {
        if let Some(r) = &from.config_map {
            if !sources.config_maps.contains_key(&r.name) {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
                let cm = api
                    .get_opt(&r.name)
                    .await
                    .map_err(Error::Kube)?
                    .ok_or_else(|| {
                        Error::TemplateFrom(format!(
                            "templateFrom: ConfigMap {ns}/{} not found",
                            r.name
                        ))
                    })?;
                sources
                    .config_maps
                    .insert(r.name.clone(), config_map_items(&cm));
            }
            let data = &sources.config_maps[&r.name];
            for item in &r.items {
                let text = data.get(&item.key).ok_or_else(|| {
                    Error::TemplateFrom(format!(
                        "templateFrom: ConfigMap {ns}/{} has no key {:?}",
                        r.name, item.key
                    ))
                })?;
                total += text.len();
            }
        }
        if let Some(r) = &from.secret {
            if !sources.secrets.contains_key(&r.name) {
                let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                let secret = api
                    .get_opt(&r.name)
                    .await
                    .map_err(Error::Kube)?
                    .ok_or_else(|| {
                        Error::TemplateFrom(format!(
                            "templateFrom: Secret {ns}/{} not found",
                            r.name
                        ))
                    })?;
                let data = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                sources.secrets.insert(r.name.clone(), data);
            }
            let data = &sources.secrets[&r.name];
            for item in &r.items {
                let text = data.get(&item.key).ok_or_else(|| {
                    Error::TemplateFrom(format!(
                        "templateFrom: Secret {ns}/{} has no key {:?}",
                        r.name, item.key
                    ))
                })?;
                total += text.len();
            }
        }
        total += from.literal.as_ref().map_or(0, String::len);
        if total > MAX_TEMPLATE_SOURCE_BYTES {
            return Err(Error::TemplateFrom(format!(
                "templateFrom: the templates add up to more than {MAX_TEMPLATE_SOURCE_BYTES} bytes"
            )));
        }
    }
    // Keep only the items used: a Secret's other keys are not ours to hold.
    retain_used(&mut sources, es);
    Ok(sources)
}

/// A ConfigMap's `data` and `binaryData`, as bytes (`data` wins, as for a volume).
fn config_map_items(cm: &ConfigMap) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out: std::collections::BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in cm.data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// Drops every key of `sources` that no `templateFrom` item of `es` names.
fn retain_used(sources: &mut TemplateSources, es: &ExternalSecret) {
    let from = es
        .spec
        .target
        .template
        .as_ref()
        .map(|t| t.template_from.as_slice())
        .unwrap_or_default();
    let used = |kind: bool, name: &str, key: &str| {
        from.iter().any(|f| {
            let r = if kind { &f.config_map } else { &f.secret };
            r.as_ref()
                .is_some_and(|r| r.name == name && r.items.iter().any(|i| i.key == key))
        })
    };
    for (kind, objects) in [
        (true, &mut sources.config_maps),
        (false, &mut sources.secrets),
    ] {
        for (name, data) in objects.iter_mut() {
            data.retain(|k, _| used(kind, name, k));
        }
    }
}
