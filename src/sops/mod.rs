//! Decryption of SOPS documents (YAML, JSON, dotenv), compatible with sops 3.x.
//!
//! A document is [parsed](Document::parse) without any key; its [key groups](Document::key_groups)
//! say which master keys (AWS KMS, Google Cloud KMS, Vault Transit, age, ...) hold the data key.
//! [`decrypt_data_key`] asks a [`KeyService`] (a KMS provider, [`AgeKeyService`]) for it, and
//! combines Shamir shares when the document has several key groups. [`Document::decrypt`] then
//! decrypts every value with it and verifies the document's MAC, so that a changed, removed,
//! reordered or moved value is refused.
//!
//! The format follows the sops source (getsops/sops v3.13): `sops.go` (tree walk, MAC),
//! `aes/cipher.go` (value encryption), `stores/*` (file formats and metadata), `shamir/`.
//!
//! # Rules carried over from sops
//! - Each value is AES-256-GCM encrypted with the 32-byte data key and a 32-byte nonce, written
//!   `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<str|int|float|bool|bytes|time|comment>]`.
//!   Its additional data is its path: the map keys leading to it joined with `:`, plus a
//!   trailing `:` (`db:password:`); list positions are not part of the path, so the elements of
//!   a list share their list's path.
//! - Which values are encrypted: all but those under a key with the `unencrypted_suffix`
//!   (default `_unencrypted`), or only those under a key with `encrypted_suffix` /
//!   matching `encrypted_regex`, or all but those matching `unencrypted_regex` (any key of the
//!   path counts). Where the rule says "encrypted", the value must be in the `ENC[...]` form
//!   (empty strings excepted: sops leaves them as they are), whatever `mac_only_encrypted` says,
//!   so a plaintext swapped in for a ciphertext is refused. nulls are neither encrypted nor in
//!   the MAC. The comment-based rules (`encrypted_comment_regex`, `unencrypted_comment_regex`)
//!   are refused as unsupported.
//! - The MAC is SHA-512 over the plaintext of every leaf in document order (only the encrypted
//!   ones, after a fixed 32-byte seed, with `mac_only_encrypted`), in upper-case hex, stored
//!   encrypted with the data key and `lastmodified` as additional data. It is compared in
//!   constant time.
//!
//! # Key flattening (for `dataFrom.extract`)
//! [`Decrypted::flatten`] gives every leaf under its path: map keys joined with `.`, list
//! positions as numbers. For
//! ```yaml
//! db: {password: s3cret, port: 5432}
//! hosts: [a.example, b.example]
//! users: [{name: ann}, {name: bob, admin: true}]
//! ```
//! the keys are `db.password`, `db.port`, `hosts.0`, `hosts.1`, `users.0.name`,
//! `users.1.name`, `users.1.admin`; values in their text form (`5432`, `true`; floats as sops
//! prints them; null as empty). A dotenv document is flat already: its keys are as written.
//! [`Decrypted::to_json`] gives the whole document as JSON, for `property` paths.
//!
//! Nothing here logs; error messages name paths and key identifiers (ARNs, recipients), never
//! a plaintext, a data key or an identity.

mod age;
mod cipher;
mod decrypted;
mod metadata;
pub mod shamir;
pub(crate) mod tree;

use std::collections::BTreeMap;

use async_trait::async_trait;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use self::age::AgeKeyService;
use self::cipher::{CipherError, EncType, EncValue};
pub use self::decrypted::{Decrypted, LeafKind};
use self::decrypted::{Leaf, Value};
use self::metadata::Metadata;
pub use self::tree::MAX_DOCUMENT_BYTES;
use self::tree::Node;
use crate::providers::{ErrorKind, ProviderError};

/// The file format of a SOPS document, chosen as sops chooses its store
/// (`cmd/sops/formats/formats.go`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML (`stores/yaml`): one document whose top level is a mapping; metadata under `sops`.
    Yaml,
    /// JSON (`stores/json`): an object; metadata under `sops`.
    Json,
    /// dotenv (`stores/dotenv`): `KEY=VALUE` lines; metadata as flattened `sops_*` keys.
    Dotenv,
    /// INI (`stores/ini`): recognised by name so that it is reported, not decrypted
    /// ([`SopsError::Unsupported`]).
    Ini,
    /// Binary (`stores/json`: `BinaryStore`): a JSON object whose one data key, `data`, holds
    /// the whole file's plaintext; metadata under `sops`.
    Binary,
}

