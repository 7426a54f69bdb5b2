//! Certificate chains and private keys for the PKCS#12 functions: ESO's `fetchCertChains`
//! (`runtime/template/v2/pem_chain.go`, after the Azure CSI provider) and Go's
//! `parsePrivateKey` (PKCS#1, then PKCS#8, then SEC1).

use der::{
    Decode, Encode,
    asn1::{AnyRef, ObjectIdentifier, OctetString},
};
use x509_parser::{extensions::ParsedExtension, prelude::FromDer};

use super::jwk::seq;

/// The certificates (DER) ordered leaf first, then each one's issuer up to the root, as ESO's
/// `fetchX509CertChains`: a certificate's parent is the first other certificate whose subject
/// key ID equals its authority key ID (absent IDs compare as empty, as in Go); the leaf is the
/// one that is nobody's parent. `None` (ESO then keeps the file's order) when a certificate
/// does not parse, when more than one leaf or none is found, or on a cycle.
pub fn order(certs: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let mut ids = Vec::new();
    for der in certs {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        let (mut aki, mut ski): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a
                        .key_identifier
                        .as_ref()
                        .map(|k| k.0.to_vec())
                        .unwrap_or_default();
                }
                ParsedExtension::SubjectKeyIdentifier(k) => ski = k.0.to_vec(),
                _ => {}
            }
        }
        ids.push((aki, ski));
    }
    let n = certs.len();
    let mut parent = vec![None; n];
    let mut is_parent = vec![false; n];
    for i in 0..n {
        if let Some(j) = (0..n).find(|&j| j != i && ids[i].0 == ids[j].1) {
            is_parent[j] = true;
            parent[i] = Some(j);
        }
    }
    let mut leaves = (0..n).filter(|&i| !is_parent[i]);
    let leaf = leaves.next()?;
    if leaves.next().is_some() {
        return None;
    }
    let mut out = Vec::new();
    let mut at = Some(leaf);
    while let Some(i) = at {
        if out.len() >= n {
            return None;
        }
        out.push(certs[i].clone());
        at = parent[i];
    }
    Some(out)
}

const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// The first private key of a PEM text as PKCS#8 DER, whatever its form: PKCS#1 (`RSA PRIVATE
/// KEY`), PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, its curve named in it).
pub fn private_key_pkcs8(text: &str) -> Result<Vec<u8>, String> {
    let bad = || "the private key is not a PEM RSA, EC or PKCS#8 key".to_string();
    let block = pem::parse_many(text)
        .map_err(|_| bad())?
        .into_iter()
        .find(|p| p.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(bad)?;
    let der = block.contents();
    if pkcs12::safe_bag::PrivateKeyInfo::from_der(der).is_ok() {
        return Ok(der.to_vec());
    }
    let (algorithm, params): (&str, Option<ObjectIdentifier>) = match block.tag() {
        "RSA PRIVATE KEY" => (RSA_ENCRYPTION, None),
        "EC PRIVATE KEY" => (EC_PUBLIC_KEY, Some(sec1_curve(der).ok_or_else(bad)?)),
        _ => return Err(bad()),
    };
    let oid = ObjectIdentifier::new(algorithm)
        .map_err(|_| bad())?
        .to_der()
        .map_err(|_| bad())?;
    let params = match params {
        None => vec![0x05, 0x00],
        Some(curve) => curve.to_der().map_err(|_| bad())?,
    };
    let alg_id = seq(&[&oid, &params]);
    let key = OctetString::new(der.to_vec())
        .and_then(|o| o.to_der())
        .map_err(|_| bad())?;
    Ok(seq(&[&[0x02, 0x01, 0x00], &alg_id, &key]))
}

/// The named curve of a SEC1 `ECPrivateKey` (its `[0] parameters`).
fn sec1_curve(der: &[u8]) -> Option<ObjectIdentifier> {
    let seq = AnyRef::from_der(der).ok()?;
    let mut reader = der::SliceReader::new(seq.value()).ok()?;
    use der::Reader as _;
    while !reader.is_finished() {
        let any: AnyRef<'_> = reader.decode().ok()?;
        let tag = der::Tagged::tag(&any);
        if tag
            == (der::Tag::ContextSpecific {
                constructed: true,
                number: der::TagNumber(0),
            })
        {
            return ObjectIdentifier::from_der(any.value()).ok();
        }
    }
    None
}
