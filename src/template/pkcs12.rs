//! ESO's PKCS#12 template functions (`runtime/template/v2/pkcs12.go`):
//! `pkcs12key`/`pkcs12keyPass`, `pkcs12cert`/`pkcs12certPass` read a PKCS#12 file (its bytes,
//! e.g. `{{ .keystore | b64dec | pkcs12key }}`); `pemToPkcs12`/`pemToPkcs12Pass`,
//! `fullPemToPkcs12`/`fullPemToPkcs12Pass` write one, base64-encoded.
//!
//! Reading follows go-pkcs12's `DecodeChain`, which ESO calls: one private key (key bag or
//! shrouded key bag), the certificate bag that has attributes is the leaf, the others are CA
//! certificates; the MAC is verified (an empty password also tried as no password, as
//! go-pkcs12 does). Legacy files (`pbeWithSHAAnd3-KeyTripleDES-CBC`, RC2-40 and RC2-128, as
//! `openssl pkcs12 -export -legacy` and OpenSSL 1.x write them) and modern ones (PBES2 with
//! PBKDF2 and AES, OpenSSL 3's default) are read. The walker is ours, over RustCrypto's
//! PKCS#12 types, so that the work a file can ask for is bounded: at most
//! [`MAX_PKCS12_BYTES`], [`MAX_BAGS`] bags and [`MAX_KDF_ITERATIONS`] key-derivation
//! iterations in all, scrypt refused. The iterations of the MAC and of the encryptions visible
//! without a key are added up first, so such a file is refused before any is spent; a key
//! hidden inside an encrypted safe is charged when it is met.
//!
//! Writing follows go-pkcs12's `Modern` encoder: PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC) and
//! an HMAC-SHA-256 MAC, 2048 iterations each, local key ID the SHA-1 of the leaf certificate,
//! written by `p12-keystore`. Salts are random, so the bytes differ at each render (a Secret
//! templated with them is rewritten at every refresh, as in ESO); `openssl pkcs12` and Java
//! read them.
//!
//! Errors are fixed text: never a byte of the file, a password or a key.

use base64::Engine as _;
use der::{
    Decode, Encode,
    asn1::{ContextSpecific, OctetString},
};
use hmac::{KeyInit, Mac};
use pkcs12::{
    CertBag, Pfx,
    cms::{content_info::ContentInfo, encrypted_data::EncryptedData},
    kdf,
    pbe_params::{EncryptedPrivateKeyInfo, Pkcs12PbeParams},
    safe_bag::SafeContents,
};

/// Largest PKCS#12 file read: 256 KiB (a key and a chain of a few certificates take ~10 KiB).
pub const MAX_PKCS12_BYTES: usize = 256 << 10;

/// Most bags (keys and certificates) one file may hold.
pub const MAX_BAGS: usize = 64;

/// Key-derivation iterations one file may ask for in all (MAC and every encryption): 600,000,
/// a few hundred milliseconds. OpenSSL writes 2048 per use, Java's keytool 10,000.
pub const MAX_KDF_ITERATIONS: u64 = 600_000;

const ID_DATA: &str = "1.2.840.113549.1.7.1";
const ID_ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const KEY_BAG: &str = "1.2.840.113549.1.12.10.1.1";
const SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const CERT_BAG: &str = "1.2.840.113549.1.12.10.1.3";
const X509_CERT: &str = "1.2.840.113549.1.9.22.1";
const PBES2: &str = "1.2.840.113549.1.5.13";
const PBE_SHA_3DES: &str = "1.2.840.113549.1.12.1.3";
const PBE_SHA_RC2_128: &str = "1.2.840.113549.1.12.1.5";
const PBE_SHA_RC2_40: &str = "1.2.840.113549.1.12.1.6";

/// What a PKCS#12 file holds, as go-pkcs12's `DecodeChain` returns it.
pub struct Decoded {
    /// The private key, PKCS#8 DER (attributes dropped).
    pub key: Vec<u8>,
    /// The leaf certificate, DER.
    pub leaf: Vec<u8>,
    /// The other certificates, DER, in file order.
    pub cas: Vec<Vec<u8>>,
}

