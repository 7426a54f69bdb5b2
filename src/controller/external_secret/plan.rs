//! Step 1 of the pipeline, pure: from the ExternalSecret's status, what the controller
//! remembers of it and the clock, whether anything is due and how fresh the values must be.
//! Unit-tested from fixtures below, like `build`.

use std::num::NonZeroI64;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::super::{Error, ObjectState};
use crate::api::{ExternalSecret, external_secret::ExternalSecretStatus};

/// Longest `refreshInterval` text accepted, and most digits in one of its numbers: bounds that
/// keep the arithmetic of a tenant's `"99999999999999999999h"` from overflowing.
const MAX_INTERVAL_CHARS: usize = 64;
const MAX_INTERVAL_DIGITS: usize = 9;

/// Parses `refreshInterval` as Kubernetes parses a `metav1.Duration` (Go's
/// `time.ParseDuration`: `1h`, `30m`, `1h30m`, `1.5h`, `90s`, `0`; units ns, us, ms, s, m, h),
/// through kube's own [`kube::core::Duration`]. Returns whole seconds; `0` = never refresh.
/// Errors (`InvalidSpec`): not a Go duration, negative, under a second but not 0, or over
/// the length bounds above.
pub fn parse_refresh_interval(s: &str) -> Result<u64, Error> {
    let s = s.trim();
    if s == "0" || s.is_empty() {
        return Ok(0);
    }
    let refuse = |why: String| Error::RefreshInterval {
        value: s.to_string(),
        why,
    };
    let longest_number = s
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if s.len() > MAX_INTERVAL_CHARS || longest_number > MAX_INTERVAL_DIGITS {
        return Err(refuse("too long".into()));
    }
    let d: kube::core::Duration = s.parse().map_err(|e| refuse(format!("{e}")))?;
    if d.is_negative() {
        return Err(refuse("must not be negative".into()));
    }
    let d = std::time::Duration::from(d);
    match d.as_secs() {
        // `0` means "sync once"; a sub-second interval must not silently become that.
        0 if !d.is_zero() => Err(refuse("must be 0 (sync once) or at least 1s".into())),
        secs => Ok(secs),
    }
}

/// ESO's `syncedResourceVersion`: `<generation>-<sha256 of labels and annotations>`; a change
/// (spec edit, force-sync annotation) means the values must be fetched again. kubectl's
/// last-applied annotation is left out (it changes with every `kubectl apply`).
pub fn synced_resource_version(es: &ExternalSecret) -> String {
    let mut h = Sha256::new();
    for (k, v) in es.labels().iter().chain(es.annotations().iter()) {
        if k == super::super::LAST_APPLIED {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    format!(
        "{}-{}",
        es.meta().generation.unwrap_or_default(),
        &hex::encode(h.finalize())[..16]
    )
}

/// Everything [`plan`] decides on.
pub struct PlanInput<'a> {
    /// `refreshInterval` in seconds (0: sync once, and for `refreshPolicy` other than
    /// `Periodic`).
    pub interval: u64,
    /// `refreshPolicy: CreatedOnce`: once a sync succeeded, a spec change fetches nothing.
    pub created_once: bool,
    /// The status as cached (it may not show our last status write yet).
    pub status: &'a ExternalSecretStatus,
    /// The current [`synced_resource_version`].
    pub version: &'a str,
    /// What the controller remembers of this object, if anything.
    pub memory: Option<&'a ObjectState>,
    /// `metadata.creationTimestamp`, Unix ms.
    pub created_ms: Option<i64>,
    /// Now, Unix ms.
    pub now_ms: i64,
    /// Whether the target Secret was deleted or edited since we wrote it.
    pub drift: bool,
}

/// What a reconcile does.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is due: requeue for the refresh due at `due_ms` (Unix ms), if any.
    UpToDate { due_ms: Option<i64> },
    /// Fetch and write. Values must have been fetched at or after `fresh_since` (Unix ms) to
    /// be reused; `spec_changed`: the spec or annotations changed since the last sync, so the
    /// Secret is read rather than trusted from the cache.
    Sync {
        fresh_since: i64,
        spec_changed: bool,
    },
}

