//! Capture: deciding, for one record change, which capture definitions fire
//! and what each outbound queue item carries. Pure; the store calls it inside
//! the write transaction of the change so the change and its queue items
//! commit together.

use std::collections::{BTreeSet, HashMap};

use crate::attachment::{
    Attachment, AttachmentLimits, AttachmentStrategy, PayloadAttachment, RemovedAttachment,
};
use crate::condition::{Fields, Query};
use crate::config::sync::SyncConfig;
use crate::domain::Domain;
use crate::ids::{Millis, format_time};
use crate::queue::{CaptureMetadata, ChangedField, Payload, PayloadJournalEntry};
use crate::record::{JournalEntry, Operation, Record, RecordView};

/// The active capture definitions of an instance, compiled and grouped by
/// source table, each list in `order`.
#[derive(Debug, Default)]
pub struct CaptureIndex {
    by_table: HashMap<String, Vec<CompiledCapture>>,
    /// Inbound flows by (process event, remote system); the inbound
    /// processor reads them in the same transaction as it applies.
    inbound: HashMap<(String, String), crate::config::sync::InboundFlow>,
    /// Outbound flow names by (process event, remote system).
    outbound: HashMap<(String, String), String>,
    /// The fields inbound flows match records on (`match_on`), by table:
    /// the store keeps an index of their values.
    matched: HashMap<String, Vec<String>>,
}

#[derive(Debug)]
struct CompiledCapture {
    name: String,
    order: i64,
    process_event: String,
    domain: Domain,
    operations: Vec<Operation>,
    query: Query,
    /// `None` means every non-`sys_` field.
    fields: Option<Vec<String>>,
    journal_fields: Vec<String>,
    /// `Some` when the capture includes attachments.
    attachments: Option<(AttachmentStrategy, AttachmentLimits)>,
    /// (outbound flow, remote system) pairs of the process event.
    targets: Vec<(String, String)>,
}

/// One record change, as the store saw it.
pub struct Change<'a> {
    pub operation: Operation,
    /// The record before the change (`None` on create).
    pub old: Option<&'a Record>,
    /// The record after the change (on delete: the record as it was).
    pub new: &'a Record,
    /// Journal entries this change appended.
    pub new_journal: &'a [JournalEntry],
    pub changed_by: &'a str,
    pub time: Millis,
    /// The remote system whose inbound flow made this change: never
    /// captured back to it (echo suppression).
    pub origin_remote: Option<&'a str>,
}

/// One outbound queue item to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    pub capture_definition: String,
    pub process_event: String,
    pub outbound_flow: String,
    pub remote_system: String,
    pub payload: Payload,
}

