//! The encrypted document as an ordered tree, read from YAML, JSON or dotenv the way sops's
//! stores read it (`stores/yaml/store.go`, `stores/json/store.go`, `stores/dotenv/store.go`),
//! and the `sops` metadata split off it (`stores/metadata.go`: `ExtractMetadata`).
//!
//! Comments are not kept: sops leaves them out of the MAC (`sops.go`: `Tree.Decrypt`), and the
//! comment-based encryption rules that would need them are refused in [`super::metadata`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Format, SopsError};

/// One node of a document, before decryption. Map entries keep document order (the MAC is
/// computed over leaves in that order).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// A mapping with string keys, in document order.
    Map(Vec<(String, Node)>),
    /// A sequence.
    List(Vec<Node>),
    /// A string (encrypted values are strings `ENC[...]`).
    Str(String),
    /// An integer that fits Go's `int` (64 bits).
    Int(i64),
    /// A float (YAML floats; JSON numbers that are not 64-bit integers).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// null / `~` / empty value: never encrypted nor part of the MAC (`sops.go`: `walkValue`).
    Null,
}

/// Which store a tree came from: decides how numbers that do not fit an `i64` are typed.
#[derive(Clone, Copy)]
enum Flavor {
    Yaml,
    Json,
}

/// Largest document (bytes) read: 1 MiB, the size limit of the ConfigMap that carries it.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// What a document may expand to while it is read, in units of one per node plus one per byte
/// of string: twice its size plus 1 KiB. A document without aliases stays under it (every
/// node takes at least one byte of the source, every string byte at least one), and YAML
/// aliases may repeat a part of it about once more. Without it, a 501 KB document aliasing
/// one list of 100,000 items 100,000 times took the operator past 2 GiB.
fn expansion_budget(len: usize) -> usize {
    len.saturating_mul(2).saturating_add(1024)
}

/// The units of [`expansion_budget`] left while reading one document.
struct Budget(std::cell::Cell<usize>);

impl Budget {
    fn take<E: de::Error>(&self, units: usize) -> Result<(), E> {
        let left = self.0.get().checked_sub(units.saturating_add(1));
        match left {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(EXPANSION_EXCEEDED)),
        }
    }
}

/// The error a document over its [`expansion_budget`] gets (matched in [`parse_yaml`]).
const EXPANSION_EXCEEDED: &str = "the document expands to more than twice its size (YAML aliases)";

struct NodeVisitor<'b>(Flavor, &'b Budget);

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping, sequence, string, number, boolean or null")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        match (i64::try_from(v), self.0) {
            (Ok(i), _) => Ok(Node::Int(i)),
            // encoding/json with UseNumber: an integer beyond int64 becomes a float64
            // (stores/json/store.go: normalizeJSONNumber).
            (Err(_), Flavor::Json) => Ok(Node::Float(v as f64)),
            // yaml.v3 decodes it as uint64, a type sops cannot walk (sops.go: walkValue).
            (Err(_), Flavor::Yaml) => Err(E::custom("integer out of the 64-bit signed range")),
        }
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(Node::Int(i)),
            Err(_) => match self.0 {
                Flavor::Json => Ok(Node::Float(v as f64)),
                Flavor::Yaml => Err(E::custom("integer out of the 64-bit signed range")),
            },
        }
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(Node::Int(i)),
            Err(_) => match self.0 {
                Flavor::Json => Ok(Node::Float(v as f64)),
                Flavor::Yaml => Err(E::custom("integer out of the 64-bit signed range")),
            },
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.1.take(v.len())?;
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        self.1.take(v.len())?;
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Err(E::custom("binary values are not supported"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        self.1.take(0)?;
        let mut items = Vec::new();
        while let Some(node) = seq.next_element_seed(TypedSeed(self.0, self.1))? {
            items.push(node);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        self.1.take(0)?;
        let mut entries = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key_seed(TypedSeed(self.0, self.1))? {
            // sops.go walkBranch: "Tree contains a non-string key ... Only string keys are supported".
            let Node::Str(key) = key else {
                return Err(de::Error::custom(
                    "only string keys are supported (as in sops)",
                ));
            };
            // yaml.v3 refuses duplicate keys for sops (stores/yaml/store.go: LoadPlainFile);
            // JSON ones are refused too, as a later duplicate would shadow the earlier one.
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom("duplicate key in a mapping"));
            }
            let value = map.next_value_seed(TypedSeed(self.0, self.1))?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Node, A::Error> {
        Err(de::Error::custom("tagged YAML values are not supported"))
    }
}

/// Reads a [`Node`] through serde with the typing rules of one store.
#[derive(Clone, Copy)]
struct TypedSeed<'b>(Flavor, &'b Budget);

