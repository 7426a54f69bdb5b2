//! Go's print builtins (bounded) and Sprig's string and encoding functions.

use std::sync::Arc;

use gotmpl::Value;

use super::*;

// ---- Go builtins ----

/// An upper bound of the length of `v` as `%v` prints it.
pub(super) fn printed_len(v: &Value) -> usize {
    match v {
        Value::String(t) => t.len(),
        other => measure(other).0 * 2,
    }
}

/// Go's `fmt.Sprint`: operands joined, with a space between two that are not strings.
pub(super) fn sprint(a: &[Value]) -> Result<String, String> {
    fits(a.iter().map(|v| printed_len(v) + 1).sum())?;
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        let is_str = |v: &Value| matches!(v, Value::String(_));
        if i > 0 && !is_str(v) && !is_str(&a[i - 1]) {
            out.push(' ');
        }
        out.push_str(&strval(v));
    }
    Ok(out)
}

pub(super) fn print(a: &[Value]) -> Result<Value, String> {
    sprint(a).map(s)
}

pub(super) fn println(a: &[Value]) -> Result<Value, String> {
    fits(a.iter().map(|v| printed_len(v) + 1).sum())?;
    let parts: Vec<String> = a.iter().map(strval).collect();
    Ok(s(parts.join(" ") + "\n"))
}

/// Go's `printf`, run by gotmpl's own builtin once the result's size is known to fit: the
/// format's text, each operand printed, and each width or precision (at most 65535 each).
pub(super) fn printf(a: &[Value]) -> Result<Value, String> {
    let format = match a.first() {
        Some(Value::String(f)) => f.clone(),
        _ => return Err("the first argument must be a format string".into()),
    };
    // Widths and precisions: digits in the format, or `*` (an operand), 65535 at most each.
    let widths: usize = format
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse::<usize>().ok().map(|n| n.min(65_535)))
        .sum::<usize>()
        + format.matches('*').count() * 65_535;
    // `%q`, `%x`, `% X` and `%U` print up to 4 characters per byte; the others about one.
    let mut expands = false;
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let verb = chars.find(|c| c.is_ascii_alphabetic() || *c == '%');
            expands |= matches!(verb, Some('q' | 'x' | 'X' | 'U'));
        }
    }
    let factor = if expands { 4 } else { 1 };
    let operands: usize = a[1..].iter().map(|v| printed_len(v) * factor + 16).sum();
    fits(format.len() + widths + operands)?;
    let call: String = (0..a.len())
        .map(|i| format!(" (index . {i})"))
        .collect::<String>();
    let inner = gotmpl::Template::new("printf")
        .parse(&format!("{{{{printf{call}}}}}"))
        .map_err(|_| "invalid call".to_string())?;
    inner
        .execute_to_string(&list(a.to_vec()))
        .map(s)
        .map_err(|_| "invalid format or operands".into())
}

pub(super) fn slice(a: &[Value]) -> Result<Value, String> {
    let target = arg(a, 0)?;
    let idx = |i: usize| a.get(i).map(to_int);
    target
        .slice(idx(1), idx(2))
        .map_err(|_| "index out of range".into())
}

// ---- strings ----

/// Go's `strings.Title` (`upper`) or Sprig's `untitle`: the first letter of each word.
pub(super) fn title(t: &str, upper: bool) -> String {
    let mut out = String::with_capacity(t.len());
    let mut at_start = true;
    for c in t.chars() {
        if at_start && c.is_alphanumeric() {
            if upper {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

pub(super) fn floor_boundary(t: &str, mut i: usize) -> usize {
    i = i.min(t.len());
    while !t.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Sprig's `substr start end s` (byte offsets; here rounded down to a character boundary).
pub(super) fn substr(a: &[Value]) -> Result<Value, String> {
    let (start, end, t) = (int_arg(a, 0)?, int_arg(a, 1)?, str_arg(a, 2)?);
    let len = t.len() as i64;
    let (from, to) = if start < 0 {
        (0, end)
    } else if end < 0 || end > len {
        (start, len)
    } else {
        (start, end)
    };
    let from = floor_boundary(&t, from.clamp(0, len) as usize);
    let to = floor_boundary(&t, to.clamp(0, len) as usize).max(from);
    Ok(s(&t[from..to]))
}

/// Sprig's `trunc n s`: the first n bytes, or with n < 0 the last -n.
pub(super) fn trunc(a: &[Value]) -> Result<Value, String> {
    let (n, t) = (int_arg(a, 0)?, str_arg(a, 1)?);
    let len = t.len() as i64;
    if n < 0 && len + n > 0 {
        let from = floor_boundary(&t, (len + n) as usize);
        return Ok(s(&t[from..]));
    }
    if n >= 0 && len > n {
        return Ok(s(&t[..floor_boundary(&t, n as usize)]));
    }
    Ok(s(t))
}

/// Sprig's `indent`: every line of `t` after `n` spaces.
pub(super) fn indent(n: i64, t: &str) -> Result<String, String> {
    let n = n.max(0) as usize;
    let lines = t.matches('\n').count() + 1;
    fits(t.len() + lines.saturating_mul(n))?;
    let pad = " ".repeat(n);
    Ok(format!("{pad}{}", t.replace('\n', &format!("\n{pad}"))))
}

/// Go's `%q`: a double-quoted string with Go escapes.
pub(super) fn go_quote(t: &str) -> String {
    let mut out = String::with_capacity(t.len() + 2);
    out.push('"');
    for c in t.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `strings.Split`/`SplitN` (`n` pieces at most when given).
pub(super) fn split(t: &str, sep: &str, n: Option<usize>) -> Result<Vec<String>, String> {
    if n == Some(0) {
        return Ok(Vec::new());
    }
    let parts: Vec<String> = if sep.is_empty() {
        let chars: Vec<String> = t.chars().map(String::from).collect();
        match n {
            Some(n) if chars.len() > n => {
                let mut head: Vec<String> = chars[..n - 1].to_vec();
                head.push(chars[n - 1..].concat());
                head
            }
            _ => chars,
        }
    } else {
        match n {
            Some(n) => t.splitn(n, sep).map(String::from).collect(),
            None => t.split(sep).map(String::from).collect(),
        }
    };
    if parts.len() > MAX_LIST_LEN {
        return Err(format!("result has more than {MAX_LIST_LEN} items"));
    }
    Ok(parts)
}

/// Sprig's `split`: a dict `_0`, `_1`, ... of the pieces.
pub(super) fn indexed_dict(parts: Vec<String>) -> Value {
    map(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| (Arc::from(format!("_{i}")), s(p)))
        .collect())
}

/// RFC 4648 base32 with padding, as Go's `base32.StdEncoding`.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub(super) fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(BASE32[((bits >> (35 - 5 * i)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let data = text.trim_end_matches('=');
    if !text.len().is_multiple_of(8) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 5 / 8);
    let (mut acc, mut nbits) = (0u64, 0u32);
    for c in data.bytes() {
        let v = BASE32.iter().position(|x| *x == c)? as u64;
        acc = (acc << 5) | v;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
            acc &= (1 << nbits) - 1;
        }
    }
    Some(out)
}