impl Format {
    /// The format of a file named `name`, exactly as sops picks its store
    /// (`formats.FormatForPath`): a name ending in `.yaml` or `.yml` is YAML, `.json` JSON,
    /// `.env` dotenv, `.ini` INI, anything else binary. Case-sensitive, as in sops
    /// (`x.YAML` is binary).
    pub fn for_file_name(name: &str) -> Format {
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            Format::Yaml
        } else if name.ends_with(".json") {
            Format::Json
        } else if name.ends_with(".env") {
            Format::Dotenv
        } else if name.ends_with(".ini") {
            Format::Ini
        } else {
            Format::Binary
        }
    }

    /// The format sops' `--input-type` names (`yaml`, `json`, `dotenv`, `ini`, `binary`).
    pub fn from_input_type(t: crate::api::external_secret::SopsInputType) -> Format {
        use crate::api::external_secret::SopsInputType as T;
        match t {
            T::Yaml => Format::Yaml,
            T::Json => Format::Json,
            T::Dotenv => Format::Dotenv,
            T::Ini => Format::Ini,
            T::Binary => Format::Binary,
        }
    }
}

/// A master key entry of a document's metadata: what holds (an encrypted copy of) the data
/// key, or of this group's Shamir share. `enc` is as stored in the document
/// (`stores/stores.go`, the keysource packages):
#[derive(Clone, PartialEq, Eq)]
pub enum MasterKey {
    /// `kms` (`kms/keysource.go`): `enc` is the base64 of the KMS `CiphertextBlob`; decrypt it
    /// with `arn`, the encryption `context` (nulls dropped) and, if set, by assuming `role`.
    AwsKms {
        /// Key ARN (or alias ARN).
        arn: String,
        /// base64 ciphertext blob.
        enc: String,
        /// KMS encryption context.
        context: BTreeMap<String, String>,
        /// IAM role to assume first, if any.
        role: Option<String>,
    },
    /// `gcp_kms` (`gcpkms/keysource.go`): `enc` is the base64 of the Cloud KMS ciphertext;
    /// `resource_id` is `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    GcpKms {
        /// Crypto key resource name.
        resource_id: String,
        /// base64 ciphertext.
        enc: String,
    },
    /// `hc_vault` (`hcvault/keysource.go`): `enc` is a Transit ciphertext `vault:v1:...` for
    /// `POST {vault_address}/v1/{engine_path}/decrypt/{key_name}`; the plaintext Transit
    /// returns is the base64 of the data key (or share).
    HcVault {
        /// Vault address as recorded by sops.
        vault_address: String,
        /// Transit mount path.
        engine_path: String,
        /// Transit key name.
        key_name: String,
        /// `vault:v1:...` ciphertext.
        enc: String,
    },
    /// `age` (`age/keysource.go`): `enc` is an armored age file for `recipient`.
    Age {
        /// The age recipient (public key).
        recipient: String,
        /// Armored age file.
        enc: String,
    },
    /// A key type this crate does not decrypt: `pgp`, `azure_kv`, `hckms`.
    Unsupported {
        /// The metadata field name, e.g. `pgp`.
        kind: String,
    },
}

impl MasterKey {
    /// The metadata field name of this entry's type: `kms`, `gcp_kms`, `hc_vault`, `age`, or
    /// the unsupported kind.
    pub fn kind(&self) -> &str {
        match self {
            MasterKey::AwsKms { .. } => "kms",
            MasterKey::GcpKms { .. } => "gcp_kms",
            MasterKey::HcVault { .. } => "hc_vault",
            MasterKey::Age { .. } => "age",
            MasterKey::Unsupported { kind } => kind,
        }
    }
}

/// Shows the kind and identifier, not `enc` (not secret, but long and useless in logs).
impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKey::AwsKms { arn, .. } => write!(f, "AwsKms({arn})"),
            MasterKey::GcpKms { resource_id, .. } => write!(f, "GcpKms({resource_id})"),
            MasterKey::HcVault {
                vault_address,
                engine_path,
                key_name,
                ..
            } => write!(
                f,
                "HcVault({vault_address}/v1/{engine_path}/keys/{key_name})"
            ),
            MasterKey::Age { recipient, .. } => write!(f, "Age({recipient})"),
            MasterKey::Unsupported { kind } => write!(f, "Unsupported({kind})"),
        }
    }
}