impl Drop for Decoded {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

fn malformed() -> String {
    "the input is not a PKCS#12 file (or it is damaged)".into()
}

fn oid_is(oid: &der::asn1::ObjectIdentifier, dotted: &str) -> bool {
    oid.to_string() == dotted
}

/// The work budget of one file, in key-derivation iterations.
struct Budget(u64);

impl Budget {
    fn spend(&mut self, iterations: i64) -> Result<(), String> {
        let n = u64::try_from(iterations).map_err(|_| malformed())?;
        if n > self.0 {
            return Err(format!(
                "the file asks for more than {MAX_KDF_ITERATIONS} key-derivation iterations in all"
            ));
        }
        self.0 -= n;
        Ok(())
    }
}

/// Reads `data` with `password`, as go-pkcs12's `DecodeChain`. Errors: bounds, a wrong
/// password (`the MAC does not match: wrong password?`), no key or more than one, no leaf.
pub fn decode(data: &[u8], password: &str) -> Result<Decoded, String> {
    if data.len() > MAX_PKCS12_BYTES {
        return Err(format!("the file is over {MAX_PKCS12_BYTES} bytes"));
    }
    let pfx = Pfx::from_der(data).map_err(|_| malformed())?;
    if !oid_is(&pfx.auth_safe.content_type, ID_DATA) {
        return Err(
            "the file's content is not plain data (public-key integrity is not supported)".into(),
        );
    }
    let content = octets(&pfx.auth_safe.content)?;
    let safes: Vec<ContentInfo> = Vec::from_der(&content).map_err(|_| malformed())?;
    // What can be seen without a key is summed first: such a file is refused at no cost.
    Budget(MAX_KDF_ITERATIONS).spend(visible_cost(&pfx, &safes)?)?;
    let mut budget = Budget(MAX_KDF_ITERATIONS);
    // go-pkcs12 tries an empty password also as no password at all.
    let mut password_bytes = bmp(password)?;
    if let Some(mac) = &pfx.mac_data {
        budget.spend(i64::from(mac.iterations))?;
        if !mac_matches(mac, &content, &password_bytes)? {
            if !password.is_empty() {
                return Err("the MAC does not match: wrong password?".into());
            }
            budget.spend(i64::from(mac.iterations))?;
            password_bytes = Vec::new();
            if !mac_matches(mac, &content, &password_bytes)? {
                return Err("the MAC does not match: wrong password?".into());
            }
        }
    }
    let (mut key, mut leaf, mut cas, mut bags) = (None, None, Vec::new(), 0usize);
    for safe in &safes {
        let plain = if oid_is(&safe.content_type, ID_DATA) {
            octets(&safe.content)?
        } else if oid_is(&safe.content_type, ID_ENCRYPTED_DATA) {
            let enc = EncryptedData::from_der(&safe.content.to_der().map_err(|_| malformed())?)
                .map_err(|_| malformed())?;
            let Some(ct) = &enc.enc_content_info.encrypted_content else {
                continue;
            };
            decrypt(
                &enc.enc_content_info.content_enc_alg,
                ct.as_bytes(),
                password,
                &password_bytes,
                &mut budget,
            )?
        } else {
            return Err("the file holds a safe of an unsupported kind".into());
        };
        let contents = SafeContents::from_der(&plain).map_err(|_| malformed())?;
        for bag in contents {
            bags += 1;
            if bags > MAX_BAGS {
                return Err(format!("the file holds more than {MAX_BAGS} bags"));
            }
            let id = bag.bag_id.to_string();
            if id == CERT_BAG {
                let cb = ContextSpecific::<CertBag>::from_der(&bag.bag_value)
                    .map_err(|_| malformed())?;
                if !oid_is(&cb.value.cert_id, X509_CERT) {
                    return Err("the file holds a certificate that is not X.509".into());
                }
                let der = cb.value.cert_value.as_bytes().to_vec();
                if bag.bag_attributes.as_ref().is_some_and(|a| !a.is_empty()) {
                    leaf = Some(der);
                } else {
                    cas.push(der);
                }
            } else if id == KEY_BAG || id == SHROUDED_KEY_BAG {
                if key.is_some() {
                    return Err("the file holds more than one private key".into());
                }
                let pkcs8 = if id == KEY_BAG {
                    let info = ContextSpecific::<pkcs12::safe_bag::PrivateKeyInfo>::from_der(
                        &bag.bag_value,
                    )
                    .map_err(|_| malformed())?;
                    info.value.to_der().map_err(|_| malformed())?
                } else {
                    let info = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                        .map_err(|_| malformed())?;
                    decrypt(
                        &info.value.encryption_algorithm,
                        info.value.encrypted_data.as_bytes(),
                        password,
                        &password_bytes,
                        &mut budget,
                    )?
                };
                key = Some(without_attributes(&pkcs8)?);
            }
        }
    }
    let leaf = leaf.ok_or("the file holds no certificate with attributes (no leaf certificate)")?;
    let key = key.ok_or("the file holds no private key")?;
    Ok(Decoded { key, leaf, cas })
}

/// The key-derivation iterations of the MAC and of every encryption visible without a key
/// (encrypted safes, shrouded keys in plain safes).
fn visible_cost(pfx: &Pfx, safes: &[ContentInfo]) -> Result<i64, String> {
    let mut total = pfx.mac_data.as_ref().map_or(0, |m| i64::from(m.iterations));
    for safe in safes {
        if oid_is(&safe.content_type, ID_ENCRYPTED_DATA) {
            let enc = EncryptedData::from_der(&safe.content.to_der().map_err(|_| malformed())?)
                .map_err(|_| malformed())?;
            total = total.saturating_add(cost(&enc.enc_content_info.content_enc_alg)?);
        } else if oid_is(&safe.content_type, ID_DATA) {
            let contents =
                SafeContents::from_der(&octets(&safe.content)?).map_err(|_| malformed())?;
            for bag in contents.iter().take(MAX_BAGS + 1) {
                if bag.bag_id.to_string() == SHROUDED_KEY_BAG {
                    let info = ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                        .map_err(|_| malformed())?;
                    total = total.saturating_add(cost(&info.value.encryption_algorithm)?);
                }
            }
        }
    }
    Ok(total)
}

/// The key-derivation iterations one encryption asks for (PBES1: key and IV, two runs).
fn cost(alg: &pkcs12::cms::cert::x509::spki::AlgorithmIdentifierOwned) -> Result<i64, String> {
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(malformed)?
        .to_der()
        .map_err(|_| malformed())?;
    if alg.oid.to_string() == PBES2 {
        let p = pkcs5::pbes2::Parameters::from_der(&params).map_err(|_| malformed())?;
        return match &p.kdf {
            pkcs5::pbes2::Kdf::Pbkdf2(k) => Ok(i64::from(k.iteration_count)),
            _ => Err("scrypt-protected files are not supported".into()),
        };
    }
    let p = Pkcs12PbeParams::from_der(&params).map_err(|_| malformed())?;
    Ok(i64::from(p.iterations).saturating_mul(2))
}

fn octets(any: &der::Any) -> Result<Vec<u8>, String> {
    let der = any.to_der().map_err(|_| malformed())?;
    OctetString::from_der(&der)
        .map(|o| o.as_bytes().to_vec())
        .map_err(|_| malformed())
}

/// The password as PKCS#12's KDF takes it: BMPString, NUL-terminated.
fn bmp(password: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(password.len() * 2 + 2);
    for unit in password.encode_utf16() {
        out.extend(unit.to_be_bytes());
    }
    out.extend([0, 0]);
    Ok(out)
}

fn mac_matches(mac: &pkcs12::MacData, content: &[u8], password: &[u8]) -> Result<bool, String> {
    let salt = mac.mac_salt.as_bytes();
    let want = mac.mac.digest.as_bytes();
    macro_rules! check {
        ($d:ty) => {{
            let key = kdf::derive_key::<$d>(
                password,
                salt,
                kdf::Pkcs12KeyType::Mac,
                mac.iterations,
                <$d as sha2::digest::OutputSizeUser>::output_size(),
            );
            let mut m =
                <hmac::Hmac<$d> as KeyInit>::new_from_slice(&key).map_err(|_| malformed())?;
            m.update(content);
            Ok(m.verify_slice(want).is_ok())
        }};
    }
    match mac.mac.algorithm.oid.to_string().as_str() {
        "1.3.14.3.2.26" => check!(sha1_pkcs12::Sha1),
        "2.16.840.1.101.3.4.2.1" => check!(sha2::Sha256),
        "2.16.840.1.101.3.4.2.2" => check!(sha2::Sha384),
        "2.16.840.1.101.3.4.2.3" => check!(sha2::Sha512),
        _ => Err("the file's MAC algorithm is not supported".into()),
    }
}

/// Decrypts one encrypted safe or key, charging its iterations to `budget`.
fn decrypt(
    alg: &pkcs12::cms::cert::x509::spki::AlgorithmIdentifierOwned,
    data: &[u8],
    password: &str,
    password_bmp: &[u8],
    budget: &mut Budget,
) -> Result<Vec<u8>, String> {
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(malformed)?
        .to_der()
        .map_err(|_| malformed())?;
    let oid = alg.oid.to_string();
    if oid == PBES2 {
        let p = pkcs5::pbes2::Parameters::from_der(&params).map_err(|_| malformed())?;
        match &p.kdf {
            pkcs5::pbes2::Kdf::Pbkdf2(k) => budget.spend(i64::from(k.iteration_count))?,
            _ => return Err("scrypt-protected files are not supported".into()),
        }
        return p
            .decrypt(password.as_bytes(), data)
            .map_err(|_| "cannot decrypt: wrong password?".into());
    }
    let key_len = match oid.as_str() {
        PBE_SHA_3DES => 24,
        PBE_SHA_RC2_128 => 16,
        PBE_SHA_RC2_40 => 5,
        _ => return Err("the file uses an encryption that is not supported".into()),
    };
    let p = Pkcs12PbeParams::from_der(&params).map_err(|_| malformed())?;
    // Key and IV: two derivations.
    budget.spend(i64::from(p.iterations).saturating_mul(2))?;
    let salt = p.salt.as_bytes();
    let key = kdf::derive_key::<sha1_pkcs12::Sha1>(
        password_bmp,
        salt,
        kdf::Pkcs12KeyType::EncryptionKey,
        p.iterations,
        key_len,
    );
    let iv = kdf::derive_key::<sha1_pkcs12::Sha1>(
        password_bmp,
        salt,
        kdf::Pkcs12KeyType::Iv,
        p.iterations,
        8,
    );
    use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
    let fail = || "cannot decrypt: wrong password?".to_string();
    if key_len == 24 {
        cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| fail())?
            .decrypt_padded_vec::<Pkcs7>(data)
            .map_err(|_| fail())
    } else {
        cbc::Decryptor::<rc2::Rc2>::new_from_slices(&key, &iv)
            .map_err(|_| fail())?
            .decrypt_padded_vec::<Pkcs7>(data)
            .map_err(|_| fail())
    }
}

