//! What the pure build steps share about values: the error of an invalid spec or value
//! ([`BuildError`]), the JSON bounds, and `decodingStrategy`. The bottom of the build
//! (`build`, `build_template` and `rewrite_merge` import it; it imports none of them).

use base64::Engine as _;

use crate::{api::external_secret::DecodingStrategy, providers::SecretValue};

/// An invalid spec detected while building: bad JSON path, template, regexp or encoding.
/// Permanent: the controller waits for a spec change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

pub use crate::bounds::{MAX_JSON_BYTES, MAX_JSON_DEPTH};

/// [`crate::bounds::check_json`] as a [`BuildError`]: the message names `key` and the bound,
/// never the value.
pub fn check_json_bounds(key: &str, text: &str) -> Result<(), BuildError> {
    crate::bounds::check_json(key, text).map_err(BuildError)
}

/// Applies `decodingStrategy` (RFC 4648 base64, standard or URL-safe; padding optional).
pub fn decode(
    key: &str,
    value: SecretValue,
    strategy: DecodingStrategy,
) -> Result<SecretValue, BuildError> {
    use base64::engine::{
        DecodePaddingMode, GeneralPurposeConfig, general_purpose::GeneralPurpose,
    };
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let std = GeneralPurpose::new(&base64::alphabet::STANDARD, lenient);
    let url = GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient);
    let input = value.as_bytes();
    let trimmed: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let out = match strategy {
        DecodingStrategy::None => return Ok(value),
        DecodingStrategy::Base64 => std.decode(&trimmed),
        DecodingStrategy::Base64Url => url.decode(&trimmed),
        DecodingStrategy::Auto => match std.decode(&trimmed).or_else(|_| url.decode(&trimmed)) {
            Ok(v) => Ok(v),
            Err(_) => return Ok(value),
        },
    };
    out.map(SecretValue::new).map_err(|_| {
        BuildError(format!(
            "{key:?}: value is not valid {strategy:?} (decodingStrategy)"
        ))
    })
}
