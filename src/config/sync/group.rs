//! Remote groups: one `[[remote_group]]` holds what every edge enrolled in
//! it shares (its flows name the group instead of a remote system, and
//! `member` is the definitions each edge takes on joining). The edges
//! themselves are instance data (`Enrolled`), not part of the file: the
//! effective definitions are the file's with each member's group flows
//! made its own (`with_enrolled`). Parsing, checks and that expansion only.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{RemoteSystem, SourceLines, SyncConfig};
use crate::domain::Domain;

/// A group of enrolled edges sharing flows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Who manages the group and its members: admins of this subtree. The
    /// members' users are made in it.
    #[serde(default = "Domain::global", skip_serializing_if = "Domain::is_global")]
    pub domain: Domain,
    /// Steps run when a member's outbound state becomes Error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_subflow: Vec<crate::subflow::Step>,
    /// `never`: members are behind NAT; each dials the hub and its
    /// connection carries the hub's items to it too.
    #[serde(default, skip_serializing_if = "super::Dial::is_always")]
    pub dial: super::Dial,
    /// The definitions an edge applies when it joins: its side of the
    /// group's flows. Their flows name no remote system: on the edge they
    /// are the hub's.
    #[serde(default, skip_serializing_if = "SyncConfig::is_empty")]
    pub member: SyncConfig,
}

/// How a remote system made by enrolment relates to this instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum Enrolled {
    /// An edge that joined this instance's group.
    Member { group: String },
    /// The hub this instance joined, in its group.
    Hub { group: String },
}

impl Enrolled {
    /// The remote group of the join.
    pub fn group(&self) -> &str {
        match self {
            Enrolled::Member { group } | Enrolled::Hub { group } => group,
        }
    }
}

/// The remote system a member template's flows are checked against: on
/// the edge they name the hub under the name it chose.
pub const MEMBER_TEMPLATE_REMOTE: &str = "hub";

/// The remote system (`` `name` ``) or group (`` group `name` ``) a flow
/// names, or the key and the sentence saying what is wrong.
pub(super) fn flow_target(
    kind: &str,
    remote: &str,
    group: &str,
    remotes: &HashSet<String>,
    groups: &HashSet<String>,
) -> Result<String, (&'static str, String)> {
    match (remote.is_empty(), group.is_empty()) {
        (true, true) => Err((
            "remote_system",
            format!("{kind} names no remote_system (or remote_group); name the peer it is for"),
        )),
        (false, false) => Err((
            "remote_group",
            format!(
                "{kind} names both remote_system `{remote}` and remote_group `{group}`; a flow is for one of them"
            ),
        )),
        (false, true) if !remotes.contains(remote) => Err((
            "remote_system",
            format!("{kind} refers to remote_system `{remote}`, which is not defined in this file"),
        )),
        (true, false) if !groups.contains(group) => Err((
            "remote_group",
            format!("{kind} refers to remote_group `{group}`, which is not defined in this file"),
        )),
        (false, true) => Ok(format!("`{remote}`")),
        (true, false) => Ok(format!("group `{group}`")),
    }
}

impl SyncConfig {
    pub fn is_empty(&self) -> bool {
        *self == SyncConfig::default()
    }

    /// The groups' own problems (names, error subflows, member templates),
    /// reported through `report`; returns the group names.
    pub(super) fn group_problems(
        &self,
        remotes: &HashSet<String>,
        report: &mut dyn FnMut(&str, usize, &str, String),
    ) -> HashSet<String> {
        let mut names = HashSet::new();
        for (i, group) in self.remote_groups.iter().enumerate() {
            let kind = format!("remote_group `{}`", group.name);
            if let Err(message) = crate::user::check_user_name(&group.name) {
                let message = message.replacen("user name", "name", 1);
                report("remote_group", i, "name", format!("{kind}: {message}"));
            } else if remotes.contains(&group.name) {
                report(
                    "remote_group",
                    i,
                    "name",
                    format!(
                        "{kind}: a remote_system has that name; groups and remote systems need names of their own"
                    ),
                );
            } else if !names.insert(group.name.clone()) {
                report(
                    "remote_group",
                    i,
                    "name",
                    format!(
                        "duplicate remote_group name `{}`: names must be unique per kind",
                        group.name
                    ),
                );
            }
            for step in &group.error_subflow {
                if let Err(message) = step.check() {
                    report(
                        "remote_group",
                        i,
                        "error_subflow",
                        format!("{kind}: error_subflow: {message}"),
                    );
                }
            }
            for message in group.member.template_problems() {
                report(
                    "remote_group",
                    i,
                    "member",
                    format!("{kind}: member: {message}"),
                );
            }
        }
        names
    }

