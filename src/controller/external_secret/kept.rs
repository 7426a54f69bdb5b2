//! What is kept with the managed Secret for one generator entry (its annotation's JSON: the
//! generator, a fingerprint, the keys, the Vault lease or a certificate's validity, replaced
//! leases waiting for revocation; never a value) and the pure decisions on it: keep, renew or
//! issue ([`decide`]), whether a renewal serves, the lease of newly issued values. The calls
//! themselves are made by `generate`.

use serde::{Deserialize, Serialize};

use crate::providers::{SecretMap, vault::LeaseInfo};

/// The persisted state of one generator entry (the annotation's JSON).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EntryState {
    /// The generator's kind.
    pub kind: String,
    /// The generator's name.
    pub name: String,
    /// Hex SHA-256 (16 characters) of what the values depend on: see [`fingerprint`].
    pub fingerprint: String,
    /// The Secret keys the values went to (after rewrites).
    #[serde(default)]
    pub keys: Vec<String>,
    /// The lease (or validity) of the values, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseState>,
    /// Replaced leases waiting for their revocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoke: Vec<PendingRevocation>,
    /// The `notAfter` (Unix seconds) of the X.509 certificate among the values (a PKI
    /// response's `certificate`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
}

/// A lease as kept in the annotation; times are Unix seconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseState {
    /// Vault's lease id; empty for a validity without lease (a PKI certificate's
    /// `expiration`).
    pub id: String,
    /// The TTL the lease was issued with, seconds.
    pub ttl: u64,
    /// The duration from `since`, seconds (the last renewal's).
    pub duration: u64,
    /// When the lease was issued or last renewed.
    pub since: i64,
    /// Whether Vault said it may be renewed.
    pub renewable: bool,
    /// The generator's `renewBeforePercentage` when the lease was issued: renew once this
    /// percentage of `duration` is left; absent for the default (two thirds elapsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before_percentage: Option<u8>,
}

impl LeaseState {
    /// When the lease ends unless renewed.
    pub fn expiry(&self) -> i64 {
        self.since + self.duration as i64
    }

    /// When it is renewed or replaced: two thirds of its duration after `since` (as Vault
    /// Agent and our own token renewal do), or once `renew_before_percentage` of it is left.
    pub fn due(&self) -> i64 {
        let duration = self.duration as i64;
        match self.renew_before_percentage {
            Some(left @ 1..=99) => self.since + duration * (100 - i64::from(left)) / 100,
            _ => self.since + (duration * 2) / 3,
        }
    }
}

/// A lease to revoke at `at` (Unix seconds).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingRevocation {
    /// The lease id.
    pub id: String,
    /// When.
    pub at: i64,
}

/// What to do with a VaultDynamicSecret entry now.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The kept values are good: nothing to call.
    Keep,
    /// Renew this lease (`sys/leases/renew`) for its TTL.
    Renew,
    /// Issue new values (none kept, a spec changed, the lease ended or cannot be renewed).
    Issue,
}

/// The decision for an entry whose kept state is `prior` (`None`: no state, or its
/// fingerprint or keys do not match the Secret) at `now` (Unix seconds). Pure.
pub fn decide(prior: Option<&EntryState>, now: i64) -> Decision {
    let Some(state) = prior else {
        return Decision::Issue;
    };
    let Some(lease) = &state.lease else {
        return Decision::Keep;
    };
    if now >= lease.expiry() {
        return Decision::Issue;
    }
    if now < lease.due() {
        return Decision::Keep;
    }
    if lease.renewable && !lease.id.is_empty() {
        Decision::Renew
    } else {
        Decision::Issue
    }
}

/// Whether a renewal that came back as `renewed` still serves: a duration shorter than the
/// lease's TTL means the max TTL is near, and new values are due before it (the Secret must
/// never hold credentials that Vault is about to revoke).
pub fn renewal_serves(lease: &LeaseState, renewed: &LeaseInfo) -> bool {
    renewed.duration_secs >= lease.ttl && renewed.duration_secs > 0
}

/// The lease of issued values: Vault's lease; else, for a PKI certificate (whose lease is
/// optional: the role's `generate_lease`), its validity up to the `expiration` field (Unix
/// seconds); else none (the values are kept until a spec changes).
pub(super) fn lease_of(lease: &LeaseInfo, values: &SecretMap, now: i64) -> Option<LeaseState> {
    if !lease.id.is_empty() && lease.duration_secs > 0 {
        return Some(LeaseState {
            id: lease.id.clone(),
            ttl: lease.duration_secs,
            duration: lease.duration_secs,
            since: now,
            renewable: lease.renewable,
            renew_before_percentage: None,
        });
    }
    let expiration: i64 = values.get("expiration")?.as_str()?.trim().parse().ok()?;
    let left = u64::try_from(expiration - now).ok().filter(|l| *l > 0)?;
    Some(LeaseState {
        id: String::new(),
        ttl: left,
        duration: left,
        since: now,
        renewable: false,
        renew_before_percentage: None,
    })
}

