//! Process sync definitions: the declarative TOML an integration
//! administrator applies with `procsync apply`. Every object of Remote
//! Process Sync is a `[[kind]]` block referring to others by name.
//! Parsing and offline validation only.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{ConfigError, Problem, SourceLines, toml_problem};

mod address;
mod group;
mod scope;
use crate::condition::Query;
use crate::domain::Domain;
use crate::ids::is_sys_id;
pub use crate::queue::ConflictRule;
use crate::record::{Operation, check_name};
use crate::user::check_user_name;
pub use address::{check_endpoint, check_fingerprint, normalize_fingerprint};
pub use group::{Enrolled, MEMBER_TEMPLATE_REMOTE, RemoteGroup};

/// Every process sync object of one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default, rename = "definition", skip_serializing_if = "Vec::is_empty")]
    pub definitions: Vec<Definition>,
    #[serde(
        default,
        rename = "process_event",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub process_events: Vec<ProcessEvent>,
    #[serde(default, rename = "capture", skip_serializing_if = "Vec::is_empty")]
    pub captures: Vec<CaptureDefinition>,
    #[serde(
        default,
        rename = "remote_system",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub remote_systems: Vec<RemoteSystem>,
    #[serde(
        default,
        rename = "remote_group",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub remote_groups: Vec<RemoteGroup>,
    #[serde(
        default,
        rename = "outbound_flow",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub outbound_flows: Vec<OutboundFlow>,
    #[serde(
        default,
        rename = "inbound_flow",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub inbound_flows: Vec<InboundFlow>,
}

/// A Process Sync Definition: groups process events under an application
/// and a domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_application")]
    pub application: String,
    /// Capture definitions of this definition see only records in this
    /// domain's subtree.
    #[serde(default = "Domain::global")]
    pub domain: Domain,
}

/// A process event: the name that links instances (case-sensitive, must be
/// identical on every instance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessEvent {
    pub name: String,
    pub definition: String,
    #[serde(default)]
    pub description: String,
}

pub use crate::attachment::AttachmentStrategy;

/// A capture definition: which record changes become outbound queue items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureDefinition {
    pub name: String,
    pub process_event: String,
    #[serde(default = "yes")]
    pub active: bool,
    /// Lower runs first.
    #[serde(default = "default_order")]
    pub order: i64,
    pub table: String,
    /// Encoded query; empty matches every record.
    #[serde(default)]
    pub filter: String,
    #[serde(default = "all_operations")]
    pub operations: Vec<Operation>,
    /// Included fields; `["*"]` includes every non-`sys_` field.
    pub fields: Vec<String>,
    #[serde(default)]
    pub journal_fields: Vec<String>,
    #[serde(default)]
    pub include_attachments: bool,
    #[serde(default)]
    pub attachment_strategy: AttachmentStrategy,
    /// 0 means no limit.
    #[serde(default)]
    pub max_attachment_mb: u64,
    /// Empty means every extension.
    #[serde(default)]
    pub allowed_extensions: Vec<String>,
}

/// A peer instance this instance syncs with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSystem {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// sys_id of the peer's Remote System record that points back at us.
    #[serde(default)]
    pub external_id: String,
    /// The peer's peer-API address, e.g. `https://hub.example:7481`.
    pub endpoint: String,
    /// The peer certificate's fingerprint, `sha256:` + 64 hex digits, as
    /// printed by the peer's `procsync init`.
    pub fingerprint: String,
    /// The local user the peer authenticates as (role `process_sync_api`).
    pub inbound_api_user: String,
    /// The local user inbound flows from this peer run as.
    pub run_as: String,
    /// Who manages this remote system: admins of this domain's subtree.
    #[serde(default = "Domain::global", skip_serializing_if = "Domain::is_global")]
    pub domain: Domain,
    /// Steps run when the outbound state becomes Error (retries exhausted,
    /// or the peer refused us).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_subflow: Vec<crate::subflow::Step>,
    /// Whether this side dials the peer: `never` for a peer behind NAT,
    /// whose own connection then carries both directions.
    #[serde(default, skip_serializing_if = "Dial::is_always")]
    pub dial: Dial,
    /// This side also takes the peer's items over its own connection
    /// (`Pull`), because the peer never dials it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull: bool,
}

/// Whether this side dials a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dial {
    #[default]
    Always,
    /// The peer dials, and its connection carries our items to it too.
    Never,
}

