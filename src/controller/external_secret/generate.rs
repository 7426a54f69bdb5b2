//! Step 3a: the values of the `dataFrom[].sourceRef.generatorRef` entries, made before the
//! fetch (which rewrites and checks their keys like any other entry's).
//!
//! Generated values are *kept*: each entry's state is an annotation of the managed Secret
//! (`secret-relay.dev/generator.<index>`, JSON: the generator, a fingerprint of the specs the
//! values came from, the Secret keys they went to and, for a Vault lease, its id, TTL, expiry
//! and renewable flag; never a value). While the fingerprint holds and those keys are in the
//! Secret, the values are read back from it instead of being made again, so a refresh, a
//! force-sync, an operator restart or a leader change changes nothing.
//!
//! ESO regenerates at every refresh (its generators run on each `refreshInterval`, which is
//! why its docs pair them with `refreshPolicy: CreatedOnce`); we do not: the fingerprint holds
//! the ExternalSecret's `metadata.generation` and the generator's uid and generation, so new
//! values come with a spec change of either, never with a timer (see
//! `docs/vault-dynamic-secrets.md`).
//!
//! A `VaultDynamicSecret`'s values follow their lease ([`decide`], pure): renewed once two
//! thirds of the TTL have passed; new values issued when renewal is refused, when the lease
//! is not renewable (or a PKI certificate without lease, by its `expiration`) at two thirds,
//! or when a renewal comes back shorter than the TTL (the max TTL is near); a replaced lease
//! is revoked `revokeGracePeriod` later, the pending revocation being part of the annotation,
//! so it survives restarts.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};

use super::super::{Context, Error, build::BuildError};
pub use super::kept::EntryState;
use super::kept::{Decision, LeaseState, PendingRevocation, decide, renewal_serves};
use super::kept::{certificate_not_after, lease_of};
use crate::{
    api::{
        ANNOTATION_GENERATOR_PREFIX, ExternalSecret,
        external_secret::{GeneratorRef, GeneratorStatus, TemplateMergePolicy},
        generators::{GeneratorKind, Password, VaultDynamicSecret, VaultDynamicSecretSpec},
    },
    providers::{
        AuthContext, ErrorKind, ProviderError, SecretMap, SecretValue, password,
        vault::VaultDynamicClient,
    },
};

/// Delay before a failed revocation is tried again, seconds.
const REVOKE_RETRY_SECS: i64 = 30;

/// Default `revokeGracePeriod`, seconds.
pub const DEFAULT_REVOKE_GRACE_SECS: i64 = 60;

/// One generator entry's values for the fetch.
pub(super) struct GeneratedEntry {
    /// The values: fresh ones under the generator's keys, or kept ones under the Secret keys.
    values: Option<SecretMap>,
    /// Kept values already carry their final Secret keys: no rewrite.
    kept: bool,
    state: EntryState,
}

/// The generator entries of one ExternalSecret, by `dataFrom` index.
#[derive(Default)]
pub(super) struct Generated {
    entries: BTreeMap<usize, GeneratedEntry>,
}

impl Generated {
    /// The values of entry `index` (once), and whether they are kept ones (already under
    /// their Secret keys). Errors (`InvalidSpec`) when nothing was generated for it (the
    /// plugin's offline `render`).
    pub(super) fn take(&mut self, index: usize) -> Result<(SecretMap, bool), Error> {
        let entry = self.entries.get_mut(&index).ok_or_else(|| {
            Error::InvalidSpec(BuildError(format!(
                "dataFrom[{index}]: generators run only in the operator"
            )))
        })?;
        Ok((entry.values.take().unwrap_or_default(), entry.kept))
    }

    /// Records the Secret keys entry `index` produced.
    pub(super) fn set_keys(&mut self, index: usize, keys: Vec<String>) {
        if let Some(e) = self.entries.get_mut(&index) {
            e.state.keys = keys;
        }
    }