/// The `notAfter` (Unix seconds) of the first PEM certificate of the `certificate` value (a
/// Vault PKI `issue`/`sign` response: the leaf), if it holds one.
pub(super) fn certificate_not_after(values: &SecretMap) -> Option<i64> {
    let pem = values.get("certificate")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::providers::SecretValue;

    pub(in crate::controller::external_secret) fn state(lease: Option<LeaseState>) -> EntryState {
        EntryState {
            kind: "VaultDynamicSecret".into(),
            name: "db".into(),
            fingerprint: "f".into(),
            keys: vec!["access_key".into()],
            lease,
            revoke: vec![],
            not_after: None,
        }
    }

    pub(in crate::controller::external_secret) fn lease(renewable: bool) -> LeaseState {
        LeaseState {
            id: "aws/creds/app/abc".into(),
            ttl: 30,
            duration: 30,
            since: 1000,
            renewable,
            renew_before_percentage: None,
        }
    }

    #[test]
    fn nothing_kept_is_issued_and_values_without_lease_are_kept() {
        assert_eq!(decide(None, 0), Decision::Issue);
        assert_eq!(decide(Some(&state(None)), i64::MAX), Decision::Keep);
    }

    #[test]
    fn a_lease_is_kept_until_two_thirds_then_renewed_or_replaced() {
        let renewable = state(Some(lease(true)));
        assert_eq!(decide(Some(&renewable), 1000), Decision::Keep);
        assert_eq!(decide(Some(&renewable), 1019), Decision::Keep);
        assert_eq!(decide(Some(&renewable), 1020), Decision::Renew);
        assert_eq!(decide(Some(&renewable), 1029), Decision::Renew);
        // Expired: a renewal cannot help.
        assert_eq!(decide(Some(&renewable), 1030), Decision::Issue);
        let fixed = state(Some(lease(false)));
        assert_eq!(decide(Some(&fixed), 1019), Decision::Keep);
        assert_eq!(decide(Some(&fixed), 1020), Decision::Issue);
    }

    #[test]
    fn renew_before_percentage_moves_the_renewal() {
        let mut l = lease(true);
        l.renew_before_percentage = Some(10);
        assert_eq!(l.due(), 1027);
        l.renew_before_percentage = Some(90);
        assert_eq!(l.due(), 1003);
        // The default: two thirds elapsed.
        l.renew_before_percentage = None;
        assert_eq!(l.due(), 1020);
        let fixed = state(Some(LeaseState {
            renew_before_percentage: Some(50),
            ..lease(false)
        }));
        assert_eq!(decide(Some(&fixed), 1014), Decision::Keep);
        assert_eq!(decide(Some(&fixed), 1015), Decision::Issue);
    }

    /// `openssl req -x509 -newkey ec ... -days 30`: notAfter Jan 6 03:49:44 2027 GMT.
    const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nMIIBiTCCAS+gAwIBAgIUf5RZ3z4gp4WG0fYuH9fx8A8Psl0wCgYIKoZIzj0EAwIw\nGjEYMBYGA1UEAwwPYXBwLmV4YW1wbGUuY29tMB4XDTI2MTIwNzAzNDk0NFoXDTI3\nMDEwNjAzNDk0NFowGjEYMBYGA1UEAwwPYXBwLmV4YW1wbGUuY29tMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAE3smOOPj2xhidldcHNAfoBtgil88m2buIgDVHQJvH\ndf2cqeWtRTtdwarRuSMPTuHbOC1HDs/hac05APxSYHPJj6NTMFEwHQYDVR0OBBYE\nFEg6AvkMQg5+mdH4Sc/LsIHy3V9qMB8GA1UdIwQYMBaAFEg6AvkMQg5+mdH4Sc/L\nsIHy3V9qMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgYSPs3Q6S\ni1BIg5vELZ4yVusVXUihzzfOXgbuKLQezZ8CIQDiyFxakHhkT0uEomdROjais0y4\n/B0F9m/RQDoz807z0g==\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_certificate_not_after_is_read_from_the_leaf() {
        let values = |pem: &str| {
            SecretMap::from([(
                "certificate".into(),
                SecretValue::new(pem.as_bytes().to_vec()),
            )])
        };
        assert_eq!(
            certificate_not_after(&values(CERTIFICATE)),
            Some(1_799_207_384)
        );
        assert_eq!(certificate_not_after(&values("not a certificate")), None);
        assert_eq!(certificate_not_after(&SecretMap::new()), None);
    }

    #[test]
    fn a_renewal_capped_by_the_max_ttl_does_not_serve() {
        let l = lease(true);
        let renewed = |d| LeaseInfo {
            id: l.id.clone(),
            duration_secs: d,
            renewable: true,
        };
        assert!(renewal_serves(&l, &renewed(30)));
        assert!(!renewal_serves(&l, &renewed(29)));
        assert!(!renewal_serves(&l, &renewed(0)));
    }

    #[test]
    fn a_pki_certificate_without_lease_lives_until_its_expiration() {
        let none = LeaseInfo {
            id: String::new(),
            duration_secs: 0,
            renewable: false,
        };
        let values = SecretMap::from([("expiration".into(), SecretValue::new(b"1090".to_vec()))]);
        let l = lease_of(&none, &values, 1000).unwrap();
        assert_eq!((l.expiry(), l.due(), l.renewable), (1090, 1060, false));
        assert_eq!(lease_of(&none, &SecretMap::new(), 1000), None);
    }
}