    /// Why a group's member template cannot be what an edge applies.
    fn template_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.remote_systems.is_empty() || !self.remote_groups.is_empty() {
            problems.push(
                "holds remote systems or groups; the edge's only remote system is the hub, made when it joins"
                    .to_string(),
            );
        }
        let named = self
            .outbound_flows
            .iter()
            .map(|f| (&f.name, &f.remote_system, &f.remote_group))
            .chain(
                self.inbound_flows
                    .iter()
                    .map(|f| (&f.name, &f.remote_system, &f.remote_group)),
            );
        for (name, remote, group) in named {
            if !remote.is_empty() || !group.is_empty() {
                problems.push(format!(
                    "flow `{name}` names a remote system or group; a member's flows leave it out (they are the hub's)"
                ));
            }
        }
        if problems.is_empty() {
            let mut filled = self.for_hub(MEMBER_TEMPLATE_REMOTE);
            filled.remote_systems.push(RemoteSystem {
                name: MEMBER_TEMPLATE_REMOTE.to_string(),
                description: String::new(),
                external_id: String::new(),
                endpoint: "https://hub.invalid:7481".to_string(),
                fingerprint: format!("sha256:{}", "0".repeat(64)),
                inbound_api_user: "hub_api".to_string(),
                run_as: "hub_runas".to_string(),
                domain: Domain::global(),
                error_subflow: Vec::new(),
                dial: super::Dial::Always,
                pull: false,
            });
            problems.extend(
                filled
                    .problems(&SourceLines::scan(""))
                    .into_iter()
                    .map(|p| p.message),
            );
        }
        problems
    }

    /// Every problem of the definitions as a whole, without file lines.
    pub fn check(&self) -> Result<(), String> {
        let problems: Vec<String> = self
            .problems(&SourceLines::scan(""))
            .into_iter()
            .map(|p| p.message)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// A member template as the edge applies it: its flows name `hub`.
    pub fn for_hub(&self, hub: &str) -> SyncConfig {
        let mut config = self.clone();
        for flow in &mut config.outbound_flows {
            flow.remote_system = hub.to_string();
        }
        for flow in &mut config.inbound_flows {
            flow.remote_system = hub.to_string();
        }
        config
    }

    /// `self` with `more`'s objects added; an object of the same kind and
    /// name must be equal (a second join of the same template), otherwise
    /// the sentence says which one differs.
    pub fn merged_with(self, more: &SyncConfig) -> Result<SyncConfig, String> {
        let have: std::collections::HashMap<(&str, String), serde_json::Value> = self
            .objects()
            .into_iter()
            .map(|(kind, name, value)| ((kind, name), value))
            .collect();
        let mut added = Vec::new();
        for (kind, name, value) in more.objects() {
            match have.get(&(kind, name.clone())) {
                Some(old) if *old == value => {}
                Some(_) => {
                    return Err(format!(
                        "this instance already has a different {kind} `{name}`; rename or remove it (`procsync export`, edit, `procsync apply`) and join again"
                    ));
                }
                None => added.push((kind.to_string(), value)),
            }
        }
        let mut objects: Vec<(String, serde_json::Value)> = self
            .objects()
            .into_iter()
            .map(|(kind, _, value)| (kind.to_string(), value))
            .collect();
        objects.extend(added);
        SyncConfig::from_objects(objects).map_err(|e| e.to_string())
    }

    /// The definitions as they run: the file's, plus each enrolled remote
    /// system; a member takes its group's domain, error subflow and dial,
    /// and each of the group's flows becomes one of its own (named `FLOW
    /// (MEMBER)`), in place of the group's.
    pub fn with_enrolled(
        mut self,
        enrolled: impl IntoIterator<Item = (RemoteSystem, Enrolled)>,
    ) -> SyncConfig {
        for (mut remote, how) in enrolled {
            if let Enrolled::Member { group } = &how {
                if let Some(group) = self.remote_groups.iter().find(|g| &g.name == group) {
                    remote.domain = group.domain.clone();
                    remote.error_subflow = group.error_subflow.clone();
                    remote.dial = group.dial;
                }
                let outbound: Vec<_> = self
                    .outbound_flows
                    .iter()
                    .filter(|f| &f.remote_group == group)
                    .map(|f| super::OutboundFlow {
                        name: format!("{} ({})", f.name, remote.name),
                        remote_system: remote.name.clone(),
                        remote_group: String::new(),
                        ..f.clone()
                    })
                    .collect();
                let inbound: Vec<_> = self
                    .inbound_flows
                    .iter()
                    .filter(|f| &f.remote_group == group)
                    .map(|f| super::InboundFlow {
                        name: format!("{} ({})", f.name, remote.name),
                        remote_system: remote.name.clone(),
                        remote_group: String::new(),
                        ..f.clone()
                    })
                    .collect();
                self.outbound_flows.extend(outbound);
                self.inbound_flows.extend(inbound);
            }
            self.remote_systems.push(remote);
        }
        // A group's flows run only as its members' own.
        self.outbound_flows.retain(|f| f.remote_group.is_empty());
        self.inbound_flows.retain(|f| f.remote_group.is_empty());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = r#"
[[definition]]
name = "d"

[[process_event]]
name = "incident"
definition = "d"

[[remote_group]]
name = "stores"

[[remote_group.member.definition]]
name = "d"

[[remote_group.member.process_event]]
name = "incident"
definition = "d"

[[remote_group.member.inbound_flow]]
name = "From the hub"
process_event = "incident"
table = "incident"

[[outbound_flow]]
name = "To stores"
process_event = "incident"
remote_group = "stores"
"#;

    fn member(name: &str) -> (RemoteSystem, Enrolled) {
        let remote = RemoteSystem {
            name: name.to_string(),
            description: String::new(),
            external_id: String::new(),
            endpoint: "https://10.0.0.7:7481".to_string(),
            fingerprint: format!("sha256:{}", "1".repeat(64)),
            inbound_api_user: format!("{name}_api"),
            run_as: format!("{name}_runas"),
            domain: Domain::global(),
            error_subflow: Vec::new(),
            dial: crate::config::sync::Dial::Always,
            pull: false,
        };
        let group = "stores".to_string();
        (remote, Enrolled::Member { group })
    }

    #[test]
    fn a_group_parses_round_trips_and_expands_per_member() {
        let config = SyncConfig::parse("hub.toml", GROUP).unwrap();
        assert_eq!(config.remote_groups[0].member.inbound_flows.len(), 1);
        let again = SyncConfig::parse("export", &config.to_toml()).unwrap();
        assert_eq!(config, again);
        let running = config
            .clone()
            .with_enrolled([member("store-1"), member("store-2")]);
        let targets: Vec<(&str, &str)> = running
            .outbound_flows
            .iter()
            .map(|f| (f.name.as_str(), f.remote_system.as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                ("To stores (store-1)", "store-1"),
                ("To stores (store-2)", "store-2")
            ]
        );
        assert_eq!(running.remote_systems.len(), 2);
        let edge = config.remote_groups[0].member.for_hub("hq");
        assert_eq!(edge.inbound_flows[0].remote_system, "hq");
        let merged = SyncConfig::default().merged_with(&edge).unwrap();
        assert_eq!(merged.clone().merged_with(&edge).unwrap(), merged);
        let mut other = edge.clone();
        other.inbound_flows[0].table = "problem".to_string();
        let clash = merged.merged_with(&other).unwrap_err();
        assert!(
            clash.contains("already has a different inbound_flow `From the hub`"),
            "{clash}"
        );
    }

    #[test]
    fn a_bad_group_is_refused_with_its_line() {
        let text = GROUP.replace(
            "remote_group = \"stores\"\n",
            "remote_group = \"shops\"\nremote_system = \"x\"\n",
        ) + r#"
[[remote_group]]
name = "others"

[[remote_group.member.outbound_flow]]
name = "Up"
process_event = "nope"
remote_system = "hub2"

[[inbound_flow]]
name = "From nobody"
process_event = "incident"
table = "incident"

[[inbound_flow]]
name = "From shops"
process_event = "incident"
remote_group = "shops"
table = "incident"
"#;
        let shown = SyncConfig::parse("hub.toml", &text)
            .unwrap_err()
            .to_string();
        for expected in [
            "outbound_flow `To stores` names both remote_system `x` and remote_group `shops`",
            "remote_group `others`: member: flow `Up` names a remote system or group",
            "inbound_flow `From nobody` names no remote_system (or remote_group)",
            "inbound_flow `From shops` refers to remote_group `shops`, which is not defined in this file",
        ] {
            assert!(shown.contains(expected), "{expected} in {shown}");
        }
        let template = r#"
[[remote_group]]
name = "stores"

[[remote_group.member.outbound_flow]]
name = "Up"
process_event = "nope"
"#;
        let shown = SyncConfig::parse("hub.toml", template)
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("hub.toml:2: remote_group `stores`: member: outbound_flow `Up` refers to process_event `nope`"),
            "{shown}"
        );
    }
}