/// Decides whether anything is due, and how fresh the values must be:
/// - due when the spec or annotations changed (a force-sync; under `CreatedOnce` only before
///   the first successful sync), when the last sync failed or never happened, when the refresh
///   tick passed, or when the Secret drifted;
/// - a new ExternalSecret's first attempt takes any value fetched since it was created; a
///   spec change, force-sync or retry needs a new one (a retry must not be answered by the
///   "not found" that failed it); a due refresh, one fetched since it became due (the same
///   instant for every ExternalSecret on the provider's ticks); restoring a drifted Secret,
///   the values it had.
pub fn plan(input: PlanInput<'_>) -> Plan {
    let PlanInput {
        interval,
        created_once,
        status,
        version,
        memory,
        created_ms,
        now_ms,
        drift,
    } = input;
    let synced_here = memory.is_some_and(|m| m.synced.as_deref() == Some(version));
    let failed_before = memory.is_some_and(|m| m.failures > 0);
    let last_fetch = memory
        .and_then(|m| m.last_fetch)
        .map(NonZeroI64::get)
        .or_else(|| status.refresh_time.as_ref().map(|t| t.0.as_second()));
    let ready = synced_here
        || status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    // ESO's CreatedOnce: a change counts only until the first successful sync.
    let spec_changed = status.synced_resource_version.as_deref() != Some(version)
        && !synced_here
        && !(created_once && ready && last_fetch.is_some());
    let due_ms = memory
        .and_then(|m| m.next_due)
        .map(NonZeroI64::get)
        .or_else(|| last_fetch.map(|t| (t + interval as i64) * 1000));
    let refresh_due = match (last_fetch, due_ms) {
        (Some(_), Some(due)) => interval > 0 && now_ms >= due,
        _ => true,
    };
    if !spec_changed && ready && !refresh_due && !drift {
        return Plan::UpToDate { due_ms };
    }
    let first_attempt = last_fetch.is_none() && !failed_before && status.conditions.is_empty();
    let fresh_since = if first_attempt {
        created_ms.map_or(now_ms, |c| c.min(now_ms))
    } else if spec_changed || !ready {
        now_ms
    } else if refresh_due {
        due_ms.unwrap_or(now_ms).min(now_ms)
    } else {
        last_fetch.map_or(now_ms, |t| t * 1000)
    };
    Plan::Sync {
        fresh_since,
        spec_changed,
    }
}