/// Why a document cannot be decrypted. Messages name paths (`db:password`) and key
/// identifiers, never a plaintext, a data key or an identity.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SopsError {
    /// The bytes have no `sops` metadata (`sops.go`: `MetadataNotFound`).
    #[error("sops: not a SOPS document (no sops metadata found)")]
    NotSops,
    /// The document or its metadata cannot be read.
    #[error("sops: malformed document: {0}")]
    Malformed(String),
    /// A value cannot be decrypted or does not have the form its path requires. `path` is the
    /// value's path joined with `:` as sops writes it.
    #[error("sops: value at {path}: {reason}")]
    Value {
        /// `db:password`.
        path: String,
        /// What is wrong, without the value.
        reason: String,
    },
    /// The MAC cannot be decrypted, or does not match the values.
    #[error("sops: MAC mismatch: {0}")]
    MacMismatch(String),
    /// A feature this implementation refuses (comment rules, multi-document YAML).
    #[error("sops: unsupported: {0}")]
    Unsupported(String),
    /// Identities given to [`AgeKeyService::new`] that cannot be read (the message gives a line
    /// number, never the line).
    #[error("sops: {0}")]
    InvalidIdentity(String),
    /// The key service handles none of the document's key entries.
    #[error("sops: no key of this store's kind among the document's keys ({})", kinds.join(", "))]
    NoMatchingKey {
        /// The document's key types, in order, deduplicated (`age`, `kms`, ...).
        kinds: Vec<String>,
    },
    /// Fewer key groups than `shamir_threshold` could be decrypted.
    #[error(
        "sops: only {got} of the {needed} key groups needed (of {groups}) could be decrypted{}",
        cause.as_ref().map(|c| format!("; first failure: {c}")).unwrap_or_default()
    )]
    NotEnoughShares {
        /// Groups decrypted.
        got: usize,
        /// `shamir_threshold`.
        needed: usize,
        /// Groups in the document.
        groups: usize,
        /// The first key service error, if any; its kind is the error's kind.
        cause: Option<ProviderError>,
    },
    /// The data key (or a share) from the key service, or the combined shares, are unusable.
    #[error("sops: data key: {0}")]
    DataKey(String),
    /// An error of the key service, unchanged.
    #[error("{0}")]
    KeyService(#[source] ProviderError),
}

impl SopsError {
    fn malformed(msg: impl Into<String>) -> Self {
        SopsError::Malformed(msg.into())
    }

    /// The provider error category: `InvalidData` for documents that are malformed, tampered
    /// with or not SOPS at all and for unusable data keys; `InvalidConfig` for unsupported
    /// features, unreadable identities and when the store has no key for the document; a key
    /// service error's own kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SopsError::NotSops
            | SopsError::Malformed(_)
            | SopsError::Value { .. }
            | SopsError::MacMismatch(_)
            | SopsError::DataKey(_) => ErrorKind::InvalidData,
            SopsError::Unsupported(_)
            | SopsError::InvalidIdentity(_)
            | SopsError::NoMatchingKey { .. } => ErrorKind::InvalidConfig,
            SopsError::NotEnoughShares { cause, .. } => {
                cause.as_ref().map_or(ErrorKind::InvalidConfig, |c| c.kind)
            }
            SopsError::KeyService(e) => e.kind,
        }
    }
}

impl From<SopsError> for ProviderError {
    /// A key service error comes back as it was; anything else keeps its message and
    /// [`SopsError::kind`].
    fn from(e: SopsError) -> Self {
        match e {
            SopsError::KeyService(inner) => inner,
            other => ProviderError::new(other.kind(), other.to_string()),
        }
    }
}

/// Decrypts master key entries: a KMS provider, [`AgeKeyService`].
#[async_trait]
pub trait KeyService: Send + Sync {
    /// Decrypts one entry's `enc` (the data key, or a Shamir share when there are several groups).
    /// Ok(None) = this service does not handle that kind of entry (the next entry is tried).
    async fn decrypt(&self, key: &MasterKey) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError>;
}

/// A parsed SOPS document; nothing is decrypted yet. Cheap to clone relative to a decryption.
#[derive(Clone, Debug)]
pub struct Document {
    format: Format,
    data: Vec<(String, Node)>,
    metadata: Metadata,
}