    /// The annotations that carry the entries' states.
    pub(super) fn annotations(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .map(|(i, e)| {
                (
                    format!("{ANNOTATION_GENERATOR_PREFIX}{i}"),
                    serde_json::to_string(&e.state).expect("the state serializes"),
                )
            })
            .collect()
    }

    /// Whether `es` has no generator entry.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The fetched `values` under the keys the generator entries produced (a later entry or
    /// `data[]` may have overridden one; it then holds the override): what the Secret must
    /// hold for the values to be kept.
    pub(super) fn written(&self, values: &SecretMap) -> SecretMap {
        self.entries
            .values()
            .flat_map(|e| &e.state.keys)
            .filter_map(|k| Some((k.clone(), values.get(k)?.clone())))
            .collect()
    }

    /// `status.generators`: the entries with a lease or a pending revocation.
    pub(super) fn status(&self) -> Vec<GeneratorStatus> {
        let time = |s: i64| Timestamp::from_second(s).ok().map(Time);
        self.entries
            .iter()
            .filter(|(_, e)| e.state.lease.is_some() || !e.state.revoke.is_empty())
            .map(|(i, e)| GeneratorStatus {
                index: *i as u32,
                kind: e.state.kind.clone(),
                name: e.state.name.clone(),
                lease_expiry: e.state.lease.as_ref().and_then(|l| time(l.expiry())),
                next_renewal: e.state.lease.as_ref().and_then(|l| time(l.due())),
                next_revocation: e.state.revoke.iter().map(|r| r.at).min().and_then(time),
                not_after: e.state.not_after.and_then(time),
            })
            .collect()
    }
}

/// When the generators of `status` need the next sync (a renewal, a re-issue or a
/// revocation), Unix ms.
pub(super) fn due_ms(status: &[GeneratorStatus]) -> Option<i64> {
    status
        .iter()
        .flat_map(|g| [&g.next_renewal, &g.next_revocation])
        .flatten()
        .map(|t| t.0.as_millisecond())
        .min()
}

/// What the values of a generator entry depend on: the ExternalSecret's generation, the
/// entry's index and reference, and the generator object's uid and generation.
fn fingerprint(
    es: &ExternalSecret,
    index: usize,
    r: &GeneratorRef,
    meta: &kube::core::ObjectMeta,
) -> String {
    let mut h = Sha256::new();
    for part in [
        es.metadata.generation.unwrap_or_default().to_string(),
        index.to_string(),
        r.api_version.clone().unwrap_or_default(),
        r.kind.clone(),
        r.name.clone(),
        meta.uid.clone().unwrap_or_default(),
        meta.generation.unwrap_or_default().to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..16].to_string()
}

fn not_found(kind: &str, ns: &str, name: &str) -> Error {
    Error::Provider(ProviderError::new(
        ErrorKind::NotFound,
        format!("generator {kind} {ns}/{name} not found"),
    ))
}

