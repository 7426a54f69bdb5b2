//! `decodingStrategy`, shared by `remoteRef`, `dataFrom[].extract` and `templateFrom[]`
//! (ESO's `ExternalSecretDecodingStrategy`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ESO's `decodingStrategy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DecodingStrategy {
    /// Store the value as fetched.
    #[default]
    None,
    /// Standard base64 (RFC 4648 §4), padding optional.
    Base64,
    /// URL-safe base64 (RFC 4648 §5), padding optional.
    #[serde(rename = "Base64URL")]
    Base64Url,
    /// Base64, else URL-safe base64, else the value as fetched.
    Auto,
}