impl Document {
    /// Parses `bytes` as `format` and reads the metadata.
    ///
    /// Errors: [`SopsError::NotSops`] without metadata; [`SopsError::Malformed`] for syntax
    /// errors (messages give a position, not content), non-string keys, a top level that is not
    /// a mapping, duplicate keys (YAML), bad metadata (see `stores/stores.go`: `ToInternal`);
    /// [`SopsError::Unsupported`] for comment-based rules and multi-document YAML.
    pub fn parse(bytes: &[u8], format: Format) -> Result<Document, SopsError> {
        let split = tree::split(bytes, format)?;
        let metadata = Metadata::from_node(&split.metadata)?;
        Ok(Document {
            format,
            data: split.data,
            metadata,
        })
    }

    /// The format it was parsed as.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The key groups, each a list of entries in sops's order (kms, gcp_kms, hckms, azure_kv,
    /// hc_vault, pgp, age). A document with flat `kms`/`age`/... lists has one group.
    pub fn key_groups(&self) -> &[Vec<MasterKey>] {
        &self.metadata.key_groups
    }

    /// Number of groups whose shares are needed (1 with a single group).
    pub fn shamir_threshold(&self) -> usize {
        self.metadata.shamir_threshold
    }

    /// The document's key types in order of appearance, deduplicated (`age`, `kms`, ...).
    pub fn key_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = Vec::new();
        for key in self.metadata.key_groups.iter().flatten() {
            if !kinds.iter().any(|k| k == key.kind()) {
                kinds.push(key.kind().to_string());
            }
        }
        kinds
    }

    /// Decrypts every value with `data_key` and verifies the MAC (`sops.go`: `Tree.Decrypt`,
    /// `cmd/sops/common/common.go`: `DecryptTree`).
    ///
    /// Errors (all `InvalidData`): [`SopsError::Value`] when a value that the rules say is
    /// encrypted is not in the `ENC[...]` form, fails authentication (changed ciphertext, a
    /// renamed or moved key, another data key) or does not parse as its type;
    /// [`SopsError::MacMismatch`] when the MAC is missing, cannot be decrypted, or differs
    /// from the one computed (a changed plaintext value, a removed or reordered entry).
    pub fn decrypt(&self, data_key: &[u8; 32]) -> Result<Decrypted, SopsError> {
        let mut walker = Walker {
            key: data_key,
            meta: &self.metadata,
            hash: Sha512::new(),
            path: Vec::new(),
        };
        if self.metadata.mac_only_encrypted {
            walker.hash.update(MAC_ONLY_ENCRYPTED_SEED);
        }
        let mut root = Vec::with_capacity(self.data.len());
        for (k, v) in &self.data {
            walker.path.push(k.clone());
            if let Some(value) = walker.walk(v)? {
                root.push((k.clone(), value));
            }
            walker.path.pop();
        }
        let computed = hex::encode_upper(walker.hash.finalize());

        if self.metadata.mac.is_empty() {
            return Err(SopsError::MacMismatch("the document has no MAC".into()));
        }
        let stored = EncValue::parse(&self.metadata.mac)
            .map_err(|e| SopsError::MacMismatch(format!("stored MAC: {e}")))?;
        let plain = stored
            .decrypt(data_key, self.metadata.mac_aad.as_bytes())
            .map_err(|e| SopsError::MacMismatch(format!("stored MAC: {e}")))?;
        if !bool::from(plain.as_slice().ct_eq(computed.as_bytes())) {
            return Err(SopsError::MacMismatch(
                "the values do not match the document's MAC (a value was changed, added, removed or reordered)"
                    .into(),
            ));
        }
        Ok(Decrypted { root })
    }
}

/// `sops.go`: `MACOnlyEncryptedInitialization`, the SHA-256 of `sops`.
const MAC_ONLY_ENCRYPTED_SEED: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Walks the data tree in document order, decrypting and hashing leaves (`sops.go`:
/// `walkBranch`, `walkSlice`, `Tree.Decrypt`).
struct Walker<'a> {
    key: &'a [u8; 32],
    meta: &'a Metadata,
    hash: Sha512,
    /// Map keys from the root to the current node.
    path: Vec<String>,
}