/// Makes (or keeps) the values of every `generatorRef` entry of `es`, whose managed Secret is
/// `target` (read once, when there is such an entry), at `now`. Generators are read in `es`'s
/// namespace. Errors: `InvalidSpec` for a kind we do not implement or a template that would
/// keep the generated keys out of the Secret; `Provider` (`NotFound`) for a missing
/// generator; a VaultDynamicSecret's login, issue or renewal failure (`vault: permission
/// denied on <path>`), the Secret then being left as it is.
pub(super) async fn generate(
    es: &ExternalSecret,
    ctx: &Context,
    secrets: &Api<Secret>,
    target: &str,
    now: Timestamp,
) -> Result<Generated, Error> {
    let refs: Vec<(usize, &GeneratorRef)> = es
        .spec
        .data_from
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((i, d.source_ref.as_ref()?.generator_ref.as_ref()?)))
        .collect();
    let mut generated = Generated::default();
    if refs.is_empty() {
        return Ok(generated);
    }
    if let Some(t) = &es.spec.target.template
        && t.merge_policy == TemplateMergePolicy::Replace
        && (!t.data.is_empty() || !t.template_from.is_empty())
    {
        return Err(Error::InvalidSpec(BuildError(
            "generated values are kept in the Secret under their own keys: with generatorRef, target.template needs mergePolicy: Merge".into(),
        )));
    }
    let ns = es.namespace().unwrap_or_default();
    let existing = secrets.get_opt(target).await.map_err(Error::Kube)?;
    let now_s = now.as_second();
    for (index, r) in refs {
        let kind = GeneratorKind::of(r.api_version.as_deref(), &r.kind).ok_or_else(|| {
            Error::InvalidSpec(BuildError(format!(
                "dataFrom[{index}].sourceRef.generatorRef: {}/{} is not a generator secret-relay implements (Password or VaultDynamicSecret of {})",
                r.api_version.as_deref().unwrap_or(crate::api::generators::GENERATORS_API_VERSION),
                r.kind,
                crate::api::generators::GENERATORS_API_VERSION
            )))
        })?;
        let prior = existing
            .as_ref()
            .and_then(|s| {
                s.annotations()
                    .get(&format!("{ANNOTATION_GENERATOR_PREFIX}{index}"))
            })
            .and_then(|a| serde_json::from_str::<EntryState>(a).ok());
        let entry = match kind {
            GeneratorKind::Password => {
                let api: Api<Password> = Api::namespaced(ctx.client.clone(), &ns);
                let g = api
                    .get_opt(&r.name)
                    .await
                    .map_err(Error::Kube)?
                    .ok_or_else(|| not_found("Password", &ns, &r.name))?;
                let fp = fingerprint(es, index, r, &g.metadata);
                match kept(prior.as_ref(), &fp, existing.as_ref()) {
                    Some((values, state)) => GeneratedEntry {
                        values: Some(values),
                        kept: true,
                        state,
                    },
                    None => {
                        let value = password::generate(&g.spec).map_err(|e| {
                            Error::InvalidSpec(BuildError(format!("Password {ns}/{}: {e}", r.name)))
                        })?;
                        let values = SecretMap::from([(
                            "password".into(),
                            SecretValue::new(value.as_bytes().to_vec()),
                        )]);
                        GeneratedEntry {
                            values: Some(values),
                            kept: false,
                            state: EntryState {
                                kind: "Password".into(),
                                name: r.name.clone(),
                                fingerprint: fp,
                                ..Default::default()
                            },
                        }
                    }
                }
            }
            GeneratorKind::VaultDynamicSecret => {
                let api: Api<VaultDynamicSecret> = Api::namespaced(ctx.client.clone(), &ns);
                let g = api
                    .get_opt(&r.name)
                    .await
                    .map_err(Error::Kube)?
                    .ok_or_else(|| not_found("VaultDynamicSecret", &ns, &r.name))?;
                let fp = fingerprint(es, index, r, &g.metadata);
                dynamic(
                    ctx,
                    &ns,
                    &r.name,
                    &g.spec,
                    &fp,
                    prior,
                    existing.as_ref(),
                    now_s,
                )
                .await?
            }
        };
        generated.entries.insert(index, entry);
    }
    Ok(generated)
}

/// The kept values of an entry: its state when the fingerprint matches and every key it
/// recorded is in `secret`, with those keys' values.
fn kept(
    prior: Option<&EntryState>,
    fp: &str,
    secret: Option<&Secret>,
) -> Option<(SecretMap, EntryState)> {
    let state = prior.filter(|s| s.fingerprint == fp && !s.keys.is_empty())?;
    let data = secret?.data.as_ref()?;
    let values = state
        .keys
        .iter()
        .map(|k| Some((k.clone(), SecretValue::new(data.get(k)?.0.clone()))))
        .collect::<Option<SecretMap>>()?;
    Some((values, state.clone()))
}

