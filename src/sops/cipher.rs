//! The value cipher of sops (`aes/cipher.go`): AES-256-GCM with a 32-byte nonce and a 16-byte
//! tag, values written `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<type>]`, and the
//! plaintext conversions of `sops.go` (`ToBytes`) and Go's `strconv`.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};
use base64::Engine as _;
use zeroize::Zeroizing;

/// AES-256-GCM with sops's 32-byte nonce (`aes/cipher.go`: `nonceSize`).
type SopsGcm = AesGcm<Aes256, U32>;

/// The declared type of an encrypted value (`type:` in the `ENC[...]` string).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EncType {
    Str,
    Int,
    Float,
    Bool,
    Bytes,
    Time,
    Comment,
}

/// The parts of an `ENC[AES256_GCM,...]` string.
pub(crate) struct EncValue {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    pub kind: EncType,
}

/// Why an `ENC[...]` value cannot be used. Carries no plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CipherError {
    /// Not of the form `ENC[AES256_GCM,data:..,iv:..,tag:..,type:..]`.
    Format(&'static str),
    /// Authentication failed: the ciphertext, its path (additional data) or the key differ.
    Auth,
    /// The plaintext does not parse as the declared type.
    Type(&'static str),
}

impl std::fmt::Display for CipherError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CipherError::Format(why) => write!(f, "not a sops encrypted value ({why})"),
            CipherError::Auth => f.write_str(
                "AES-GCM authentication failed (the value was changed, moved to another key, or encrypted with another data key)",
            ),
            CipherError::Type(t) => write!(f, "decrypted value is not a valid {t}"),
        }
    }
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, CipherError> {
    if s.is_empty() {
        return Err(CipherError::Format(what));
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| CipherError::Format(what))
}

impl EncValue {
    /// Parses `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<type>]` (`aes/cipher.go`:
    /// `encre`, anchored at both ends here). Needs a 32-byte IV and a 16-byte tag.
    pub fn parse(s: &str) -> Result<EncValue, CipherError> {
        let body = s
            .strip_prefix("ENC[AES256_GCM,data:")
            .and_then(|b| b.strip_suffix(']'))
            .ok_or(CipherError::Format("missing ENC[AES256_GCM,...] envelope"))?;
        let (data, rest) = body
            .split_once(",iv:")
            .ok_or(CipherError::Format("missing iv"))?;
        let (iv, rest) = rest
            .split_once(",tag:")
            .ok_or(CipherError::Format("missing tag"))?;
        let (tag, kind) = rest
            .split_once(",type:")
            .ok_or(CipherError::Format("missing type"))?;
        let kind = match kind {
            "str" => EncType::Str,
            "int" => EncType::Int,
            "float" => EncType::Float,
            "bool" => EncType::Bool,
            "bytes" => EncType::Bytes,
            "time" => EncType::Time,
            "comment" => EncType::Comment,
            _ => return Err(CipherError::Format("unknown type")),
        };
        let value = EncValue {
            data: b64(data, "bad data")?,
            iv: b64(iv, "bad iv")?,
            tag: b64(tag, "bad tag")?,
            kind,
        };
        if value.iv.len() != 32 {
            return Err(CipherError::Format("iv is not 32 bytes"));
        }
        if value.tag.len() != 16 {
            return Err(CipherError::Format("tag is not 16 bytes"));
        }
        Ok(value)
    }

