//! Queue items as operators and scripts read them (`queue … list --json`,
//! `queue … show`, the API): one JSON shape per queue whichever call
//! returns it, times as `YYYY-MM-DD HH:MM:SS` text, the payload as the JSON
//! object it is, time in queue and processing time on every item, and for
//! an outbound item still waiting, the retry state of its remote system.

use serde_json::Value;

use crate::ids::{Millis, format_time};
use crate::queue::{InboundItem, OutboundItem, QueueStatus};
use crate::runtime::RemoteHealth;

/// Replaces epoch-millisecond times at `keys` with text (null stays null).
fn times_as_text(view: &mut Value, keys: &[&str]) {
    for key in keys {
        if let Some(millis) = view[*key].as_u64() {
            view[*key] = Value::from(format_time(millis));
            // The exact time too, for scripts and measurements.
            view[format!("{key}_ms")] = Value::from(millis);
        }
    }
}

/// An outbound item. While it waits (Ready or Running) and its remote
/// system is failing, `attempts`, `last_error` and `next_attempt_on` are
/// the remote's, and `waiting` says so in a sentence.
pub fn outbound_view(item: &OutboundItem, remote: Option<&RemoteHealth>, now: Millis) -> Value {
    let mut view = serde_json::to_value(item).expect("items serialize");
    let waiting = matches!(item.status, QueueStatus::Ready | QueueStatus::Running);
    if let Some(remote) = remote.filter(|r| waiting && r.attempts > 0) {
        view["attempts"] = remote.attempts.into();
        view["last_error"] = remote.last_error.clone().into();
        view["waiting"] = Value::from(format!(
            "remote system `{}` is not answering ({} failed attempts{}): {}",
            item.remote_system,
            remote.attempts,
            remote
                .next_attempt_on
                .as_deref()
                .map(|next| format!(", the next at {next}"))
                .unwrap_or_default(),
            remote.last_error.as_deref().unwrap_or("no reason given")
        ));
        view["next_attempt_on"] = remote.next_attempt_on.clone().into();
    }
    view["time_in_queue_ms"] = item
        .processed_on
        .unwrap_or(now)
        .saturating_sub(item.created_on)
        .into();
    view["processing_time_ms"] = match (item.sent_on, item.processed_on) {
        (Some(sent), Some(processed)) => processed.saturating_sub(sent).into(),
        _ => Value::Null,
    };
    times_as_text(
        &mut view,
        &["created_on", "sent_on", "processed_on", "next_attempt_on"],
    );
    view
}

/// An inbound item; a payload that is not JSON (refused on arrival) stays
/// the text it was.
pub fn inbound_view(item: &InboundItem, now: Millis) -> Value {
    let mut view = serde_json::to_value(item).expect("items serialize");
    view["time_in_queue_ms"] = item
        .processed_on
        .unwrap_or(now)
        .saturating_sub(item.created_on)
        .into();
    view["processing_time_ms"] = item.processing_ms.into();
    times_as_text(&mut view, &["created_on", "processed_on"]);
    if let Some(retries) = view.get_mut("fetch_retries").and_then(Value::as_object_mut) {
        for retry in retries.values_mut() {
            times_as_text(retry, &["next_attempt_on"]);
        }
    }
    view
}