impl Walker<'_> {
    fn path_string(&self) -> String {
        self.path.join(":")
    }

    fn value_err(&self, reason: impl Into<String>) -> SopsError {
        SopsError::Value {
            path: self.path_string(),
            reason: reason.into(),
        }
    }

    /// The decrypted node; None for an element that decrypts to a comment (sops turns those
    /// back into comments, outside the data and the MAC).
    fn walk(&mut self, node: &Node) -> Result<Option<Value>, SopsError> {
        match node {
            Node::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    self.path.push(k.clone());
                    let value = self.walk(v);
                    self.path.pop();
                    if let Some(value) = value? {
                        out.push((k.clone(), value));
                    }
                }
                Ok(Some(Value::Map(out)))
            }
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(value) = self.walk(item)? {
                        out.push(value);
                    }
                }
                Ok(Some(Value::List(out)))
            }
            Node::Null => Ok(Some(Value::Leaf(Leaf {
                kind: LeafKind::Null,
                text: Zeroizing::new(Vec::new()),
            }))),
            leaf => self.leaf(leaf),
        }
    }

    fn leaf(&mut self, node: &Node) -> Result<Option<Value>, SopsError> {
        let encrypted = self.meta.rule.should_encrypt(&self.path);
        let (leaf, mac_bytes) = if encrypted {
            let Node::Str(text) = node else {
                return Err(self.value_err("expected an encrypted value, found a plain one"));
            };
            if text.is_empty() {
                // aes/cipher.go: an empty string is neither encrypted nor decrypted.
                (
                    plain_leaf(LeafKind::Str, Vec::new()),
                    Zeroizing::new(Vec::new()),
                )
            } else {
                let enc = EncValue::parse(text).map_err(|e| match e {
                    CipherError::Format(_) => {
                        self.value_err("expected an encrypted value ENC[AES256_GCM,...], found a plain one or a malformed one")
                    }
                    other => self.value_err(other.to_string()),
                })?;
                let aad = format!("{}:", self.path_string());
                let plain = enc
                    .decrypt(self.key, aad.as_bytes())
                    .map_err(|e| self.value_err(e.to_string()))?;
                match typed(enc.kind, plain).map_err(|e| self.value_err(e.to_string()))? {
                    Some(pair) => pair,
                    None => return Ok(None),
                }
            }
        } else {
            plaintext_leaf(node)
        };
        if !self.meta.mac_only_encrypted || encrypted {
            self.hash.update(mac_bytes.as_slice());
        }
        Ok(Some(Value::Leaf(leaf)))
    }
}

fn plain_leaf(kind: LeafKind, text: Vec<u8>) -> Leaf {
    Leaf {
        kind,
        text: Zeroizing::new(text),
    }
}

/// A leaf and the bytes it adds to the MAC (`sops.go`: `ToBytes`).
type LeafAndMac = (Leaf, Zeroizing<Vec<u8>>);

/// A leaf left in plaintext by the rules, and its MAC bytes.
fn plaintext_leaf(node: &Node) -> LeafAndMac {
    let (kind, text, mac) = match node {
        Node::Str(s) => (
            LeafKind::Str,
            s.clone().into_bytes(),
            s.clone().into_bytes(),
        ),
        Node::Int(i) => (
            LeafKind::Int,
            i.to_string().into_bytes(),
            i.to_string().into_bytes(),
        ),
        Node::Float(f) => {
            let t = cipher::go_format_float(*f).into_bytes();
            (LeafKind::Float, t.clone(), t)
        }
        Node::Bool(b) => (
            LeafKind::Bool,
            if *b { "true" } else { "false" }.as_bytes().to_vec(),
            if *b { "True" } else { "False" }.as_bytes().to_vec(),
        ),
        // Maps, lists and nulls are handled by the walker.
        Node::Null | Node::Map(_) | Node::List(_) => (LeafKind::Null, Vec::new(), Vec::new()),
    };
    (plain_leaf(kind, text), Zeroizing::new(mac))
}

