//! The `Ready` condition, kstatus-style.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};

/// A `Ready` condition. `lastTransitionTime` is kept from `previous` when the status does not
/// change, so the condition only moves when the state does.
pub fn ready(
    previous: Option<&[Condition]>,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    of_type("Ready", previous, ok, reason, message, generation)
}

/// A `Stalled=True` condition, set beside `Ready=False` for a failure that no retry can fix
/// (kstatus reads it as `Failed`, so Flux and Argo CD report the cause at once instead of
/// waiting for their timeout); same reason and message as the `Ready` condition.
pub fn stalled(
    previous: Option<&[Condition]>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    of_type("Stalled", previous, true, reason, message, generation)
}

fn of_type(
    type_: &str,
    previous: Option<&[Condition]>,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let prev = previous.and_then(|p| p.iter().find(|c| c.type_ == type_));
    let last_transition_time = match prev {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        // The API caps messages at 32768 bytes; keep them readable in `kubectl describe`.
        message: truncate(message, 1024),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
