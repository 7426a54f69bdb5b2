//! Decrypts the `age` entries of a document with X25519 identities (`age/keysource.go`: the
//! entry's `enc` is an armored age file whose plaintext is the data key, or a Shamir share).

use std::io::Read;
use std::str::FromStr;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{KeyService, MasterKey, SopsError};
use crate::providers::{ErrorKind, ProviderError};

/// A [`KeyService`] holding age X25519 identities (the contents of an age key file, e.g. the
/// store's `age.secretRef`). It handles [`MasterKey::Age`] entries only; other entries get
/// `Ok(None)`.
pub struct AgeKeyService {
    identities: Vec<age::x25519::Identity>,
}

impl AgeKeyService {
    /// Reads identities, one `AGE-SECRET-KEY-1...` per line; blank lines and lines starting
    /// with `#` (as `age-keygen` writes) are skipped; surrounding whitespace is ignored.
    ///
    /// Errors (`InvalidConfig`): a line that is not an X25519 identity (the message gives its
    /// line number, never its text), or no identity at all.
    pub fn new(identities: &str) -> Result<Self, SopsError> {
        let mut parsed = Vec::new();
        for (i, line) in identities.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                SopsError::InvalidIdentity(format!(
                    "age identities: line {} is not an X25519 identity (AGE-SECRET-KEY-1...)",
                    i + 1
                ))
            })?;
            parsed.push(id);
        }
        if parsed.is_empty() {
            return Err(SopsError::InvalidIdentity(
                "age identities: no AGE-SECRET-KEY-1... line found".into(),
            ));
        }
        Ok(AgeKeyService { identities: parsed })
    }

    /// The recipients (public keys) of the identities, for messages and logs.
    pub fn recipients(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect()
    }

    /// Decrypts an armored (or binary) age file. `Ok(None)`: none of the identities is a
    /// recipient of the file.
    fn decrypt_file(&self, enc: &str) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError> {
        let invalid = |what: &str| {
            ProviderError::new(
                ErrorKind::InvalidData,
                format!("age: the document's encrypted data key is invalid ({what})"),
            )
        };
        let reader = age::armor::ArmoredReader::new(enc.as_bytes());
        let decryptor = age::Decryptor::new(reader).map_err(|_| invalid("bad header"))?;
        if decryptor.is_scrypt() {
            return Err(invalid("passphrase-encrypted"));
        }
        let ids = self.identities.iter().map(|i| i as &dyn age::Identity);
        let mut stream = match decryptor.decrypt(ids) {
            Ok(s) => s,
            Err(age::DecryptError::NoMatchingKeys) => return Ok(None),
            Err(_) => return Err(invalid("cannot decrypt")),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        // A data key is 32 bytes, a Shamir share 33: refuse anything large before reading it.
        let mut limited = (&mut stream).take(1024);
        limited
            .read_to_end(&mut out)
            .map_err(|_| invalid("corrupt payload"))?;
        Ok(Some(out))
    }
}

#[async_trait]
impl KeyService for AgeKeyService {
    /// `Ok(None)` for non-age entries. For an age entry that none of the identities can open:
    /// `InvalidConfig` naming the entry's recipient and the store's recipients (public keys
    /// only). A corrupt `enc`: `InvalidData`.
    async fn decrypt(&self, key: &MasterKey) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError> {
        let MasterKey::Age { recipient, enc } = key else {
            return Ok(None);
        };
        match self.decrypt_file(enc)? {
            Some(plain) => Ok(Some(plain)),
            None => Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "age: no identity of this store matches the document's recipient {recipient} (store recipients: {})",
                    self.recipients().join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_with_comments() {
        let id = age::x25519::Identity::generate();
        let text = format!(
            "# created: today\n# public key: {}\n\n  {}  \n",
            id.to_public(),
            age::secrecy::ExposeSecret::expose_secret(&id.to_string())
        );
        let svc = AgeKeyService::new(&text).unwrap();
        assert_eq!(svc.recipients(), vec![id.to_public().to_string()]);
        assert!(AgeKeyService::new("# nothing\n").is_err());
        let err = AgeKeyService::new("AGE-SECRET-KEY-1BOGUS\n").err().unwrap();
        assert!(!err.to_string().contains("BOGUS"));
    }

    #[tokio::test]
    async fn decrypts_armored_file_and_refuses_other_recipients() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let data_key = [9u8; 32];
        let enc = age::encrypt_and_armor(&id.to_public(), &data_key).unwrap();
        let key = MasterKey::Age {
            recipient: id.to_public().to_string(),
            enc,
        };
        let svc =
            AgeKeyService::new(age::secrecy::ExposeSecret::expose_secret(&id.to_string())).unwrap();
        let got = svc.decrypt(&key).await.unwrap().unwrap();
        assert_eq!(got.as_slice(), &data_key);

        let wrong = AgeKeyService::new(age::secrecy::ExposeSecret::expose_secret(
            &other.to_string(),
        ))
        .unwrap();
        let err = wrong.decrypt(&key).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidConfig);

        let gcp = MasterKey::GcpKms {
            resource_id: "r".into(),
            enc: "e".into(),
        };
        assert!(svc.decrypt(&gcp).await.unwrap().is_none());
        let corrupt = MasterKey::Age {
            recipient: "r".into(),
            enc: "-----BEGIN AGE ENCRYPTED FILE-----\nAAAA\n-----END AGE ENCRYPTED FILE-----\n"
                .into(),
        };
        assert_eq!(
            svc.decrypt(&corrupt).await.unwrap_err().kind,
            ErrorKind::InvalidData
        );
    }
}