/// A VaultDynamicSecret entry: keep, renew or issue per [`decide`], and revoke the replaced
/// leases that are due. The client logs in only when a call is needed.
#[allow(clippy::too_many_arguments)]
async fn dynamic(
    ctx: &Context,
    ns: &str,
    name: &str,
    spec: &VaultDynamicSecretSpec,
    fp: &str,
    prior: Option<EntryState>,
    existing: Option<&Secret>,
    now: i64,
) -> Result<GeneratedEntry, Error> {
    let grace = match &spec.revoke_grace_period {
        Some(d) => super::plan::parse_refresh_interval(d).map_err(|_| {
            Error::InvalidSpec(BuildError(format!(
                "VaultDynamicSecret {ns}/{name}: revokeGracePeriod {d:?} is not a duration"
            )))
        })? as i64,
        None => DEFAULT_REVOKE_GRACE_SECS,
    };
    if let Some(p) = spec
        .renew_before_percentage
        .filter(|p| !(1..=99).contains(p))
    {
        return Err(Error::InvalidSpec(BuildError(format!(
            "VaultDynamicSecret {ns}/{name}: renewBeforePercentage {p} is not between 1 and 99"
        ))));
    }
    let kept = kept(prior.as_ref(), fp, existing);
    // Revocations still pending from earlier states carry over whatever happens now.
    let mut revoke = prior.as_ref().map(|p| p.revoke.clone()).unwrap_or_default();
    let decision = decide(kept.as_ref().map(|(_, s)| s), now);
    let due_revocations = revoke.iter().any(|r| r.at <= now);
    if decision == Decision::Keep && !due_revocations {
        let (values, state) = kept.expect("Keep comes from a kept state");
        return Ok(GeneratedEntry {
            values: Some(values),
            kept: true,
            state,
        });
    }
    let auth = AuthContext::new(ctx.client.clone(), ns, false);
    let client = VaultDynamicClient::connect(&spec.provider, &auth)
        .await
        .map_err(|e| {
            Error::Provider(ProviderError::new(
                e.kind,
                format!("VaultDynamicSecret {ns}/{name}: {e}"),
            ))
        })?;
    let mut entry = match (decision, kept) {
        (Decision::Keep, Some((values, state))) => GeneratedEntry {
            values: Some(values),
            kept: true,
            state,
        },
        (Decision::Renew, Some((values, mut state))) => {
            let lease = state.lease.clone().expect("Renew comes from a lease");
            match client.renew(&lease.id, lease.ttl).await {
                Ok(renewed) if renewal_serves(&lease, &renewed) => {
                    tracing::debug!(
                        generator = name,
                        ttl_seconds = renewed.duration_secs,
                        "vault: lease renewed"
                    );
                    state.lease = Some(LeaseState {
                        duration: renewed.duration_secs,
                        since: now,
                        renewable: renewed.renewable,
                        ..lease
                    });
                    GeneratedEntry {
                        values: Some(values),
                        kept: true,
                        state,
                    }
                }
                // Near its max TTL, or the renewal refused: new values.
                Ok(_)
                | Err(ProviderError {
                    kind: ErrorKind::InvalidData,
                    ..
                }) => {
                    tracing::info!(
                        generator = name,
                        "vault: lease near its max TTL or its renewal refused, issuing new values"
                    );
                    issue(
                        &client,
                        spec,
                        ns,
                        name,
                        fp,
                        Some(&lease),
                        &mut revoke,
                        now,
                        grace,
                    )
                    .await?
                }
                Err(e) => {
                    return Err(Error::Provider(ProviderError::new(
                        e.kind,
                        format!("VaultDynamicSecret {ns}/{name}: {e}"),
                    )));
                }
            }
        }
        (_, kept) => {
            let old = kept
                .as_ref()
                .and_then(|(_, s)| s.lease.clone())
                .or_else(|| prior.as_ref().and_then(|p| p.lease.clone()));
            issue(
                &client,
                spec,
                ns,
                name,
                fp,
                old.as_ref(),
                &mut revoke,
                now,
                grace,
            )
            .await?
        }
    };
    // Replaced leases whose grace period is over.
    let mut left = Vec::new();
    for r in revoke {
        if r.at > now {
            left.push(r);
            continue;
        }
        match client.revoke(&r.id).await {
            Ok(()) => tracing::info!(generator = name, "vault: replaced lease revoked"),
            // Gone already (expired, revoked by hand): nothing left to do.
            Err(e) if e.kind == ErrorKind::InvalidData => {}
            Err(e) => {
                tracing::warn!(generator = name, error = %e, "vault: revoking a replaced lease failed; retried later");
                left.push(PendingRevocation {
                    id: r.id,
                    at: now + REVOKE_RETRY_SECS,
                });
            }
        }
    }
    entry.state.revoke = left;
    Ok(entry)
}

