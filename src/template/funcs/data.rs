//! Sprig's number, list, dict, JSON/YAML, regex, type and path functions, and ESO's `filterPEM`.

use std::{collections::BTreeMap, sync::Arc};

use gotmpl::Value;

use super::*;

// ---- numbers and lists ----

/// Sprig's `untilStep`: start, start+step, ... up to (not including) stop.
pub(super) fn range_list(start: i64, stop: i64, step: i64) -> Result<Value, String> {
    if step == 0 || (step > 0 && start >= stop) || (step < 0 && start <= stop) {
        return Ok(list(Vec::new()));
    }
    let count = (stop.abs_diff(start) - 1) / step.unsigned_abs() + 1;
    if count > MAX_LIST_LEN as u64 {
        return Err(format!("result would have more than {MAX_LIST_LEN} items"));
    }
    Ok(list(
        (0..count as i64)
            .map(|i| Value::Int(start + i * step))
            .collect(),
    ))
}

/// Sprig's `seq`, as bash's: `seq last`, `seq first last`, `seq first step last`; a string of
/// numbers separated by spaces.
pub(super) fn seq(a: &[Value]) -> Result<Value, String> {
    let n: Vec<i64> = a.iter().map(to_int).collect();
    let (first, step, last) = match n.as_slice() {
        [] => return Ok(s("")),
        [last] => (1, if *last >= 1 { 1 } else { -1 }, *last),
        [first, last] => (*first, if last >= first { 1 } else { -1 }, *last),
        [first, step, last, ..] => (*first, *step, *last),
    };
    if step == 0 || (step > 0 && first > last) || (step < 0 && first < last) {
        return Ok(s(""));
    }
    let end = if step > 0 {
        last.saturating_add(1)
    } else {
        last.saturating_sub(1)
    };
    let Value::List(items) = range_list(first, end, step)? else {
        return Ok(s(""));
    };
    let parts: Vec<String> = items.iter().map(strval).collect();
    Ok(s(parts.join(" ")))
}

pub(super) fn append(a: &[Value]) -> Result<Value, String> {
    let mut items = list_arg(a, 0)?.to_vec();
    items.push(arg(a, 1)?.clone());
    Ok(list(items))
}

pub(super) fn uniq(a: &[Value]) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for v in list_arg(a, 0)? {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(list(out))
}

pub(super) fn without(a: &[Value]) -> Result<Value, String> {
    let drop = &a[1.min(a.len())..];
    Ok(list(
        list_arg(a, 0)?
            .iter()
            .filter(|v| !drop.contains(v))
            .cloned()
            .collect(),
    ))
}

pub(super) fn compact(a: &[Value]) -> Result<Value, String> {
    Ok(list(
        list_arg(a, 0)?
            .iter()
            .filter(|v| !empty(v))
            .cloned()
            .collect(),
    ))
}

// ---- dicts ----

pub(super) fn dict(a: &[Value]) -> Result<Value, String> {
    let mut d = BTreeMap::new();
    for pair in a.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_else(|| s(""));
        d.insert(Arc::from(strval(&pair[0])), v);
    }
    Ok(map(d))
}

/// Sprig's `merge` (the first dict wins, deep) or `mergeOverwrite` (later dicts win).
pub(super) fn merge(a: &[Value], overwrite: bool) -> Result<Value, String> {
    fn deep(dst: &mut BTreeMap<Arc<str>, Value>, src: &BTreeMap<Arc<str>, Value>, over: bool) {
        for (k, v) in src {
            match (dst.get_mut(k), v) {
                (Some(Value::Map(d)), Value::Map(sv)) => {
                    let mut inner = (**d).clone();
                    deep(&mut inner, sv, over);
                    *d = Arc::new(inner);
                }
                (Some(existing), _) => {
                    if over || empty(existing) {
                        *existing = v.clone();
                    }
                }
                (None, _) => {
                    dst.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut out = dict_arg(a, 0)?.clone();
    for i in 1..a.len() {
        deep(&mut out, dict_arg(a, i)?, overwrite);
    }
    Ok(map(out))
}

/// Sprig's `dig k1 k2 ... default dict`.
pub(super) fn dig(a: &[Value]) -> Result<Value, String> {
    if a.len() < 3 {
        return Err("needs keys, a default and a dict".into());
    }
    let (keys, default, mut cur) = (&a[..a.len() - 2], &a[a.len() - 2], &a[a.len() - 1]);
    for k in keys {
        match cur {
            Value::Map(m) => match m.get(strval(k).as_str()) {
                Some(v) => cur = v,
                None => return Ok(default.clone()),
            },
            _ => return Ok(default.clone()),
        }
    }
    Ok(cur.clone())
}

// ---- JSON and YAML ----

/// A template value as JSON: whole floats become integers, as Go's encoder prints them.
pub(super) fn to_serde(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil | Value::Function(_) => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => J::from(*n),
        Value::Uint(n) => J::from(*n),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => J::from(*f as i64),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(t) => J::String(t.to_string()),
        Value::List(l) => J::Array(l.iter().map(to_serde).collect()),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), to_serde(v)))
                .collect(),
        ),
    }
}

/// JSON as Go decodes it into `interface{}`: numbers are float64.
pub(super) fn from_serde(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        J::String(t) => s(t),
        J::Array(a) => list(a.into_iter().map(from_serde).collect()),
        J::Object(o) => map(o
            .into_iter()
            .map(|(k, v)| (Arc::from(k), from_serde(v)))
            .collect()),
    }
}

