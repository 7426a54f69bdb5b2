//! Argument and value helpers shared by the template functions.

use std::{collections::BTreeMap, sync::Arc};

use gotmpl::Value;

use super::*;

// ---- argument helpers ----

pub(super) fn s(t: impl Into<String>) -> Value {
    Value::String(Arc::from(t.into()))
}

pub(super) fn list(items: Vec<Value>) -> Value {
    Value::List(items.into())
}

pub(super) fn map(entries: BTreeMap<Arc<str>, Value>) -> Value {
    Value::Map(Arc::new(entries))
}

pub(super) fn arg(a: &[Value], i: usize) -> Result<&Value, String> {
    a.get(i)
        .ok_or_else(|| format!("missing argument {}", i + 1))
}

/// Sprig's `strval`: a string as it is, anything else as Go's `%v` prints it.
pub(super) fn strval(v: &Value) -> String {
    match v {
        Value::String(t) => t.to_string(),
        other => other.to_string(),
    }
}

pub(super) fn str_arg(a: &[Value], i: usize) -> Result<String, String> {
    arg(a, i).map(strval)
}

pub(super) fn bytes_arg(a: &[Value], i: usize) -> Result<Vec<u8>, String> {
    arg(a, i).map(|v| uncarry_bytes(&strval(v)))
}

pub(super) fn int_arg(a: &[Value], i: usize) -> Result<i64, String> {
    arg(a, i).map(to_int)
}

pub(super) fn list_arg(a: &[Value], i: usize) -> Result<&[Value], String> {
    match arg(a, i)? {
        Value::List(l) => Ok(l),
        Value::Nil => Ok(&[]),
        _ => Err(format!("argument {} must be a list", i + 1)),
    }
}

pub(super) fn dict_arg(a: &[Value], i: usize) -> Result<&BTreeMap<Arc<str>, Value>, String> {
    match arg(a, i)? {
        Value::Map(m) => Ok(m),
        _ => Err(format!("argument {} must be a dict", i + 1)),
    }
}

/// Sprig's `toInt64`: numbers truncated, strings parsed (0 when they are not numbers), bools
/// 1 or 0.
pub(super) fn to_int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::Uint(n) => *n as i64,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::String(t) => t
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| t.trim().parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn to_float(v: &Value) -> f64 {
    match v {
        Value::Int(n) => *n as f64,
        Value::Uint(n) => *n as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(t) => t.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Sprig's `empty`: nil, false, 0, "" and empty lists and dicts.
pub(super) fn empty(v: &Value) -> bool {
    !v.is_truthy()
}

pub(super) fn fits(bytes: usize) -> Result<(), String> {
    if bytes > MAX_VALUE_BYTES {
        return Err(format!("result would exceed {MAX_VALUE_BYTES} bytes"));
    }
    Ok(())
}