/// A PKCS#8 key without its attributes (Go's `MarshalPKCS8PrivateKey`, which ESO applies to
/// the key it read, writes none).
fn without_attributes(pkcs8: &[u8]) -> Result<Vec<u8>, String> {
    let mut info = pkcs12::safe_bag::PrivateKeyInfo::from_der(pkcs8)
        .map_err(|_| "the file's private key is not PKCS#8".to_string())?;
    info.attributes = None;
    info.to_der().map_err(|_| malformed())
}

/// `{{ pkcs12key }}`: the private key as a PEM `PRIVATE KEY` (PKCS#8).
pub fn key_pem(data: &[u8], password: &str) -> Result<String, String> {
    let d = decode(data, password)?;
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", d.key.clone())).replace("\r\n", "\n"))
}

/// `{{ pkcs12cert }}`: the leaf and CA certificates as PEM, ordered leaf first up to the
/// root when they form one chain (ESO's `fetchCertChains`), else in file order.
pub fn cert_pem(data: &[u8], password: &str) -> Result<String, String> {
    let d = decode(data, password)?;
    let mut certs = vec![d.leaf.clone()];
    certs.extend(d.cas.iter().cloned());
    let ordered = super::pem_chain::order(&certs).unwrap_or(certs);
    Ok(ordered
        .into_iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c)).replace("\r\n", "\n"))
        .collect())
}