    /// Decrypts with `key`, authenticating `aad` (the value's path `a:b:` or, for the MAC,
    /// `lastmodified`). The plaintext is returned in a zeroizing buffer.
    pub fn decrypt(&self, key: &[u8; 32], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        let cipher = SopsGcm::new_from_slice(key).map_err(|_| CipherError::Auth)?;
        let nonce = Nonce::<U32>::try_from(self.iv.as_slice())
            .map_err(|_| CipherError::Format("iv is not 32 bytes"))?;
        let tag = Tag::try_from(self.tag.as_slice()).map_err(|_| CipherError::Format("bad tag"))?;
        let mut buf = Zeroizing::new(self.data.clone());
        cipher
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
            .map_err(|_| CipherError::Auth)?;
        Ok(buf)
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn go_parse_bool(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` on a 64-bit platform: optional sign, decimal digits.
pub(crate) fn go_parse_int(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// Go's `strconv.ParseFloat(s, 64)` for the forms sops writes (decimal, exponent, inf, nan).
pub(crate) fn go_parse_float(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.is_empty() || text.contains('_') {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that reads back as `f`,
/// never in exponent form (Rust's `Display` for `f64` is exactly that), and `+Inf`, `-Inf`,
/// `NaN` for the non-finite values.
pub(crate) fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{f}")
    }
}

/// Go's `time.Time.UnmarshalText` then `MarshalText`: RFC 3339 in, RFC 3339 with the fraction
/// trimmed of trailing zeros out (`time.RFC3339Nano`).
pub(crate) fn go_time_roundtrip(s: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(s).ok()?;
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let mut out = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    if t.offset().local_minus_utc() == 0 {
        out.push('Z');
    } else {
        out.push_str(&t.format("%:z").to_string());
    }
    Some(out)
}

/// `lastmodified` as sops uses it for the MAC's additional data: `time.Parse(time.RFC3339, s)`
/// then `Format(time.RFC3339)` (`cmd/sops/common/common.go`: `DecryptTree`), i.e. seconds
/// precision, `Z` for UTC.
pub(crate) fn go_rfc3339_roundtrip(s: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_format_matches_go() {
        assert_eq!(go_format_float(1.0), "1");
        assert_eq!(go_format_float(12.625), "12.625");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(go_format_float(1e-7), "0.0000001");
        assert_eq!(go_format_float(-0.5), "-0.5");
        assert_eq!(go_format_float(f64::INFINITY), "+Inf");
        assert_eq!(go_format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(go_format_float(f64::NAN), "NaN");
    }

    #[test]
    fn go_parsers() {
        assert_eq!(go_parse_bool(b"True"), Some(true));
        assert_eq!(go_parse_bool(b"F"), Some(false));
        assert_eq!(go_parse_bool(b"yes"), None);
        assert_eq!(go_parse_int(b"+007"), Some(7));
        assert_eq!(go_parse_int(b"-12"), Some(-12));
        assert_eq!(go_parse_int(b"1.0"), None);
        assert_eq!(go_parse_int(b"9223372036854775808"), None);
        assert_eq!(go_parse_float(b"1.5e3"), Some(1500.0));
        assert_eq!(go_parse_float(b"1_0"), None);
    }

    #[test]
    fn time_formats() {
        assert_eq!(
            go_rfc3339_roundtrip("2024-01-02T03:04:05.678+00:00").as_deref(),
            Some("2024-01-02T03:04:05Z")
        );
        assert_eq!(
            go_rfc3339_roundtrip("2024-01-02T03:04:05+02:00").as_deref(),
            Some("2024-01-02T03:04:05+02:00")
        );
        assert_eq!(
            go_time_roundtrip(b"2024-01-02T03:04:05.500Z").as_deref(),
            Some("2024-01-02T03:04:05.5Z")
        );
        assert!(go_rfc3339_roundtrip("yesterday").is_none());
    }

    #[test]
    fn enc_parse_refuses_malformed() {
        let iv = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        let tag = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        let ok = format!("ENC[AES256_GCM,data:AAAA,iv:{iv},tag:{tag},type:str]");
        assert!(EncValue::parse(&ok).is_ok());
        for bad in [
            "plain".to_string(),
            format!("{ok}x"),
            format!("ENC[AES256_GCM,data:,iv:{iv},tag:{tag},type:str]"),
            format!("ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:{tag},type:str]"),
            format!("ENC[AES256_GCM,data:AAAA,iv:{iv},tag:{tag},type:list]"),
            format!("ENC[AES256_GCM,data:A!AA,iv:{iv},tag:{tag},type:str]"),
        ] {
            assert!(EncValue::parse(&bad).is_err(), "{bad}");
        }
    }
}