impl Dial {
    pub fn is_always(&self) -> bool {
        *self == Dial::Always
    }
}

/// Links a process event to a remote system for sending.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundFlow {
    pub name: String,
    pub process_event: String,
    /// The remote system, or empty when the flow is for a group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_system: String,
    /// The group whose every member the flow is for (`[[remote_group]]`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_group: String,
    #[serde(default = "default_template")]
    pub template: String,
}

/// Links a process event from a remote system to a local table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundFlow {
    pub name: String,
    pub process_event: String,
    /// The remote system, or empty when the flow is for a group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_system: String,
    /// The group whose every member the flow is for (`[[remote_group]]`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_group: String,
    #[serde(default = "default_template")]
    pub template: String,
    /// The local table records are created in and updated.
    pub table: String,
    /// Field mapping. Empty: every field arrives under its own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub map: Vec<FieldMap>,
    /// Steps run when one of this flow's items goes to Error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_error: Vec<crate::subflow::Step>,
    /// Journal field mapping (e.g. the peer's `comments` into local
    /// `work_notes`). Empty: entries keep their field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal_map: Vec<JournalMap>,
    /// A Rhai script run after the mapping (see `script::run`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script: String,
    /// Largest attachment accepted from the peer, in MiB; 0: only the
    /// `attachment.max_mb` property applies.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_attachment_mb: u64,
    /// Extensions accepted from the peer; empty accepts every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_extensions: Vec<String>,
    /// How a field both sides changed since the last exchange is settled.
    #[serde(default, skip_serializing_if = "ConflictRule::is_default")]
    pub conflict: ConflictRule,
    /// Fields (ours) that identify the same record on both sides: an item
    /// for a record not correlated yet correlates with our record holding
    /// the same values, instead of creating a copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_on: Vec<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Journal entries of field `from` are appended to field `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalMap {
    pub from: String,
    pub to: String,
}

/// One mapped target field: copied from a payload field (its value, or its
/// display value), or set to a constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// The local field to set.
    pub to: String,
    /// The payload field to copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A constant value instead of a copied one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<String>,
    /// Copy the display value rather than the value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub display_value: bool,
}

fn default_application() -> String {
    "global".to_string()
}
fn yes() -> bool {
    true
}
fn default_order() -> i64 {
    100
}
fn all_operations() -> Vec<Operation> {
    vec![Operation::Create, Operation::Update, Operation::Delete]
}
fn default_template() -> String {
    "basic".to_string()
}

/// Flow templates this version knows.
pub const TEMPLATES: &[&str] = &["basic"];

/// The kinds of objects, as named in the file, in apply order.
pub const KINDS: &[&str] = &[
    "definition",
    "process_event",
    "capture",
    "remote_system",
    "remote_group",
    "outbound_flow",
    "inbound_flow",
];

