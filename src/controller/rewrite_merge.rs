//! `dataFrom[].rewrite[].merge`, as ESO's `esutils.RewriteMerge`: the values (each a JSON
//! object) merged into one object, in key order with the `priority` keys last.

use serde_json::{Map, Value};

use super::values::{BuildError, check_json_bounds};
use crate::{
    api::external_secret::{MergeConflictPolicy, MergePriorityPolicy, MergeStrategy, RewriteMerge},
    providers::{SecretMap, SecretValue},
};

/// Merges the JSON objects of `map`'s values. Errors (naming keys, never values): a value that
/// is not a JSON object (or over [`check_json_bounds`]), a missing `priority` key under
/// `Strict`, keys found in two values under `conflictPolicy: Error`, `JSON` without `into`.
pub fn merge(op: &RewriteMerge, map: SecretMap) -> Result<SecretMap, BuildError> {
    let mut order: Vec<&String> = map.keys().filter(|k| !op.priority.contains(k)).collect();
    order.extend(op.priority.iter());
    let mut merged = Map::new();
    let mut conflicts = Vec::new();
    for key in order {
        let Some(value) = map.get(key) else {
            if op.priority_policy == MergePriorityPolicy::IgnoreNotFound {
                continue;
            }
            return Err(BuildError(format!(
                "rewrite merge: priority key {key:?} not found"
            )));
        };
        let text = value
            .as_str()
            .ok_or_else(|| BuildError(format!("rewrite merge: value of {key:?} is not UTF-8")))?;
        check_json_bounds(key, text)?;
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
            return Err(BuildError(format!(
                "rewrite merge: value of {key:?} is not a JSON object"
            )));
        };
        for (k, v) in object {
            if merged.contains_key(&k) {
                conflicts.push(k.clone());
            }
            merged.insert(k, v);
        }
    }
    if op.conflict_policy == MergeConflictPolicy::Error && !conflicts.is_empty() {
        return Err(BuildError(format!(
            "rewrite merge: conflicting keys: {}",
            conflicts.join(", ")
        )));
    }
    match op.strategy {
        MergeStrategy::Extract => Ok(merged
            .into_iter()
            .map(|(k, v)| {
                let bytes = match v {
                    Value::String(s) => s.into_bytes(),
                    Value::Null => Vec::new(),
                    other => other.to_string().into_bytes(),
                };
                (k, SecretValue::new(bytes))
            })
            .collect()),
        MergeStrategy::Json => {
            if op.into.is_empty() {
                return Err(BuildError(
                    "rewrite merge: strategy JSON needs `into`".into(),
                ));
            }
            let mut out = map;
            let json = Value::Object(merged).to_string();
            out.insert(op.into.clone(), SecretValue::new(json.into_bytes()));
            Ok(out)
        }
    }
}