impl<'de> de::DeserializeSeed<'de> for TypedSeed<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        // Scalars other than strings cost one unit.
        match d.deserialize_any(NodeVisitor(self.0, self.1)) {
            Ok(n @ (Node::Int(_) | Node::Float(_) | Node::Bool(_) | Node::Null)) => {
                self.1.take(0)?;
                Ok(n)
            }
            other => other,
        }
    }
}

/// Reads a YAML stream: exactly one document, a mapping (or empty). Aliases are expanded, as
/// yaml.v3 does for sops. Duplicate keys are refused (sops checks for them too).
pub(crate) fn parse_yaml(bytes: &[u8]) -> Result<Vec<(String, Node)>, SopsError> {
    check_size(bytes)?;
    let budget = Budget(std::cell::Cell::new(expansion_budget(bytes.len())));
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_slice(bytes) {
        let node = de::DeserializeSeed::deserialize(TypedSeed(Flavor::Yaml, &budget), doc)
            .map_err(|e| {
                // serde_yaml prefixes the path of the node: `b[6][539]: <message> at ...`.
                if e.to_string().contains(EXPANSION_EXCEEDED) {
                    SopsError::malformed(format!("YAML: {EXPANSION_EXCEEDED}"))
                } else {
                    SopsError::malformed(format!("YAML: {}", redact_yaml_error(&e)))
                }
            })?;
        docs.push(node);
    }
    if docs.len() > 1 {
        return Err(SopsError::Unsupported(
            "multi-document YAML files are not supported".into(),
        ));
    }
    match docs.pop() {
        None | Some(Node::Null) => Ok(Vec::new()),
        Some(Node::Map(entries)) => Ok(entries),
        // stores/yaml/store.go: "YAML documents that are sequences/values are not supported".
        Some(_) => Err(SopsError::malformed(
            "the top level of a YAML document must be a mapping",
        )),
    }
}

/// Reads a JSON document whose top level is an object, keeping key order (the crate's
/// serde_json has no `preserve_order`, so this goes through [`NodeVisitor`]).
fn parse_json(bytes: &[u8]) -> Result<Vec<(String, Node)>, SopsError> {
    check_size(bytes)?;
    let budget = Budget(std::cell::Cell::new(expansion_budget(bytes.len())));
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let node = de::DeserializeSeed::deserialize(TypedSeed(Flavor::Json, &budget), &mut de)
        .map_err(|e| SopsError::malformed(format!("JSON: {}", position_only_json(&e))))?;
    de.end()
        .map_err(|e| SopsError::malformed(format!("JSON: {}", position_only_json(&e))))?;
    match node {
        Node::Map(entries) => Ok(entries),
        // stores/json/store.go: "SOPS only supports JSON files with a top-level object".
        _ => Err(SopsError::malformed(
            "the top level of a JSON document must be an object",
        )),
    }
}

/// Refuses a document over [`MAX_DOCUMENT_BYTES`].
fn check_size(bytes: &[u8]) -> Result<(), SopsError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(SopsError::malformed(format!(
            "the document is {} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit",
            bytes.len()
        )));
    }
    Ok(())
}

/// serde_json's messages may quote the offending input (e.g. an unknown variant or an invalid
/// escape near a value); keep only the category and position so no plaintext can leak.
fn position_only_json(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unsupported value",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    if e.line() == 0 {
        what.to_string()
    } else {
        format!("{what} at line {} column {}", e.line(), e.column())
    }
}

/// serde_yaml's messages may quote scalars; keep only the location.
fn redact_yaml_error(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(loc) => format!(
            "invalid document at line {} column {}",
            loc.line(),
            loc.column()
        ),
        None => "invalid document".to_string(),
    }
}

/// One line of a dotenv file, as `stores/dotenv/store.go` (`LoadPlainFile`) reads it.
#[derive(Debug)]
pub(crate) enum DotenvLine {
    /// `#...`: a comment (its text is not needed: comments are outside the MAC).
    Comment,
    /// `KEY=VALUE`: key before the first `=`, value after it with `\n` (backslash, n) turned
    /// into a line feed.
    Entry(String, String),
}

/// Reads a dotenv file: lines split on `\n`; empty lines skipped; `#` starts a comment; any
/// other line must contain `=`.
pub(crate) fn parse_dotenv_lines(bytes: &[u8]) -> Result<Vec<DotenvLine>, SopsError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SopsError::malformed("dotenv: the file is not UTF-8"))?;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            out.push(DotenvLine::Comment);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(SopsError::malformed(format!(
                "dotenv: line {} is not KEY=VALUE",
                i + 1
            )));
        };
        out.push(DotenvLine::Entry(
            key.to_string(),
            value.replace("\\n", "\n"),
        ));
    }
    Ok(out)
}