/// Converts a decrypted plaintext to its type (`aes/cipher.go`: `Decrypt`) and gives the MAC
/// bytes (`sops.go`: `ToBytes` of the typed value). None for a comment.
fn typed(kind: EncType, plain: Zeroizing<Vec<u8>>) -> Result<Option<LeafAndMac>, CipherError> {
    let pair = match kind {
        EncType::Str => (plain_leaf(LeafKind::Str, plain.to_vec()), plain),
        EncType::Bytes => (plain_leaf(LeafKind::Bytes, plain.to_vec()), plain),
        EncType::Int => {
            let i = cipher::go_parse_int(&plain).ok_or(CipherError::Type("int"))?;
            let text = i.to_string().into_bytes();
            (
                plain_leaf(LeafKind::Int, text.clone()),
                Zeroizing::new(text),
            )
        }
        EncType::Float => {
            let f = cipher::go_parse_float(&plain).ok_or(CipherError::Type("float"))?;
            let text = cipher::go_format_float(f).into_bytes();
            (
                plain_leaf(LeafKind::Float, text.clone()),
                Zeroizing::new(text),
            )
        }
        EncType::Bool => {
            let b = cipher::go_parse_bool(&plain).ok_or(CipherError::Type("bool"))?;
            (
                plain_leaf(
                    LeafKind::Bool,
                    if b {
                        b"true".to_vec()
                    } else {
                        b"false".to_vec()
                    },
                ),
                Zeroizing::new(if b {
                    b"True".to_vec()
                } else {
                    b"False".to_vec()
                }),
            )
        }
        EncType::Time => {
            let t = cipher::go_time_roundtrip(&plain).ok_or(CipherError::Type("time"))?;
            let text = t.into_bytes();
            (
                plain_leaf(LeafKind::Time, text.clone()),
                Zeroizing::new(text),
            )
        }
        EncType::Comment => return Ok(None),
    };
    Ok(Some(pair))
}

/// Recovers the data key of `doc` with `service` (`sops.go`: `GetDataKeyWithKeyServices`).
///
/// Each group's entries are tried in order until one decrypts: `Ok(None)` from the service
/// moves on to the next entry, and so does an error (another entry may work, e.g. a second
/// KMS region). With one group its plaintext must be the 32-byte data key. With several groups
/// each decrypted group gives a Shamir share; groups are tried in order until
/// `shamir_threshold` shares are found, which are then combined (`shamir/shamir.go`).
///
/// Errors: [`SopsError::NoMatchingKey`] (`InvalidConfig`) when the service handles no entry of
/// a needed group and reported no error; the first [`ProviderError`] of the group, unchanged
/// ([`SopsError::KeyService`]), when it did; [`SopsError::NotEnoughShares`] with several
/// groups (kind of its first service error, else `InvalidConfig`); [`SopsError::DataKey`]
/// (`InvalidData`) when a plaintext has the wrong length or shares do not combine.
pub async fn decrypt_data_key(
    doc: &Document,
    service: &dyn KeyService,
) -> Result<Zeroizing<[u8; 32]>, SopsError> {
    let groups = doc.key_groups();
    let needed = doc.shamir_threshold();
    let mut shares: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut first_error: Option<ProviderError> = None;
    let mut any_handled = false;
    for group in groups {
        if shares.len() == needed {
            break;
        }
        let mut group_error = None;
        for key in group {
            match service.decrypt(key).await {
                Ok(Some(plain)) => {
                    shares.push(plain);
                    group_error = None;
                    any_handled = true;
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    any_handled = true;
                    group_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = group_error {
            first_error.get_or_insert(e);
        }
    }
    if groups.len() == 1 {
        return match shares.pop() {
            Some(plain) => to_data_key(&plain),
            None => Err(match first_error {
                Some(e) => SopsError::KeyService(e),
                None => SopsError::NoMatchingKey {
                    kinds: doc.key_kinds(),
                },
            }),
        };
    }
    if shares.len() < needed {
        if !any_handled {
            return Err(SopsError::NoMatchingKey {
                kinds: doc.key_kinds(),
            });
        }
        return Err(SopsError::NotEnoughShares {
            got: shares.len(),
            needed,
            groups: groups.len(),
            cause: first_error,
        });
    }
    let parts: Vec<&[u8]> = shares.iter().map(|s| s.as_slice()).collect();
    let secret = shamir::combine(&parts)
        .map_err(|e| SopsError::DataKey(format!("combining Shamir shares: {e}")))?;
    to_data_key(&secret)
}

fn to_data_key(plain: &[u8]) -> Result<Zeroizing<[u8; 32]>, SopsError> {
    if plain.len() != 32 {
        return Err(SopsError::DataKey(format!(
            "expected 32 bytes, the key service returned {}",
            plain.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(plain);
    Ok(key)
}

#[cfg(test)]
mod tests;
