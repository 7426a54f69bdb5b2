//! `target.template.templateFrom[]` of an ExternalSecret: templates kept outside it, in a
//! ConfigMap or Secret of its namespace or inline (`literal`), as ESO's `TemplateFrom`
//! (`apis/externalsecrets/v1`, rendered by ESO's `pkg/controllers/templating`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::decoding::DecodingStrategy;

/// One `templateFrom[]` entry. Its `configMap` items, then its `secret` items, then its
/// `literal` are rendered, in that order, into `target` (ESO's `MergeTemplateFrom`); entries
/// are applied in list order, and `template.data` is applied after all of them (it wins).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFrom {
    /// Templates kept in a ConfigMap of the ExternalSecret's namespace (never another one),
    /// read at every sync: a change takes effect at the next refresh at the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<TemplateRef>,
    /// Templates kept in a Secret of the ExternalSecret's namespace, read at every sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<TemplateRef>,
    /// Where the results go: `Data` (default), `Annotations` or `Labels` of the Secret.
    #[serde(default)]
    pub target: TemplateTarget,
    /// An inline template rendered as `KeysAndValues`: its output is a YAML map of
    /// key: value, each entry one key of `target` (ESO's `MergeLiteral`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    /// Decoding applied to each rendered value (not to `template.data`'s); default `None`.
    #[serde(default)]
    pub values_decoding_strategy: DecodingStrategy,
}

/// A ConfigMap or Secret holding templates: ESO's `TemplateRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// The object's name, in the ExternalSecret's namespace.
    pub name: String,
    /// The data keys used as templates. A key the object lacks is an error.
    pub items: Vec<TemplateRefItem>,
}

/// One data key of a [`TemplateRef`]: ESO's `TemplateRefItem`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRefItem {
    /// The data key.
    pub key: String,
    /// How the template's text is used; default `Values`.
    #[serde(default)]
    pub template_as: TemplateScope,
}

/// ESO's `TemplateScope`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TemplateScope {
    /// The rendered text is the value of the key named like the item's key.
    #[default]
    Values,
    /// The rendered text is a YAML map of key: value (strings), each entry one key.
    KeysAndValues,
}

/// ESO's `TemplateFrom.target` for a Secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TemplateTarget {
    /// The Secret's data.
    #[default]
    Data,
    /// The Secret's annotations (ours win on conflict).
    Annotations,
    /// The Secret's labels (ours win on conflict).
    Labels,
}
