//! `target.template` applied to the fetched values, as ESO's `ApplyTemplate`
//! (`pkg/controllers/externalsecret/externalsecret_controller_template.go`) and its templating
//! package do it, in this order:
//!
//! 1. the fetched values, when `mergePolicy: Merge` or the template has neither `data` nor
//!    `templateFrom`;
//! 2. `templateFrom[]` in list order, each entry's ConfigMap items, then Secret items, then
//!    `literal`, into its `target` (data, labels or annotations);
//! 3. `template.data` (wins over `templateFrom`);
//! 4. `template.metadata.labels`, then `annotations`, each value a template.
//!
//! Pure: the ConfigMaps and Secrets `templateFrom` names are read by the controller
//! ([`TemplateSources`]). Every template is bounded by [`crate::template`]; the template texts
//! of one ExternalSecret together by [`MAX_TEMPLATE_SOURCE_BYTES`]. Errors name the template
//! (its key, or its ConfigMap/Secret and key), never a value, nor a key a template produced
//! (such a key may hold a value).

use std::collections::BTreeMap;

use super::values::{BuildError, decode};
use crate::{
    api::{
        external_secret::{DecodingStrategy, ExternalSecretTemplate, TemplateMergePolicy},
        template::{TemplateFrom, TemplateScope, TemplateTarget},
    },
    providers::{SecretMap, SecretValue},
    template::Renderer,
};

/// Bytes of template text one ExternalSecret may use through `templateFrom`, all ConfigMap and
/// Secret items and literals together: 1 MiB, the size limit of one ConfigMap or Secret.
pub const MAX_TEMPLATE_SOURCE_BYTES: usize = 1 << 20;

/// Entries a `KeysAndValues` template's output may hold.
pub const MAX_KEYS_AND_VALUES_ENTRIES: usize = 10_000;