/// A document split into its data (top-level entries in order, `sops` removed) and its
/// metadata tree.
pub(crate) struct SplitDocument {
    pub data: Vec<(String, Node)>,
    pub metadata: Node,
}

/// Parses `bytes` as `format` and splits the metadata off.
///
/// YAML/JSON: the top-level `sops` key (exactly one). Dotenv: every `sops_*` key, unflattened
/// (`stores/flatten.go`: `__map_` and `__list_` separators), values as strings.
pub(crate) fn split(bytes: &[u8], format: Format) -> Result<SplitDocument, SopsError> {
    match format {
        Format::Ini => Err(SopsError::Unsupported(
            "INI documents (sops decides the format by the file name: .ini); re-encrypt the file as YAML, JSON or dotenv".into(),
        )),
        Format::Yaml | Format::Json | Format::Binary => {
            let entries = if matches!(format, Format::Yaml) {
                parse_yaml(bytes)?
            } else {
                parse_json(bytes)?
            };
            let mut metadata = None;
            let mut data = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                if key == "sops" {
                    if metadata.is_some() {
                        return Err(SopsError::malformed("found duplicate sops entry"));
                    }
                    if !matches!(value, Node::Map(_)) {
                        return Err(SopsError::malformed(
                            "found sops entry that is not a mapping",
                        ));
                    }
                    metadata = Some(value);
                } else {
                    data.push((key, value));
                }
            }
            let metadata = metadata.ok_or(SopsError::NotSops)?;
            if format == Format::Binary
                && !(data.len() == 1 && data[0].0 == "data" && matches!(data[0].1, Node::Str(_)))
            {
                return Err(SopsError::malformed(
                    "a SOPS binary document holds exactly one string, \"data\"",
                ));
            }
            Ok(SplitDocument { data, metadata })
        }
        Format::Dotenv => {
            let mut data = Vec::new();
            let mut flat = Vec::new();
            for line in parse_dotenv_lines(bytes)? {
                match line {
                    DotenvLine::Comment => {}
                    DotenvLine::Entry(key, value) => match key.strip_prefix("sops_") {
                        Some(meta_key) => flat.push((meta_key.to_string(), value)),
                        None => data.push((key, Node::Str(value))),
                    },
                }
            }
            if flat.is_empty() {
                return Err(SopsError::NotSops);
            }
            let metadata = unflatten(flat)?;
            Ok(SplitDocument { data, metadata })
        }
    }
}

/// One path step of a flattened metadata key.
#[derive(Debug, PartialEq)]
enum Token {
    Key(String),
    Index(usize),
}

const MAP_SEPARATOR: &str = "__map_";
const LIST_SEPARATOR: &str = "__list_";

