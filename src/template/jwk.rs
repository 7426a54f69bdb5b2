//! ESO's `jwkPublicKeyPem` and `jwkPrivateKeyPem`: a JSON Web Key (RFC 7517/7518/8037) as the
//! PEM that Go's `x509.MarshalPKIXPublicKey` (`PUBLIC KEY`) or `x509.MarshalPKCS8PrivateKey`
//! (`PRIVATE KEY`) gives, for RSA, EC (P-256, P-384, P-521) and Ed25519 keys.
//!
//! The DER is written here: the structures are fixed (SubjectPublicKeyInfo, PKCS#8
//! PrivateKeyInfo wrapping PKCS#1 RSAPrivateKey, SEC 1 ECPrivateKey or an Ed25519 seed), and
//! every field comes from the JWK, so no key arithmetic is needed. Errors are fixed text.

use base64::Engine as _;
use serde_json::Value as Json;

/// DER of `rsaEncryption` (1.2.840.113549.1.1.1).
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// DER of `id-ecPublicKey` (1.2.840.10045.2.1).
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of `id-Ed25519` (1.3.101.112).
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// A curve's OID (DER) and the byte length of its coordinates and scalars.
fn curve(name: &str) -> Result<(&'static [u8], usize), String> {
    match name {
        "P-256" => Ok((
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            32,
        )),
        "P-384" => Ok((&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22], 48)),
        "P-521" => Ok((&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23], 66)),
        _ => Err("unsupported EC curve (P-256, P-384, P-521)".into()),
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A DER SEQUENCE of already-encoded elements.
pub(super) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A non-negative INTEGER from big-endian magnitude bytes.
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    tlv(0x02, &content)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat())
}

fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x04, bytes)
}

/// `bytes` left-padded with zeros to `len` (JWK coordinates may omit leading zeros).
fn padded(bytes: Vec<u8>, len: usize) -> Result<Vec<u8>, String> {
    if bytes.len() > len {
        return Err("a key coordinate is longer than its curve allows".into());
    }
    Ok([vec![0; len - bytes.len()], bytes].concat())
}

struct Jwk(serde_json::Map<String, Json>);

impl Jwk {
    fn parse(text: &str) -> Result<Jwk, String> {
        match serde_json::from_str(text) {
            Ok(Json::Object(m)) => Ok(Jwk(m)),
            _ => Err("input is not a JSON Web Key".into()),
        }
    }
    fn text(&self, name: &str) -> Result<&str, String> {
        self.0
            .get(name)
            .and_then(Json::as_str)
            .ok_or_else(|| format!("the key has no {name:?} member"))
    }
    /// A base64url member's bytes (padding tolerated).
    fn bytes(&self, name: &str) -> Result<Vec<u8>, String> {
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        engine
            .decode(self.text(name)?)
            .map_err(|_| format!("the key's {name:?} member is not base64url"))
    }
}

/// The DER SubjectPublicKeyInfo of a JWK.
fn public_der(k: &Jwk) -> Result<Vec<u8>, String> {
    match k.text("kty")? {
        "RSA" => {
            let key = seq(&[&integer(&k.bytes("n")?), &integer(&k.bytes("e")?)]);
            Ok(seq(&[&seq(&[OID_RSA, &[0x05, 0x00]]), &bit_string(&key)]))
        }
        "EC" => {
            let (oid, len) = curve(k.text("crv")?)?;
            let point = [
                &[0x04u8][..],
                &padded(k.bytes("x")?, len)?,
                &padded(k.bytes("y")?, len)?,
            ]
            .concat();
            Ok(seq(&[&seq(&[OID_EC, oid]), &bit_string(&point)]))
        }
        "OKP" if k.text("crv")? == "Ed25519" => Ok(seq(&[
            &seq(&[OID_ED25519]),
            &bit_string(&padded(k.bytes("x")?, 32)?),
        ])),
        _ => Err("unsupported key type (RSA, EC, OKP Ed25519)".into()),
    }
}

/// The DER PKCS#8 PrivateKeyInfo of a JWK.
fn private_der(k: &Jwk) -> Result<Vec<u8>, String> {
    let version = integer(&[0]);
    match k.text("kty")? {
        "RSA" => {
            let mut fields = vec![integer(&[0])];
            for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
                fields.push(integer(&k.bytes(name)?));
            }
            let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
            let rsa = seq(&refs);
            Ok(seq(&[
                &version,
                &seq(&[OID_RSA, &[0x05, 0x00]]),
                &octet_string(&rsa),
            ]))
        }
        "EC" => {
            let (oid, len) = curve(k.text("crv")?)?;
            let point = [
                &[0x04u8][..],
                &padded(k.bytes("x")?, len)?,
                &padded(k.bytes("y")?, len)?,
            ]
            .concat();
            let ec = seq(&[
                &integer(&[1]),
                &octet_string(&padded(k.bytes("d")?, len)?),
                &tlv(0xa1, &bit_string(&point)),
            ]);
            Ok(seq(&[&version, &seq(&[OID_EC, oid]), &octet_string(&ec)]))
        }
        "OKP" if k.text("crv")? == "Ed25519" => Ok(seq(&[
            &version,
            &seq(&[OID_ED25519]),
            &octet_string(&octet_string(&padded(k.bytes("d")?, 32)?)),
        ])),
        _ => Err("unsupported key type (RSA, EC, OKP Ed25519)".into()),
    }
}

fn pem(tag: &str, der: Vec<u8>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

/// ESO's `jwkPublicKeyPem`: the public part of a JWK (public or private) as `PUBLIC KEY` PEM.
pub(crate) fn public_key_pem(jwk: &str) -> Result<String, String> {
    Ok(pem("PUBLIC KEY", public_der(&Jwk::parse(jwk)?)?))
}

/// ESO's `jwkPrivateKeyPem`: a private JWK as PKCS#8 `PRIVATE KEY` PEM.
pub(crate) fn private_key_pem(jwk: &str) -> Result<String, String> {
    Ok(pem("PRIVATE KEY", private_der(&Jwk::parse(jwk)?)?))
}