/// `{{ pemToPkcs12 cert key }}` and kin: the first certificate of `cert` (and with `chain`,
/// the others as CA certificates) with the key of `key` (PKCS#1, SEC1 or PKCS#8 PEM), as a
/// base64 PKCS#12 file protected by `password`.
pub fn from_pem(cert: &str, key: &str, chain: bool, password: &str) -> Result<String, String> {
    let certs = pem::parse_many(cert).map_err(|_| "the certificate is not PEM".to_string())?;
    let certs: Vec<Vec<u8>> = certs
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    let leaf = certs.first().ok_or("the certificate is not PEM")?.clone();
    let mut chain_certs = vec![
        p12_keystore::Certificate::from_der(&leaf)
            .map_err(|_| "the certificate is not X.509".to_string())?,
    ];
    if chain {
        for c in &certs[1..] {
            chain_certs.push(
                p12_keystore::Certificate::from_der(c)
                    .map_err(|_| "a CA certificate is not X.509".to_string())?,
            );
        }
    }
    let key = super::pem_chain::private_key_pkcs8(key)?;
    let key = p12_keystore::PrivateKey::from_der(&key)
        .map_err(|_| "the private key is not valid".to_string())?;
    use sha1_pkcs12::Digest as _;
    let local_id = sha1_pkcs12::Sha1::digest(&leaf).to_vec();
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            local_id,
            key,
            chain_certs,
        )),
    );
    let pfx = store
        .writer(password)
        .encryption_iterations(2048)
        .mac_iterations(2048)
        .write()
        .map_err(|_| "cannot write the PKCS#12 file".to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(pfx))
}

