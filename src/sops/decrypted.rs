//! A decrypted document: the tree with typed leaves whose text lives in zeroizing buffers.

use std::io::Write;

use zeroize::Zeroizing;

use crate::providers::{SecretMap, SecretValue};

/// The type of a decrypted leaf, from the `type:` of its `ENC[...]` value or, for a plaintext
/// value, from the document's own typing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// A string (`type:str`, or a plaintext string).
    Str,
    /// An integer (`type:int`).
    Int,
    /// A float (`type:float`).
    Float,
    /// A boolean (`type:bool`).
    Bool,
    /// A timestamp (`type:time`), text in RFC 3339.
    Time,
    /// Raw bytes (`type:bytes`), text as they are.
    Bytes,
    /// null.
    Null,
}

/// One leaf: its kind and its text form (see the module docs of [`super`]). The text is wiped
/// on drop and not printed by `Debug`.
#[derive(Clone)]
pub(crate) struct Leaf {
    pub kind: LeafKind,
    pub text: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}(<{} bytes redacted>)", self.kind, self.text.len())
    }
}

/// A node of the decrypted tree.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Map(Vec<(String, Value)>),
    List(Vec<Value>),
    Leaf(Leaf),
}

/// A decrypted, MAC-verified document: its leaves in document order, typed. Built by
/// [`super::Document::decrypt`]. Every leaf's text is zeroized on drop; `Debug` shows no value.
#[derive(Clone, Debug)]
pub struct Decrypted {
    pub(crate) root: Vec<(String, Value)>,
}

impl Decrypted {
    /// Every leaf by its flattened path: map keys joined with `.`, list positions as decimal
    /// numbers (`db.password`, `hosts.0`, `users.1.name`). Values are the leaves' text form:
    /// strings as they are, integers in decimal, floats as sops prints them (`strconv
    /// .FormatFloat(f, 'f', -1, 64)`: `1.5`, `1`, never an exponent), booleans `true`/`false`,
    /// null as empty. Empty maps and lists yield no key. When two paths flatten to the same key
    /// (a key that itself contains a `.`), the later leaf in document order wins.
    pub fn flatten(&self) -> SecretMap {
        let mut out = SecretMap::new();
        let mut prefix = String::new();
        for (k, v) in &self.root {
            flatten_into(&mut out, &mut prefix, k, v);
        }
        out
    }

    /// The document as JSON, in document order: maps as objects, lists as arrays, integers
    /// and finite floats as JSON numbers, booleans, null; strings, timestamps and bytes as JSON
    /// strings (bytes that are not UTF-8 are replaced with U+FFFD), non-finite floats as the
    /// strings `+Inf`, `-Inf`, `NaN`. Written once into an exactly sized buffer, so no
    /// reallocation leaves a copy behind.
    pub fn to_json(&self) -> SecretValue {
        let mut counter = Counter(0);
        // Writing to a counter or a presized Vec cannot fail.
        let _ = write_map(&mut counter, &self.root);
        let mut buf = Vec::with_capacity(counter.0);
        let _ = write_map(&mut buf, &self.root);
        debug_assert_eq!(buf.len(), counter.0);
        SecretValue::new(buf)
    }

    /// Number of leaves (nulls included).
    pub fn leaf_count(&self) -> usize {
        fn count(v: &Value) -> usize {
            match v {
                Value::Map(m) => m.iter().map(|(_, v)| count(v)).sum(),
                Value::List(l) => l.iter().map(count).sum(),
                Value::Leaf(_) => 1,
            }
        }
        self.root.iter().map(|(_, v)| count(v)).sum()
    }

    /// The leaf at `path` (map keys and list positions), with its kind and text; None if the
    /// path does not lead to a leaf. For tests and diagnostics.
    pub fn leaf(&self, path: &[&str]) -> Option<(LeafKind, &[u8])> {
        let (first, rest) = path.split_first()?;
        let mut node = self.root.iter().find(|(k, _)| k == first).map(|(_, v)| v)?;
        for step in rest {
            node = match node {
                Value::Map(m) => m.iter().find(|(k, _)| k == step).map(|(_, v)| v)?,
                Value::List(l) => l.get(step.parse::<usize>().ok()?)?,
                Value::Leaf(_) => return None,
            };
        }
        match node {
            Value::Leaf(l) => Some((l.kind, l.text.as_slice())),
            _ => None,
        }
    }
}