pub(super) fn from_json(a: &[Value]) -> Result<Value, String> {
    let t = str_arg(a, 0)?;
    crate::bounds::check_json("fromJson", &t)
        .map_err(|_| format!("input is over {MAX_VALUE_BYTES} bytes or nests too deep"))?;
    serde_json::from_str::<serde_json::Value>(&t)
        .map(from_serde)
        .map_err(|_| "input is not JSON".into())
}

/// Go's `json.Marshal` (`html`: with `<`, `>`, `&`, U+2028 and U+2029 escaped, as Go does
/// unless told not to) or `MarshalIndent` with two spaces.
pub(super) fn to_json(a: &[Value], pretty: bool, html: bool) -> Result<Value, String> {
    let v = to_serde(arg(a, 0)?);
    let out = if pretty {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    }
    .map_err(|_| "cannot encode".to_string())?;
    if !html {
        return Ok(s(out));
    }
    let mut escaped = String::with_capacity(out.len());
    for c in out.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    Ok(s(escaped))
}

/// ESO's `toYaml`: the value as YAML (keys sorted), without the final newline.
pub(super) fn to_yaml(a: &[Value]) -> Result<Value, String> {
    let out = serde_yaml::to_string(&to_serde(arg(a, 0)?)).unwrap_or_default();
    Ok(s(out.strip_suffix('\n').unwrap_or(&out)))
}

/// ESO's `fromYaml`: a YAML mapping as a dict (aliases expanded within the same bound as SOPS
/// documents).
pub(super) fn from_yaml(a: &[Value]) -> Result<Value, String> {
    use crate::sops::tree::Node;
    fn conv(n: Node) -> Value {
        match n {
            Node::Map(entries) => map(entries
                .into_iter()
                .map(|(k, v)| (Arc::from(k), conv(v)))
                .collect()),
            Node::List(items) => list(items.into_iter().map(conv).collect()),
            Node::Str(t) => s(t),
            Node::Int(i) => Value::Int(i),
            Node::Float(f) => Value::Float(f),
            Node::Bool(b) => Value::Bool(b),
            Node::Null => Value::Nil,
        }
    }
    let t = str_arg(a, 0)?;
    let entries = crate::sops::tree::parse_yaml(t.as_bytes()).map_err(|e| e.to_string())?;
    Ok(conv(Node::Map(entries)))
}

// ---- regular expressions ----

pub(super) fn regex(a: &[Value], i: usize) -> Result<Arc<regex::Regex>, String> {
    crate::regexes::compile(&str_arg(a, i)?).map_err(|_| "invalid regular expression".into())
}

pub(super) fn regex_find(a: &[Value]) -> Result<Value, String> {
    let (re, t) = (regex(a, 0)?, str_arg(a, 1)?);
    Ok(s(re.find(&t).map(|m| m.as_str()).unwrap_or("")))
}

pub(super) fn regex_find_all(a: &[Value]) -> Result<Value, String> {
    let (re, t, n) = (regex(a, 0)?, str_arg(a, 1)?, int_arg(a, 2)?);
    let limit = if n < 0 { MAX_LIST_LEN + 1 } else { n as usize };
    Ok(list(
        re.find_iter(&t)
            .take(limit)
            .map(|m| s(m.as_str()))
            .collect(),
    ))
}

pub(super) fn regex_split(a: &[Value]) -> Result<Value, String> {
    let (re, t, n) = (regex(a, 0)?, str_arg(a, 1)?, int_arg(a, 2)?);
    let parts: Vec<Value> = if n < 0 {
        re.split(&t).take(MAX_LIST_LEN + 1).map(s).collect()
    } else {
        re.splitn(&t, n as usize).map(s).collect()
    };
    Ok(list(parts))
}

/// Sprig's `regexReplaceAll regex s repl` (`$1`, `${name}` expanded unless `literal`), its
/// output bounded as it is built.
pub(super) fn regex_replace(a: &[Value], literal: bool) -> Result<Value, String> {
    let (re, t, repl) = (regex(a, 0)?, str_arg(a, 1)?, str_arg(a, 2)?);
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(&t) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&t[last..m.start()]);
        if literal {
            out.push_str(&repl);
        } else {
            caps.expand(&repl, &mut out);
        }
        last = m.end();
        fits(out.len())?;
    }
    out.push_str(&t[last..]);
    fits(out.len())?;
    Ok(s(out))
}

// ---- types and paths ----

pub(super) fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    }
}

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "invalid",
        Value::List(_) => "slice",
        Value::Map(_) => "map",
        Value::Function(_) => "func",
        other => type_of(other),
    }
}

/// Go's `path.Base`.
pub(super) fn path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `path.Dir` for the usual cases (no `..` or `//` cleaning).
pub(super) fn path_dir(p: &str) -> String {
    match p.rfind('/') {
        None => ".".into(),
        Some(0) => "/".into(),
        Some(i) => p[..i].trim_end_matches('/').to_string(),
    }
}

// ---- ESO's PEM functions ----

/// ESO's `filterPEM type input`: the PEM blocks of `type` (case-insensitive), re-encoded, in
/// order. Errors when the input has no PEM block at all.
pub(super) fn filter_pem(a: &[Value]) -> Result<Value, String> {
    let (kind, input) = (str_arg(a, 0)?, str_arg(a, 1)?);
    let blocks = pem::parse_many(input.as_bytes()).map_err(|_| "input is not PEM")?;
    if blocks.is_empty() && !input.trim().is_empty() {
        return Err("error filtering pem: found junk".into());
    }
    let keep: Vec<pem::Pem> = blocks
        .into_iter()
        .filter(|b| b.tag().eq_ignore_ascii_case(&kind))
        .collect();
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(s(keep
        .iter()
        .map(|b| pem::encode_config(b, config))
        .collect::<String>()))
}