/// Now as a timestamp and in Unix ms, read once for a whole reconcile.
pub fn now() -> (Timestamp, i64) {
    let now = Timestamp::now();
    (now, now.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_intervals_parse_as_go_durations_and_refuse_the_rest() {
        for (text, secs) in [
            ("0", 0),
            ("", 0),
            ("1h", 3600),
            ("1h30m", 5400),
            ("1.5h", 5400),
            ("90s", 90),
            ("1500ms", 1),
            ("2m30s", 150),
        ] {
            assert_eq!(parse_refresh_interval(text).unwrap(), secs, "{text}");
        }
        for bad in [
            "500ms",
            "ten minutes",
            "-1h",
            "1M",
            "1d",
            "1h 30m",
            "99999999999999999999h",
            &"1s".repeat(40),
        ] {
            let e = parse_refresh_interval(bad).unwrap_err();
            assert!(e.permanent(), "{bad}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("refreshInterval {:?}: ", bad.trim())),
                "{e}"
            );
        }
    }

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: u64 = 3600;

    fn status(yaml: &str) -> ExternalSecretStatus {
        serde_yaml::from_str(yaml).expect("status fixture")
    }

    /// Synced 10 minutes before NOW at version 3-abc, Ready.
    const SYNCED: &str = r#"
conditions:
- {type: Ready, status: "True", reason: SecretSynced, message: ok, lastTransitionTime: "2027-01-15T07:50:00Z"}
refreshTime: "2027-01-15T07:50:00Z"
syncedResourceVersion: 3-abc
"#;

    fn input<'a>(
        status: &'a ExternalSecretStatus,
        memory: Option<&'a ObjectState>,
    ) -> PlanInput<'a> {
        PlanInput {
            interval: HOUR,
            created_once: false,
            status,
            version: "3-abc",
            memory,
            created_ms: Some(NOW - 86_400_000),
            now_ms: NOW,
            drift: false,
        }
    }

    #[test]
    fn a_new_external_secret_takes_any_value_fetched_since_it_was_created() {
        let empty = ExternalSecretStatus::default();
        let created = NOW - 5_000;
        let p = plan(PlanInput {
            created_ms: Some(created),
            ..input(&empty, None)
        });
        assert_eq!(
            p,
            Plan::Sync {
                fresh_since: created,
                spec_changed: true
            }
        );
    }

    #[test]
    fn nothing_is_due_before_the_tick_and_the_tick_is_remembered() {
        let s = status(SYNCED);
        let refresh_ms = s.refresh_time.as_ref().unwrap().0.as_millisecond();
        // From the status alone (after a restart): due an interval after the refresh time.
        assert_eq!(
            plan(input(&s, None)),
            Plan::UpToDate {
                due_ms: Some(refresh_ms + HOUR as i64 * 1000)
            }
        );
        // Our memory's tick wins over the status.
        let memory = ObjectState {
            next_due: NonZeroI64::new(NOW + 1_000),
            synced: Some("3-abc".into()),
            ..Default::default()
        };
        assert_eq!(
            plan(input(&s, Some(&memory))),
            Plan::UpToDate {
                due_ms: Some(NOW + 1_000)
            }
        );
    }

    #[test]
    fn a_due_refresh_accepts_values_fetched_since_its_tick() {
        let s = status(SYNCED);
        let memory = ObjectState {
            next_due: NonZeroI64::new(NOW - 2_000),
            synced: Some("3-abc".into()),
            ..Default::default()
        };
        assert_eq!(
            plan(input(&s, Some(&memory))),
            Plan::Sync {
                fresh_since: NOW - 2_000,
                spec_changed: false
            }
        );
        // refreshInterval 0: synced once, never due again.
        let once = PlanInput {
            interval: 0,
            ..input(&s, Some(&memory))
        };
        assert!(matches!(plan(once), Plan::UpToDate { .. }));
    }

    #[test]
    fn a_spec_change_or_a_failure_needs_new_values() {
        let s = status(SYNCED);
        let edited = PlanInput {
            version: "4-abc",
            ..input(&s, None)
        };
        assert_eq!(
            plan(edited),
            Plan::Sync {
                fresh_since: NOW,
                spec_changed: true
            }
        );
        // Our own status write not seen yet: our memory says version 4 is synced.
        let memory = ObjectState {
            synced: Some("4-abc".into()),
            next_due: NonZeroI64::new(NOW + 60_000),
            ..Default::default()
        };
        let seen = PlanInput {
            version: "4-abc",
            ..input(&s, Some(&memory))
        };
        assert!(matches!(plan(seen), Plan::UpToDate { .. }));
        // Not Ready (the last sync failed): a retry needs a value fetched now.
        let failed = status(
            r#"
conditions:
- {type: Ready, status: "False", reason: SecretSyncedError, message: x, lastTransitionTime: "2027-01-15T07:50:00Z"}
refreshTime: "2027-01-15T07:50:00Z"
syncedResourceVersion: 3-abc
"#,
        );
        assert_eq!(
            plan(input(&failed, None)),
            Plan::Sync {
                fresh_since: NOW,
                spec_changed: false
            }
        );
    }

    #[test]
    fn a_drifted_secret_is_restored_with_the_values_it_had() {
        let s = status(SYNCED);
        let memory = ObjectState {
            last_fetch: NonZeroI64::new(NOW / 1000 - 600),
            next_due: NonZeroI64::new(NOW + 60_000),
            synced: Some("3-abc".into()),
            ..Default::default()
        };
        let drifted = PlanInput {
            drift: true,
            ..input(&s, Some(&memory))
        };
        assert_eq!(
            plan(drifted),
            Plan::Sync {
                fresh_since: (NOW / 1000 - 600) * 1000,
                spec_changed: false
            }
        );
    }

    #[test]
    fn refresh_policies_as_eso() {
        // OnChange and CreatedOnce run with interval 0: no timer, as refreshInterval 0.
        let s = status(SYNCED);
        let on_change = |version| PlanInput {
            interval: 0,
            version,
            ..input(&s, None)
        };
        assert!(matches!(plan(on_change("3-abc")), Plan::UpToDate { .. }));
        assert!(matches!(
            plan(on_change("4-abc")),
            Plan::Sync {
                spec_changed: true,
                ..
            }
        ));
        // CreatedOnce: after the first successful sync a spec change fetches nothing...
        let created_once = |status, drift| PlanInput {
            interval: 0,
            created_once: true,
            version: "4-abc",
            drift,
            ..input(status, None)
        };
        assert!(matches!(
            plan(created_once(&s, false)),
            Plan::UpToDate { .. }
        ));
        // ...but a deleted or edited Secret is restored,
        assert!(matches!(plan(created_once(&s, true)), Plan::Sync { .. }));
        // and until a sync succeeded, every change and retry fetches.
        let never = ExternalSecretStatus::default();
        assert!(matches!(
            plan(created_once(&never, false)),
            Plan::Sync {
                spec_changed: true,
                ..
            }
        ));
    }
}