/// `{{ pemTruststoreToPKCS12 certs }}` and `...Pass certs password`: every certificate of the
/// PEM text as a trusted entry of a key-less PKCS#12 truststore (Java's trusted-certificate
/// attribute, as go-pkcs12's `EncodeTrustStore`), base64-encoded, written as [`from_pem`]
/// writes.
pub fn truststore_from_pem(certs: &str, password: &str) -> Result<String, String> {
    let blocks = pem::parse_many(certs).map_err(|_| "the certificates are not PEM".to_string())?;
    let mut store = p12_keystore::KeyStore::new();
    let mut n = 0;
    for block in blocks.iter().filter(|p| p.tag() == "CERTIFICATE") {
        let cert = p12_keystore::Certificate::from_der(block.contents())
            .map_err(|_| "a certificate is not X.509".to_string())?;
        n += 1;
        store.add_entry(
            &n.to_string(),
            p12_keystore::KeyStoreEntry::Certificate(cert),
        );
    }
    if n == 0 {
        return Err("the certificates are not PEM".into());
    }
    let pfx = store
        .writer(password)
        .encryption_iterations(2048)
        .mac_iterations(2048)
        .write()
        .map_err(|_| "cannot write the PKCS#12 file".to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(pfx))
}

#[cfg(test)]
#[path = "pkcs12_tests.rs"]
mod tests;