fn flatten_into(out: &mut SecretMap, prefix: &mut String, key: &str, value: &Value) {
    let len = prefix.len();
    if !prefix.is_empty() {
        prefix.push('.');
    }
    prefix.push_str(key);
    match value {
        Value::Map(m) => {
            for (k, v) in m {
                flatten_into(out, prefix, k, v);
            }
        }
        Value::List(l) => {
            for (i, v) in l.iter().enumerate() {
                flatten_into(out, prefix, &i.to_string(), v);
            }
        }
        Value::Leaf(leaf) => {
            out.insert(prefix.clone(), SecretValue::new(leaf.text.to_vec()));
        }
    }
    prefix.truncate(len);
}

/// Counts bytes written.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_str<W: Write>(w: &mut W, s: &str) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, s).map_err(std::io::Error::other)
}

fn write_text<W: Write>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    match std::str::from_utf8(bytes) {
        Ok(s) => write_str(w, s),
        Err(_) => {
            let lossy = Zeroizing::new(String::from_utf8_lossy(bytes).into_owned());
            write_str(w, &lossy)
        }
    }
}

fn write_map<W: Write>(w: &mut W, entries: &[(String, Value)]) -> std::io::Result<()> {
    w.write_all(b"{")?;
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write_str(w, k)?;
        w.write_all(b":")?;
        write_value(w, v)?;
    }
    w.write_all(b"}")
}

fn write_value<W: Write>(w: &mut W, v: &Value) -> std::io::Result<()> {
    match v {
        Value::Map(m) => write_map(w, m),
        Value::List(l) => {
            w.write_all(b"[")?;
            for (i, v) in l.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write_value(w, v)?;
            }
            w.write_all(b"]")
        }
        Value::Leaf(leaf) => match leaf.kind {
            LeafKind::Null => w.write_all(b"null"),
            LeafKind::Int | LeafKind::Bool => w.write_all(&leaf.text),
            LeafKind::Float => match leaf.text.as_slice() {
                b"+Inf" | b"-Inf" | b"NaN" => write_text(w, &leaf.text),
                t => w.write_all(t),
            },
            LeafKind::Str | LeafKind::Time | LeafKind::Bytes => write_text(w, &leaf.text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(kind: LeafKind, text: &str) -> Value {
        Value::Leaf(Leaf {
            kind,
            text: Zeroizing::new(text.as_bytes().to_vec()),
        })
    }

    fn sample() -> Decrypted {
        Decrypted {
            root: vec![
                (
                    "db".into(),
                    Value::Map(vec![
                        ("password".into(), leaf(LeafKind::Str, "p\"w\n")),
                        ("port".into(), leaf(LeafKind::Int, "5432")),
                    ]),
                ),
                (
                    "hosts".into(),
                    Value::List(vec![leaf(LeafKind::Str, "a"), leaf(LeafKind::Float, "1.5")]),
                ),
                (
                    "users".into(),
                    Value::List(vec![
                        Value::Map(vec![("name".into(), leaf(LeafKind::Str, "ü"))]),
                        Value::Map(vec![("admin".into(), leaf(LeafKind::Bool, "true"))]),
                    ]),
                ),
                ("nothing".into(), leaf(LeafKind::Null, "")),
                ("inf".into(), leaf(LeafKind::Float, "+Inf")),
                ("empty".into(), Value::Map(vec![])),
            ],
        }
    }

    #[test]
    fn flatten_paths() {
        let flat = sample().flatten();
        let got: Vec<(&str, &str)> = flat
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("db.password", "p\"w\n"),
                ("db.port", "5432"),
                ("hosts.0", "a"),
                ("hosts.1", "1.5"),
                ("inf", "+Inf"),
                ("nothing", ""),
                ("users.0.name", "ü"),
                ("users.1.admin", "true"),
            ]
        );
    }

    #[test]
    fn json_keeps_order_and_types() {
        let json = sample().to_json();
        assert_eq!(
            json.as_str().unwrap(),
            r#"{"db":{"password":"p\"w\n","port":5432},"hosts":["a",1.5],"users":[{"name":"ü"},{"admin":true}],"nothing":null,"inf":"+Inf","empty":{}}"#
        );
        let parsed: serde_json::Value = serde_json::from_slice(json.as_bytes()).unwrap();
        assert_eq!(parsed["users"][1]["admin"], serde_json::Value::Bool(true));
    }

    #[test]
    fn leaf_lookup() {
        let d = sample();
        assert_eq!(
            d.leaf(&["users", "1", "admin"]),
            Some((LeafKind::Bool, &b"true"[..]))
        );
        assert_eq!(d.leaf(&["users", "2"]), None);
        assert_eq!(d.leaf(&["db"]), None);
        assert_eq!(d.leaf_count(), 8);
        assert!(!format!("{d:?}").contains("5432"));
    }
}