/// Issues new values for a VaultDynamicSecret; the lease they replace (`old`), if any, is
/// queued in `revoke` for `now + grace`.
#[allow(clippy::too_many_arguments)]
async fn issue(
    client: &VaultDynamicClient,
    spec: &VaultDynamicSecretSpec,
    ns: &str,
    name: &str,
    fp: &str,
    old: Option<&LeaseState>,
    revoke: &mut Vec<PendingRevocation>,
    now: i64,
    grace: i64,
) -> Result<GeneratedEntry, Error> {
    let issued = client
        .issue(
            spec.method.as_deref(),
            &spec.path,
            spec.parameters.as_ref(),
            spec.result_type,
        )
        .await
        .map_err(|e| {
            Error::Provider(ProviderError::new(
                e.kind,
                format!("VaultDynamicSecret {ns}/{name}: {e}"),
            ))
        })?;
    tracing::info!(
        generator = name,
        ttl_seconds = issued.lease.duration_secs,
        "vault: dynamic values issued"
    );
    if let Some(old) = old.filter(|o| !o.id.is_empty()) {
        revoke.push(PendingRevocation {
            id: old.id.clone(),
            at: now + grace,
        });
    }
    let mut lease = lease_of(&issued.lease, &issued.values, now);
    if let Some(lease) = &mut lease {
        lease.renew_before_percentage = spec.renew_before_percentage;
    }
    let not_after = certificate_not_after(&issued.values);
    Ok(GeneratedEntry {
        values: Some(issued.values),
        kept: false,
        state: EntryState {
            kind: "VaultDynamicSecret".into(),
            name: name.into(),
            fingerprint: fp.into(),
            keys: Vec::new(),
            lease,
            revoke: Vec::new(),
            not_after,
        },
    })
}

impl Generated {
    /// Whether an entry holds a Vault lease (current or waiting for revocation).
    pub(super) fn has_leases(&self) -> bool {
        self.entries.values().any(|e| {
            e.state.lease.as_ref().is_some_and(|l| !l.id.is_empty()) || !e.state.revoke.is_empty()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::kept::tests::{lease, state};
    use super::*;

    #[test]
    fn status_due_is_the_earliest_renewal_or_revocation() {
        let mut g = Generated::default();
        let mut s = state(Some(lease(true)));
        s.revoke = vec![PendingRevocation {
            id: "old".into(),
            at: 1010,
        }];
        g.entries.insert(
            2,
            GeneratedEntry {
                values: None,
                kept: true,
                state: s,
            },
        );
        let status = g.status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].index, 2);
        assert_eq!(status[0].lease_expiry.as_ref().unwrap().0.as_second(), 1030);
        assert_eq!(status[0].next_renewal.as_ref().unwrap().0.as_second(), 1020);
        assert_eq!(due_ms(&status), Some(1_010_000));
        // The annotation carries the lease, never a value.
        let a = g.annotations();
        let json = &a["secret-relay.dev/generator.2"];
        assert!(json.contains("\"id\":\"aws/creds/app/abc\""), "{json}");
        assert!(json.contains("\"keys\":[\"access_key\"]"), "{json}");
    }
}