impl CaptureIndex {
    /// Compiles the active capture definitions of a validated config.
    pub fn build(config: &SyncConfig) -> CaptureIndex {
        let mut by_table: HashMap<String, Vec<CompiledCapture>> = HashMap::new();
        for capture in config.captures.iter().filter(|c| c.active) {
            let Some(definition) = config.definition_of_event(&capture.process_event) else {
                continue;
            };
            // Validated on apply; an unparsable filter cannot reach here, but
            // if it did, capturing nothing is safer than capturing everything.
            let Ok(query) = Query::parse(&capture.filter) else {
                continue;
            };
            let targets = config
                .outbound_flows
                .iter()
                .filter(|flow| flow.process_event == capture.process_event)
                .map(|flow| (flow.name.clone(), flow.remote_system.clone()))
                .collect();
            let fields = if capture.fields.iter().any(|f| f == "*") {
                None
            } else {
                Some(capture.fields.clone())
            };
            by_table
                .entry(capture.table.clone())
                .or_default()
                .push(CompiledCapture {
                    name: capture.name.clone(),
                    order: capture.order,
                    process_event: capture.process_event.clone(),
                    domain: definition.domain.clone(),
                    operations: capture.operations.clone(),
                    query,
                    fields,
                    journal_fields: capture.journal_fields.clone(),
                    attachments: capture.include_attachments.then(|| {
                        (
                            capture.attachment_strategy,
                            AttachmentLimits::new(
                                capture.max_attachment_mb,
                                &capture.allowed_extensions,
                            ),
                        )
                    }),
                    targets,
                });
        }
        for captures in by_table.values_mut() {
            captures.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.name.cmp(&b.name)));
        }
        let inbound = config
            .inbound_flows
            .iter()
            .map(|flow| {
                (
                    (flow.process_event.clone(), flow.remote_system.clone()),
                    flow.clone(),
                )
            })
            .collect();
        let outbound = config
            .outbound_flows
            .iter()
            .map(|flow| {
                (
                    (flow.process_event.clone(), flow.remote_system.clone()),
                    flow.name.clone(),
                )
            })
            .collect();
        let mut matched: HashMap<String, Vec<String>> = HashMap::new();
        for flow in &config.inbound_flows {
            let fields = matched.entry(flow.table.clone()).or_default();
            fields.extend(flow.match_on.iter().cloned());
            fields.sort();
            fields.dedup();
        }
        matched.retain(|_, fields| !fields.is_empty());
        CaptureIndex {
            by_table,
            inbound,
            outbound,
            matched,
        }
    }

    /// The tables whose records captures send to `remote_system` (of
    /// `process_event` only, when given), sorted.
    pub fn tables_sent_to(&self, remote_system: &str, process_event: Option<&str>) -> Vec<String> {
        let mut tables: Vec<String> = self
            .by_table
            .iter()
            .filter(|(_, captures)| {
                captures.iter().any(|c| {
                    process_event.is_none_or(|e| e == c.process_event)
                        && c.targets.iter().any(|(_, remote)| remote == remote_system)
                })
            })
            .map(|(table, _)| table.clone())
            .collect();
        tables.sort();
        tables
    }

    /// The fields of `table` inbound flows match records on.
    pub fn matched_fields(&self, table: &str) -> &[String] {
        self.matched.get(table).map_or(&[], Vec::as_slice)
    }

    /// Every (table, field) inbound flows match records on, sorted.
    pub fn matched(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .matched
            .iter()
            .flat_map(|(t, fields)| fields.iter().map(move |f| (t.clone(), f.clone())))
            .collect();
        all.sort();
        all
    }

    /// The first active capture definition (in order) that sends records
    /// of `table` to `remote_system`: (its name, its process event, the
    /// outbound flow).
    pub fn sender_of(&self, table: &str, remote_system: &str) -> Option<(String, String, String)> {
        self.by_table.get(table)?.iter().find_map(|c| {
            c.targets
                .iter()
                .find(|(_, remote)| remote == remote_system)
                .map(|(flow, _)| (c.name.clone(), c.process_event.clone(), flow.clone()))
        })
    }

    /// The outbound flow sending items of `process_event` to
    /// `remote_system`, if one does.
    pub fn outbound_flow(&self, process_event: &str, remote_system: &str) -> Option<&str> {
        self.outbound
            .get(&(process_event.to_string(), remote_system.to_string()))
            .map(String::as_str)
    }

    /// The inbound flow for items of `process_event` from `remote_system`.
    pub fn inbound_flow(
        &self,
        process_event: &str,
        remote_system: &str,
    ) -> Option<&crate::config::sync::InboundFlow> {
        self.inbound
            .get(&(process_event.to_string(), remote_system.to_string()))
    }

    /// The queue items one change creates, in capture-definition order.
    #[allow(
        clippy::too_many_lines,
        reason = "the capture rules apply in the order the design states them; split, the order would hide"
    )]
    pub fn capture(&self, change: &Change<'_>) -> Vec<Captured> {
        let Some(captures) = self.by_table.get(&change.new.table) else {
            return Vec::new();
        };
        let new_view = RecordView::new(change.new);
        let old_view = change.old.map(RecordView::new);
        let mut out = Vec::with_capacity(captures.len());
        for capture in captures {
            // No target but the remote the change came from (a change a
            // hub applied from its only edge): nothing to build.
            let sent_back = |(_, remote): &(String, String)| change.origin_remote == Some(remote);
            if !capture.operations.contains(&change.operation)
                || !change.new.domain.is_within(&capture.domain)
                || capture.targets.iter().all(sent_back)
            {
                continue;
            }
            let matches = match change.operation {
                Operation::Create => capture.query.matches(&new_view, None),
                Operation::Update => capture
                    .query
                    .matches(&new_view, old_view.as_ref().map(|v| v as &dyn Fields)),
                // A deleted record is judged as it was; nothing "changes".
                Operation::Delete => capture.query.matches(&new_view, Some(&new_view)),
            };
            if !matches {
                continue;
            }
            let field_names = capture.field_names(change);
            let journal: Vec<&JournalEntry> = change
                .new_journal
                .iter()
                .filter(|entry| capture.journal_fields.contains(&entry.field))
                .collect();
            let changed_fields: Vec<ChangedField> = field_names
                .iter()
                .map(|&name| {
                    let value = change.new.fields.get(name).cloned().unwrap_or_default();
                    let changed = match (change.operation, change.old) {
                        (Operation::Delete, _) => false,
                        (_, Some(old)) => old.fields.get(name) != change.new.fields.get(name),
                        (_, None) => !value.is_empty(),
                    };
                    ChangedField {
                        key: name.to_string(),
                        display_value: value.clone(),
                        value,
                        changed,
                    }
                })
                .collect();
            let (attachments, removed_attachments) = capture.attachments_of(change);
            // The filter decides when, `fields` what is sent: a change the
            // filter's change operators watch (on any field, included or
            // not) is worth sending even when no included field changed.
            let watched_change = change.old.is_some_and(|old| {
                capture
                    .query
                    .terms()
                    .filter(|term| term.operator.is_change_operator())
                    .any(|term| old.fields.get(&term.field) != change.new.fields.get(&term.field))
            });
            if change.operation == Operation::Update
                && !watched_change
                && journal.is_empty()
                && !changed_fields.iter().any(|f| f.changed)
                && !attachments.iter().any(|a| a.added)
                && removed_attachments.is_empty()
            {
                continue;
            }
            let payload = Payload {
                capture_metadata: CaptureMetadata {
                    changed_by: change.changed_by.to_string(),
                    timestamp: format_time(change.time),
                    operation: change.operation,
                    table: change.new.table.clone(),
                    sys_id: change.new.sys_id.clone(),
                    process_event: capture.process_event.clone(),
                },
                changed_fields,
                journal_entries: journal
                    .iter()
                    .map(|entry| PayloadJournalEntry {
                        field: entry.field.clone(),
                        id: entry.id.clone(),
                        author: entry.author.clone(),
                        time: format_time(entry.created_on),
                        text: entry.text.clone(),
                    })
                    .collect(),
                attachments,
                removed_attachments,
                attachment_strategy: capture.attachments.as_ref().map(|(strategy, _)| *strategy),
            };
            // Each target its own copy of the payload; the last takes it.
            let mut targets = capture
                .targets
                .iter()
                .filter(|target| !sent_back(target))
                .peekable();
            let mut payload = Some(payload);
            while let Some((flow, remote)) = targets.next() {
                let payload = if targets.peek().is_some() {
                    payload.clone()
                } else {
                    payload.take()
                };
                out.extend(payload.map(|payload| Captured {
                    capture_definition: capture.name.clone(),
                    process_event: capture.process_event.clone(),
                    outbound_flow: flow.clone(),
                    remote_system: remote.clone(),
                    payload,
                }));
            }
        }
        out
    }
}