/// The data of the ConfigMaps and Secrets that `templateFrom` names, as the controller read
/// them from the ExternalSecret's namespace: object name → data key → bytes (only the items
/// `templateFrom` uses). A missing object or key is the controller's error, not ours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateSources {
    /// ConfigMap name → key → text (`data`, else `binaryData`).
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Secret name → key → bytes.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// What the template made: the Secret's data, and labels and annotations to add.
#[derive(Debug, Default)]
pub struct Templated {
    /// The Secret's data.
    pub data: SecretMap,
    /// Labels from `templateFrom` (target `Labels`) and `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Annotations from `templateFrom` (target `Annotations`) and `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

impl Templated {
    fn put(
        &mut self,
        target: TemplateTarget,
        key: String,
        value: Vec<u8>,
        what: &str,
    ) -> Result<(), BuildError> {
        match target {
            TemplateTarget::Data => {
                self.data.insert(key, SecretValue::new(value));
            }
            TemplateTarget::Labels | TemplateTarget::Annotations => {
                let text = String::from_utf8(value)
                    .map_err(|_| BuildError(format!("{what}: the result is binary (not UTF-8)")))?;
                let map = if target == TemplateTarget::Labels {
                    &mut self.labels
                } else {
                    &mut self.annotations
                };
                map.insert(key, text);
            }
        }
        Ok(())
    }
}

/// Applies `template` (absent: the values as they are) to the fetched `values`, with the
/// texts `templateFrom` names in `sources`. See the module doc for the order. Errors: a
/// template that fails (named, never quoted), a `KeysAndValues` output that is not a YAML map
/// of strings, a `valuesDecodingStrategy` that does not decode, a label or annotation that is
/// not UTF-8, template texts over [`MAX_TEMPLATE_SOURCE_BYTES`], an item `sources` lacks.
pub fn apply_template(
    template: Option<&ExternalSecretTemplate>,
    values: SecretMap,
    sources: &TemplateSources,
) -> Result<Templated, BuildError> {
    let Some(t) = template else {
        return Ok(Templated {
            data: values,
            ..Default::default()
        });
    };
    let metadata = t.metadata.clone().unwrap_or_default();
    let any_template = !t.data.is_empty()
        || !t.template_from.is_empty()
        || metadata
            .labels
            .values()
            .chain(metadata.annotations.values())
            .any(|v| v.contains("{{"));
    let mut out = Templated::default();
    if t.merge_policy == TemplateMergePolicy::Merge
        || (t.data.is_empty() && t.template_from.is_empty())
    {
        out.data = values.clone();
    }
    if !any_template {
        out.labels = metadata.labels;
        out.annotations = metadata.annotations;
        return Ok(out);
    }
    check_source_sizes(&t.template_from, sources)?;
    let renderer = Renderer::new(&values).map_err(BuildError)?;
    for from in &t.template_from {
        apply_template_from(&renderer, from, sources, &mut out)?;
    }
    for (key, source) in &t.data {
        let rendered = render(&renderer, source, &format!("template of key {key:?}"))?;
        out.data.insert(key.clone(), SecretValue::new(rendered));
    }
    for (target, templates, what) in [
        (TemplateTarget::Labels, &metadata.labels, "label"),
        (
            TemplateTarget::Annotations,
            &metadata.annotations,
            "annotation",
        ),
    ] {
        for (key, source) in templates {
            let what = format!("template of {what} {key:?}");
            let rendered = render(&renderer, source, &what)?;
            out.put(target, key.clone(), rendered, &what)?;
        }
    }
    Ok(out)
}

fn render(renderer: &Renderer, source: &str, what: &str) -> Result<Vec<u8>, BuildError> {
    renderer
        .render(source)
        .map_err(|cause| BuildError(format!("{what}: {cause}")))
}

/// One `templateFrom` entry: ESO's `MergeConfigMap`, `MergeSecret`, `MergeLiteral`.
fn apply_template_from(
    renderer: &Renderer,
    from: &TemplateFrom,
    sources: &TemplateSources,
    out: &mut Templated,
) -> Result<(), BuildError> {
    let refs = [
        ("ConfigMap", from.config_map.as_ref(), &sources.config_maps),
        ("Secret", from.secret.as_ref(), &sources.secrets),
    ];
    for (kind, reference, read) in refs {
        let Some(r) = reference else { continue };
        for item in &r.items {
            let what = format!("templateFrom {kind} {:?} key {:?}", r.name, item.key);
            let text = read
                .get(&r.name)
                .and_then(|m| m.get(&item.key))
                .ok_or_else(|| BuildError(format!("{what}: not found")))?;
            let text = std::str::from_utf8(text)
                .map_err(|_| BuildError(format!("{what}: the template is not UTF-8")))?;
            match item.template_as {
                TemplateScope::Values => {
                    let rendered = render(renderer, text, &what)?;
                    let value = decode_rendered(rendered, from.values_decoding_strategy, &what)?;
                    out.put(from.target, item.key.clone(), value, &what)?;
                }
                TemplateScope::KeysAndValues => {
                    keys_and_values(renderer, text, from, out, &what)?;
                }
            }
        }
    }
    if let Some(literal) = &from.literal {
        keys_and_values(renderer, literal, from, out, "templateFrom literal")?;
    }
    Ok(())
}

/// ESO's `mapScopeApply`: the rendered text is a YAML map of strings (as Kubernetes' YAML
/// reader unmarshals into `map[string]string`: `null` is empty, numbers, booleans, lists and
/// maps are errors); each entry becomes one key of the target. Anchors and aliases are
/// expanded within the bound of the SOPS reader (no amplification), over at most
/// [`MAX_KEYS_AND_VALUES_ENTRIES`] entries.
fn keys_and_values(
    renderer: &Renderer,
    text: &str,
    from: &TemplateFrom,
    out: &mut Templated,
    what: &str,
) -> Result<(), BuildError> {
    use crate::sops::tree::Node;
    let rendered = render(renderer, text, what)?;
    // The reader's messages may quote the text, which holds values: a fixed message instead.
    let entries = crate::sops::tree::parse_yaml(&rendered).map_err(|_| {
        BuildError(format!(
            "{what}: the rendered template is not a YAML map of key: value (or its aliases expand too far)"
        ))
    })?;
    if entries.len() > MAX_KEYS_AND_VALUES_ENTRIES {
        return Err(BuildError(format!(
            "{what}: the rendered template has more than {MAX_KEYS_AND_VALUES_ENTRIES} entries"
        )));
    }
    for (i, (key, node)) in entries.into_iter().enumerate() {
        let value = match node {
            Node::Str(s) => s.into_bytes(),
            Node::Null => Vec::new(),
            _ => {
                return Err(BuildError(format!(
                    "{what}: entry {} of the rendered YAML map is not a string (quote it)",
                    i + 1
                )));
            }
        };
        let entry = format!("{what}, entry {}", i + 1);
        let value = decode_rendered(value, from.values_decoding_strategy, &entry)?;
        out.put(from.target, key, value, &entry)?;
    }
    Ok(())
}

/// `valuesDecodingStrategy` on a rendered value; the message names the template only.
fn decode_rendered(
    value: Vec<u8>,
    strategy: DecodingStrategy,
    what: &str,
) -> Result<Vec<u8>, BuildError> {
    decode(what, SecretValue::new(value), strategy).map(|v| v.as_bytes().to_vec())
}

/// Refuses `templateFrom` texts that add up to more than [`MAX_TEMPLATE_SOURCE_BYTES`].
fn check_source_sizes(from: &[TemplateFrom], sources: &TemplateSources) -> Result<(), BuildError> {
    let mut total = 0usize;
    for f in from {
        total += f.literal.as_ref().map_or(0, String::len);
        for (reference, read) in [
            (f.config_map.as_ref(), &sources.config_maps),
            (f.secret.as_ref(), &sources.secrets),
        ] {
            let Some(r) = reference else { continue };
            for item in &r.items {
                total += read
                    .get(&r.name)
                    .and_then(|m| m.get(&item.key))
                    .map_or(0, Vec::len);
            }
        }
    }
    if total > MAX_TEMPLATE_SOURCE_BYTES {
        return Err(BuildError(format!(
            "templateFrom: the templates add up to {total} bytes, over the {MAX_TEMPLATE_SOURCE_BYTES}-byte limit"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "build_template_tests.rs"]
mod tests;