impl SyncConfig {
    /// Parses and validates definitions text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<SyncConfig, ConfigError> {
        Self::parse_for_domain(file, text, &Domain::global(), &SyncConfig::default())
    }

    /// Parses definitions text applied by an admin of `domain`, beside
    /// `kept` (the stored objects outside that domain, which the file may
    /// refer to but neither hold nor change), validating the two together.
    /// Returns the whole: the file's objects, then `kept`'s.
    pub fn parse_for_domain(
        file: &str,
        text: &str,
        domain: &Domain,
        kept: &SyncConfig,
    ) -> Result<SyncConfig, ConfigError> {
        let config: SyncConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            problems: vec![toml_problem(text, &e)],
        })?;
        let lines = SourceLines::scan(text);
        let outside = config.outside_of(domain, kept);
        if !outside.is_empty() {
            return Err(ConfigError {
                file: file.to_string(),
                problems: outside
                    .into_iter()
                    .map(|(kind, index, message)| Problem {
                        line: lines.line(kind, index, "name"),
                        message,
                    })
                    .collect(),
            });
        }
        let config = config.joined(kept);
        let problems = config.problems(&lines);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// Every object as (kind, name, canonical JSON), for diffing and storage.
    pub fn objects(&self) -> Vec<(&'static str, String, serde_json::Value)> {
        fn push<T: Serialize>(
            out: &mut Vec<(&'static str, String, serde_json::Value)>,
            kind: &'static str,
            items: &[T],
            name: impl Fn(&T) -> &str,
        ) {
            for item in items {
                let value = serde_json::to_value(item).expect("config objects serialize");
                out.push((kind, name(item).to_string(), value));
            }
        }
        let mut out = Vec::new();
        push(&mut out, "definition", &self.definitions, |o| &o.name);
        push(&mut out, "process_event", &self.process_events, |o| &o.name);
        push(&mut out, "capture", &self.captures, |o| &o.name);
        push(&mut out, "remote_system", &self.remote_systems, |o| &o.name);
        push(&mut out, "remote_group", &self.remote_groups, |o| &o.name);
        push(&mut out, "outbound_flow", &self.outbound_flows, |o| &o.name);
        push(&mut out, "inbound_flow", &self.inbound_flows, |o| &o.name);
        out
    }

    /// Rebuilds a config from stored objects (the inverse of `objects`).
    pub fn from_objects(
        objects: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<SyncConfig, serde_json::Error> {
        let mut config = SyncConfig::default();
        for (kind, value) in objects {
            match kind.as_str() {
                "definition" => config.definitions.push(serde_json::from_value(value)?),
                "process_event" => config.process_events.push(serde_json::from_value(value)?),
                "capture" => config.captures.push(serde_json::from_value(value)?),
                "remote_system" => config.remote_systems.push(serde_json::from_value(value)?),
                "remote_group" => config.remote_groups.push(serde_json::from_value(value)?),
                "outbound_flow" => config.outbound_flows.push(serde_json::from_value(value)?),
                "inbound_flow" => config.inbound_flows.push(serde_json::from_value(value)?),
                _ => {}
            }
        }
        Ok(config)
    }

    /// The definition a process event belongs to.
    pub fn definition_of_event(&self, event: &str) -> Option<&Definition> {
        let event = self.process_events.iter().find(|e| e.name == event)?;
        self.definitions.iter().find(|d| d.name == event.definition)
    }

    /// Renders the config as TOML, the form `procsync export` prints.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes to TOML")
    }

    #[allow(
        clippy::too_many_lines,
        reason = "the offline checks, one short block per rule, in the order the file is read"
    )]
    fn problems(&self, lines: &SourceLines) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = |kind: &str, index: usize, key: &str, message: String| {
            problems.push(Problem {
                line: lines.line(kind, index, key),
                message,
            });
        };

        let names = |kind: &str,
                     names: Vec<&str>,
                     report: &mut dyn FnMut(&str, usize, &str, String)| {
            let mut seen = HashSet::new();
            for (index, name) in names.iter().enumerate() {
                if name.trim().is_empty() {
                    report(
                        kind,
                        index,
                        "name",
                        format!("{kind} #{} has an empty name", index + 1),
                    );
                } else if !seen.insert(*name) {
                    report(
                        kind,
                        index,
                        "name",
                        format!("duplicate {kind} name `{name}`: names must be unique per kind"),
                    );
                }
            }
            seen.into_iter()
                .map(str::to_string)
                .collect::<HashSet<String>>()
        };
        let definitions = names(
            "definition",
            self.definitions.iter().map(|o| o.name.as_str()).collect(),
            &mut report,
        );
        let events = names(
            "process_event",
            self.process_events
                .iter()
                .map(|o| o.name.as_str())
                .collect(),
            &mut report,
        );
        names(
            "capture",
            self.captures.iter().map(|o| o.name.as_str()).collect(),
            &mut report,
        );
        let remotes = names(
            "remote_system",
            self.remote_systems
                .iter()
                .map(|o| o.name.as_str())
                .collect(),
            &mut report,
        );
        names(
            "outbound_flow",
            self.outbound_flows
                .iter()
                .map(|o| o.name.as_str())
                .collect(),
            &mut report,
        );
        names(
            "inbound_flow",
            self.inbound_flows.iter().map(|o| o.name.as_str()).collect(),
            &mut report,
        );

        let missing = |kind: &str, what: &str, name: &str| {
            format!("{kind} refers to {what} `{name}`, which is not defined in this file")
        };

        for (i, event) in self.process_events.iter().enumerate() {
            if !definitions.contains(&event.definition) {
                report(
                    "process_event",
                    i,
                    "definition",
                    missing(
                        &format!("process_event `{}`", event.name),
                        "definition",
                        &event.definition,
                    ),
                );
            }
        }

        for (i, capture) in self.captures.iter().enumerate() {
            let kind = format!("capture `{}`", capture.name);
            if !events.contains(&capture.process_event) {
                report(
                    "capture",
                    i,
                    "process_event",
                    missing(&kind, "process_event", &capture.process_event),
                );
            }
            if let Err(message) = check_name("table", &capture.table) {
                report("capture", i, "table", format!("{kind}: {message}"));
            }
            if let Err(e) = Query::parse(&capture.filter) {
                report(
                    "capture",
                    i,
                    "filter",
                    format!("{kind}: filter `{}`: {e}", capture.filter),
                );
            }
            if capture.operations.is_empty() {
                report(
                    "capture",
                    i,
                    "operations",
                    format!(
                        "{kind}: operations is empty; list at least one of create, update, delete"
                    ),
                );
            }
            if capture.fields.is_empty() {
                report(
                    "capture",
                    i,
                    "fields",
                    format!("{kind}: fields is empty; list the fields to send, or [\"*\"] for all"),
                );
            }
            for field in &capture.fields {
                if field != "*" {
                    if let Err(message) = check_name("field", field) {
                        report("capture", i, "fields", format!("{kind}: {message}"));
                    }
                }
            }
            for field in &capture.journal_fields {
                if let Err(message) = check_name("journal field", field) {
                    report("capture", i, "journal_fields", format!("{kind}: {message}"));
                }
            }
            for extension in &capture.allowed_extensions {
                if extension.is_empty() || !extension.chars().all(|c| c.is_ascii_alphanumeric()) {
                    report(
                        "capture",
                        i,
                        "allowed_extensions",
                        format!(
                            "{kind}: extension `{extension}` must be letters and digits only, without the dot"
                        ),
                    );
                }
            }
        }

        for (i, remote) in self.remote_systems.iter().enumerate() {
            let kind = format!("remote_system `{}`", remote.name);
            if !remote.external_id.is_empty() && !is_sys_id(&remote.external_id) {
                report(
                    "remote_system",
                    i,
                    "external_id",
                    format!(
                        "{kind}: external_id `{}` must be the 32-hex sys_id of the peer's remote system record (or empty until it is known)",
                        remote.external_id
                    ),
                );
            }
            if let Err(message) = check_endpoint(&remote.endpoint) {
                report("remote_system", i, "endpoint", format!("{kind}: {message}"));
            }
            if let Err(message) = check_fingerprint(&remote.fingerprint) {
                report(
                    "remote_system",
                    i,
                    "fingerprint",
                    format!("{kind}: {message}"),
                );
            }
            for step in &remote.error_subflow {
                if let Err(message) = step.check() {
                    report(
                        "remote_system",
                        i,
                        "error_subflow",
                        format!("{kind}: error_subflow: {message}"),
                    );
                }
            }
            for (key, user) in [
                ("inbound_api_user", &remote.inbound_api_user),
                ("run_as", &remote.run_as),
            ] {
                if let Err(message) = check_user_name(user) {
                    report("remote_system", i, key, format!("{kind}: {key}: {message}"));
                }
            }
        }

        // Outbound and inbound flows share their rules: known event, known
        // remote system or group, known template, one flow per (event,
        // remote) pair.
        let groups = self.group_problems(&remotes, &mut report);
        let flows = [
            (
                "outbound_flow",
                "sends process event",
                "to",
                self.outbound_flows
                    .iter()
                    .map(|f| {
                        (
                            &f.name,
                            &f.process_event,
                            (&f.remote_system, &f.remote_group),
                            &f.template,
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            (
                "inbound_flow",
                "receives process event",
                "from",
                self.inbound_flows
                    .iter()
                    .map(|f| {
                        (
                            &f.name,
                            &f.process_event,
                            (&f.remote_system, &f.remote_group),
                            &f.template,
                        )
                    })
                    .collect(),
            ),
        ];
        for (flow_kind, verb, preposition, list) in flows {
            let mut pairs = BTreeMap::new();
            for (i, (name, event, (remote, group), template)) in list.into_iter().enumerate() {
                let kind = format!("{flow_kind} `{name}`");
                if !events.contains(event) {
                    report(
                        flow_kind,
                        i,
                        "process_event",
                        missing(&kind, "process_event", event),
                    );
                }
                let target = match group::flow_target(&kind, remote, group, &remotes, &groups) {
                    Ok(target) => target,
                    Err((key, message)) => {
                        report(flow_kind, i, key, message);
                        continue;
                    }
                };
                if !TEMPLATES.contains(&template.as_str()) {
                    let known = TEMPLATES.join(", ");
                    report(
                        flow_kind,
                        i,
                        "template",
                        format!("{kind}: unknown template `{template}`; known: {known}"),
                    );
                }
                if let Some(other) = pairs.insert((event, target.clone()), name) {
                    report(
                        flow_kind,
                        i,
                        "name",
                        format!(
                            "{kind}: {flow_kind} `{other}` already {verb} `{event}` {preposition} {target}; one flow per pair"
                        ),
                    );
                }
            }
        }
        for (i, flow) in self.inbound_flows.iter().enumerate() {
            if !flow.script.trim().is_empty() {
                if let Err(message) = crate::script::check(&flow.script) {
                    report(
                        "inbound_flow",
                        i,
                        "script",
                        format!("inbound_flow `{}`: {message}", flow.name),
                    );
                }
            }
            for step in &flow.on_error {
                if let Err(message) = step.check() {
                    report(
                        "inbound_flow",
                        i,
                        "on_error",
                        format!("inbound_flow `{}`: on_error: {message}", flow.name),
                    );
                }
            }
            for map in &flow.journal_map {
                for name in [&map.from, &map.to] {
                    if let Err(message) = check_name("journal field", name) {
                        report(
                            "inbound_flow",
                            i,
                            "journal_map",
                            format!("inbound_flow `{}`: journal_map: {message}", flow.name),
                        );
                    }
                }
            }
            for map in &flow.map {
                let kind = format!("inbound_flow `{}`", flow.name);
                if let Err(message) = check_name("field", &map.to) {
                    report("inbound_flow", i, "map", format!("{kind}: map: {message}"));
                }
                match (&map.from, &map.constant) {
                    (Some(_), Some(_)) | (None, None) => report(
                        "inbound_flow",
                        i,
                        "map",
                        format!(
                            "{kind}: map to `{}` needs exactly one of `from` or `constant`",
                            map.to
                        ),
                    ),
                    _ => {}
                }
            }
            if let Err(message) = check_name("table", &flow.table) {
                report(
                    "inbound_flow",
                    i,
                    "table",
                    format!("inbound_flow `{}`: {message}", flow.name),
                );
            }
        }
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../packaging/sync.example.toml");

    #[test]
    fn the_packaged_example_parses() {
        let config = SyncConfig::parse("sync.example.toml", EXAMPLE).unwrap();
        assert!(!config.captures.is_empty());
        assert!(!config.outbound_flows.is_empty());
        assert!(!config.inbound_flows.is_empty());
    }

    #[test]
    fn export_round_trips() {
        let config = SyncConfig::parse("x", EXAMPLE).unwrap();
        let again = SyncConfig::parse("export", &config.to_toml()).unwrap();
        assert_eq!(config, again);
        let rebuilt = SyncConfig::from_objects(
            config
                .objects()
                .into_iter()
                .map(|(k, _, v)| (k.to_string(), v)),
        )
        .unwrap();
        assert_eq!(config, rebuilt);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = r#"
[[definition]]
name = "d"

[[process_event]]
name = "e"
definition = "nope"

[[capture]]
name = "c"
process_event = "e"
table = "incident"
filter = "state=1^^x=2"
fields = ["short_description"]

[[capture]]
name = "c"
process_event = "missing"
table = "Bad Table"
fields = []
"#;
        let err = SyncConfig::parse("defs.toml", text).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("defs.toml:7: process_event `e` refers to definition `nope`"),
            "{shown}"
        );
        assert!(shown.contains("defs.toml:13: capture `c`: filter `state=1^^x=2`: invalid encoded query at position 9"), "{shown}");
        assert!(
            shown.contains("defs.toml:17: duplicate capture name `c`"),
            "{shown}"
        );
        assert!(
            shown.contains("defs.toml:18: capture `c` refers to process_event `missing`"),
            "{shown}"
        );
        assert!(
            shown.contains("defs.toml:19: capture `c`: table name `Bad Table` is invalid"),
            "{shown}"
        );
        assert!(
            shown.contains("defs.toml:20: capture `c`: fields is empty"),
            "{shown}"
        );
        assert_eq!(err.problems.len(), 6, "{shown}");
    }

    #[test]
    fn type_errors_name_the_line() {
        let err = SyncConfig::parse("d.toml", "[[capture]]\nname = \"c\"\norder = \"first\"\n")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("d.toml:3: invalid TOML"),
            "{err}"
        );
        let err = SyncConfig::parse("d.toml", "[[capturez]]\nname = \"c\"\n").unwrap_err();
        assert!(err.to_string().contains("capturez"), "{err}");
    }
}
