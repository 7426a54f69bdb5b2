//! Regular expressions from specs (rewrite sources, `find.name.regexp`, a ClusterSecretStore's
//! `namespaceRegexes`, a SOPS document's `encrypted_regex`), compiled once and shared.
//!
//! Rust's `regex` crate matches in linear time, so a hostile pattern cannot backtrack for
//! long; what is bounded here is its compiled size. Patterns are cached by text in a bounded
//! cache, so a reconcile does not compile the same pattern again.

use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexBuilder};

/// Compiled size limit of one pattern (bytes of the program and of the lazy DFA's cache):
/// 1 MiB each, a tenth of the crate's defaults. `(a{1000}){1000}` goes over it.
pub const SIZE_LIMIT: usize = 1 << 20;

/// Longest pattern accepted (bytes).
pub const MAX_PATTERN_BYTES: usize = 4096;

/// Distinct patterns kept compiled.
const CACHE_CAPACITY: u64 = 1024;

static CACHE: LazyLock<moka::sync::Cache<String, Arc<Regex>>> =
    LazyLock::new(|| moka::sync::Cache::new(CACHE_CAPACITY));

/// `pattern` compiled (Rust `regex` syntax), from the cache when it was compiled before.
/// Errors: the crate's message (which quotes the pattern, spec text, never a value), a
/// pattern over [`MAX_PATTERN_BYTES`], or one that compiles past [`SIZE_LIMIT`].
pub fn compile(pattern: &str) -> Result<Arc<Regex>, String> {
    if let Some(re) = CACHE.get(pattern) {
        return Ok(re);
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "pattern is {} bytes, over the {MAX_PATTERN_BYTES}-byte limit",
            pattern.len()
        ));
    }
    let re = RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())?;
    let re = Arc::new(re);
    CACHE.insert(pattern.to_string(), re.clone());
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_once_and_bounded() {
        let a = compile("^team-(a|b)$").unwrap();
        let b = compile("^team-(a|b)$").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second compile is the cached one");
        assert!(a.is_match("team-a"));
        let err = compile("(a{1000}){1000}").unwrap_err();
        assert!(err.contains("exceeds size limit"), "{err}");
        assert!(compile("(").is_err());
        assert!(compile(&"a".repeat(MAX_PATTERN_BYTES + 1)).is_err());
    }
}