/// Splits `kms__list_0__map_arn` into `[Key(kms), Index(0), Key(arn)]` (`stores/flatten.go`:
/// `tokenize`; a list position that is not a number is position 0 there, an error here).
fn tokenize(path: &str) -> Result<Vec<Token>, SopsError> {
    #[derive(Clone, Copy)]
    enum State {
        Normal,
        Map,
        List,
    }
    let mut tokens = Vec::new();
    let mut state = State::Normal;
    let mut start = 0;
    let mut i = 0;
    let finish = |state: State, text: &str, tokens: &mut Vec<Token>| -> Result<(), SopsError> {
        match state {
            State::Normal | State::Map => tokens.push(Token::Key(text.to_string())),
            State::List => {
                let pos = text
                    .parse::<usize>()
                    .ok()
                    .filter(|p| *p < 100_000)
                    .ok_or_else(|| {
                        SopsError::malformed(format!("metadata key sops_{path}: bad list position"))
                    })?;
                tokens.push(Token::Index(pos));
            }
        }
        Ok(())
    };
    while i < path.len() {
        let rest = &path[i..];
        if rest.starts_with(MAP_SEPARATOR) || rest.starts_with(LIST_SEPARATOR) {
            finish(state, &path[start..i], &mut tokens)?;
            let (next, len) = if rest.starts_with(MAP_SEPARATOR) {
                (State::Map, MAP_SEPARATOR.len())
            } else {
                (State::List, LIST_SEPARATOR.len())
            };
            state = next;
            i += len;
            start = i;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    finish(state, &path[start..], &mut tokens)?;
    Ok(tokens)
}

#[derive(Default)]
struct Slot {
    value: Option<String>,
    keys: BTreeMap<String, Slot>,
    indices: BTreeMap<usize, Slot>,
}

/// Rebuilds the metadata tree from flattened `(key, value)` pairs (`stores/flatten.go`:
/// `unflattenTreeBranch`): a path may not carry both a value and children; lists must be
/// complete (0..n).
pub(crate) fn unflatten(flat: Vec<(String, String)>) -> Result<Node, SopsError> {
    let mut root = Slot::default();
    for (key, value) in flat {
        let mut slot = &mut root;
        for token in tokenize(&key)? {
            slot = match token {
                Token::Key(k) => slot.keys.entry(k).or_default(),
                Token::Index(i) => slot.indices.entry(i).or_default(),
            };
        }
        if slot.value.is_some() {
            return Err(SopsError::malformed(format!(
                "metadata key sops_{key} appears twice"
            )));
        }
        slot.value = Some(value);
    }
    fn convert(slot: Slot) -> Result<Node, SopsError> {
        let kinds = usize::from(slot.value.is_some())
            + usize::from(!slot.keys.is_empty())
            + usize::from(!slot.indices.is_empty());
        if kinds > 1 {
            return Err(SopsError::malformed("flattened metadata: type mismatch"));
        }
        if let Some(v) = slot.value {
            return Ok(Node::Str(v));
        }
        if !slot.indices.is_empty() {
            let n = slot.indices.len();
            if slot.indices.keys().next_back() != Some(&(n - 1)) {
                return Err(SopsError::malformed("flattened metadata: incomplete list"));
            }
            return slot
                .indices
                .into_values()
                .map(convert)
                .collect::<Result<_, _>>()
                .map(Node::List);
        }
        slot.keys
            .into_iter()
            .map(|(k, v)| convert(v).map(|v| (k, v)))
            .collect::<Result<_, _>>()
            .map(Node::Map)
    }
    convert(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_keeps_order_and_types() {
        let doc = b"b: 1\na: x\nc: [true, 1.5, ~]\nsops: {mac: m}\n";
        let split = split(doc, Format::Yaml).unwrap();
        assert_eq!(
            split.data,
            vec![
                ("b".to_string(), Node::Int(1)),
                ("a".to_string(), Node::Str("x".into())),
                (
                    "c".to_string(),
                    Node::List(vec![Node::Bool(true), Node::Float(1.5), Node::Null])
                ),
            ]
        );
        assert_eq!(
            split.metadata,
            Node::Map(vec![("mac".into(), Node::Str("m".into()))])
        );
    }

    #[test]
    fn json_numbers_typed_like_sops() {
        let doc = br#"{"z": 1, "y": 1.0, "x": 18446744073709551615, "sops": {}}"#;
        let split = split(doc, Format::Json).unwrap();
        assert_eq!(split.data[0], ("z".into(), Node::Int(1)));
        assert_eq!(split.data[1], ("y".into(), Node::Float(1.0)));
        assert_eq!(
            split.data[2],
            ("x".into(), Node::Float(18446744073709551615.0))
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            split(b"a: 1\n", Format::Yaml),
            Err(SopsError::NotSops)
        ));
        assert!(split(b"- a\n", Format::Yaml).is_err());
        assert!(split(b"1: a\nsops: {}\n", Format::Yaml).is_err());
        assert!(split(b"a: 1\na: 2\nsops: {}\n", Format::Yaml).is_err());
        assert!(split(b"[1]", Format::Json).is_err());
        assert!(split(b"{\"sops\": {}} x", Format::Json).is_err());
        assert!(split(b"{\"a\": 1, \"a\": 2, \"sops\": {}}", Format::Json).is_err());
        assert!(split(b"NOEQUALS\n", Format::Dotenv).is_err());
    }

    #[test]
    fn dotenv_metadata_unflattens() {
        let doc = b"# c\nA=x\\ny\nsops_age__list_0__map_recipient=r\nsops_age__list_0__map_enc=l1\\nl2\nsops_mac=m\n";
        let split = split(doc, Format::Dotenv).unwrap();
        assert_eq!(split.data, vec![("A".into(), Node::Str("x\ny".into()))]);
        assert_eq!(
            split.metadata,
            Node::Map(vec![
                (
                    "age".into(),
                    Node::List(vec![Node::Map(vec![
                        ("enc".into(), Node::Str("l1\nl2".into())),
                        ("recipient".into(), Node::Str("r".into())),
                    ])])
                ),
                ("mac".into(), Node::Str("m".into())),
            ])
        );
    }

    #[test]
    fn unflatten_refuses_gaps_and_conflicts() {
        let s = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(unflatten(s(&[("a__list_1", "x")])).is_err());
        assert!(unflatten(s(&[("a", "x"), ("a__map_b", "y")])).is_err());
        assert!(unflatten(s(&[("a", "x"), ("a", "y")])).is_err());
        assert!(unflatten(s(&[("a__list_x", "x")])).is_err());
    }
}
