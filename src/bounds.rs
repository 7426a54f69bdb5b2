//! Bounds on tenant input that more than one layer enforces (the template engine's `fromJson`
//! and the controller's `property`, `extract` and `merge`), kept at the bottom of the crate so
//! that neither imports the other for them. Each check runs before any parser sees the input
//! and names the bound it hit, never the value.

/// Deepest nesting of arrays and objects accepted in a JSON value that `property` or
/// `extract` parses. The parsers recurse once per level, on a worker's stack: a tenant's value
/// nested 10,000 deep overflowed it and aborted the process. Secrets nest a few levels.
pub const MAX_JSON_DEPTH: usize = 64;

/// Largest JSON value (bytes) that `property` or `extract` parses: 1 MiB, the size limit of a
/// whole Secret.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// Checks a JSON text against [`MAX_JSON_DEPTH`] and [`MAX_JSON_BYTES`] before any parser sees
/// it, in one pass without recursion (brackets inside strings, escapes included, do not
/// count). Only the shape is checked; the parser still validates the syntax. The message
/// names `key` and the bound, never the value.
pub fn check_json(key: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_JSON_BYTES {
        return Err(format!(
            "{key:?}: value is {} bytes, over the {MAX_JSON_BYTES}-byte limit for JSON values",
            text.len()
        ));
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!(
                        "{key:?}: JSON value nested deeper than {MAX_JSON_DEPTH} levels"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