impl CompiledCapture {
    /// The attachments a payload lists (those new with the change flagged)
    /// and those the change removed; attachments over the capture's limits
    /// are left out.
    fn attachments_of(
        &self,
        change: &Change<'_>,
    ) -> (Vec<PayloadAttachment>, Vec<RemovedAttachment>) {
        let Some((_, limits)) = &self.attachments else {
            return (Vec::new(), Vec::new());
        };
        if change.operation == Operation::Delete {
            return (Vec::new(), Vec::new());
        }
        let allowed = |a: &&Attachment| limits.refusal(&a.file_name, a.size).is_none();
        let old: &[Attachment] = change.old.map(|r| r.attachments.as_slice()).unwrap_or(&[]);
        let listed = change
            .new
            .attachments
            .iter()
            .filter(allowed)
            .map(|a| PayloadAttachment {
                added: !old.iter().any(|o| o.sys_id == a.sys_id),
                ..PayloadAttachment::from(a)
            })
            .collect();
        let removed = old
            .iter()
            .filter(allowed)
            .filter(|o| !change.new.attachments.iter().any(|a| a.sys_id == o.sys_id))
            .map(|o| RemovedAttachment {
                sys_id: o.sys_id.clone(),
                file_name: o.file_name.clone(),
                hash: o.hash.clone(),
            })
            .collect();
        (listed, removed)
    }

    fn field_names<'a>(&'a self, change: &'a Change<'_>) -> Vec<&'a str> {
        match &self.fields {
            Some(fields) => fields.iter().map(String::as_str).collect(),
            None => {
                let mut names: BTreeSet<&str> =
                    change.new.fields.keys().map(String::as_str).collect();
                if let Some(old) = change.old {
                    names.extend(old.fields.keys().map(String::as_str));
                }
                names.into_iter().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests;
