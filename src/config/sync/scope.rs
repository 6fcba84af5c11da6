//! Which domain each process sync object belongs to, so that an admin of a
//! domain applies, exports and removes only the objects of its subtree. A
//! definition names its domain; a process event is in its definition's
//! domain; a capture and a flow in their process event's; a remote system
//! names its own (`global` unless it says). Pure: no storage.

use super::SyncConfig;
use crate::domain::Domain;

/// One object of a config with the domain it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scoped {
    pub kind: &'static str,
    pub name: String,
    pub domain: Domain,
}

impl SyncConfig {
    /// The domain of process event `event`: its definition's, `global` when
    /// either is unknown.
    pub fn domain_of_event(&self, event: &str) -> Domain {
        self.definition_of_event(event)
            .map(|d| d.domain.clone())
            .unwrap_or_else(Domain::global)
    }

    /// Every object with its domain; references resolve in `self` first,
    /// then in `also` (the objects kept beside a partial file).
    pub fn scoped(&self, also: &SyncConfig) -> Vec<Scoped> {
        let event_domain = |event: &str| {
            if self.process_events.iter().any(|e| e.name == event) {
                let definition = self
                    .process_events
                    .iter()
                    .find(|e| e.name == event)
                    .map(|e| e.definition.as_str())
                    .unwrap_or_default();
                self.definitions
                    .iter()
                    .chain(&also.definitions)
                    .find(|d| d.name == definition)
                    .map(|d| d.domain.clone())
                    .unwrap_or_else(Domain::global)
            } else {
                also.domain_of_event(event)
            }
        };
        let mut out = Vec::new();
        let mut push = |kind: &'static str, name: &str, domain: Domain| {
            out.push(Scoped {
                kind,
                name: name.to_string(),
                domain,
            })
        };
        for o in &self.definitions {
            push("definition", &o.name, o.domain.clone());
        }
        for o in &self.process_events {
            push("process_event", &o.name, event_domain(&o.name));
        }
        for o in &self.captures {
            push("capture", &o.name, event_domain(&o.process_event));
        }
        for o in &self.remote_systems {
            push("remote_system", &o.name, o.domain.clone());
        }
        for o in &self.remote_groups {
            push("remote_group", &o.name, o.domain.clone());
        }
        for o in &self.outbound_flows {
            push("outbound_flow", &o.name, event_domain(&o.process_event));
        }
        for o in &self.inbound_flows {
            push("inbound_flow", &o.name, event_domain(&o.process_event));
        }
        out
    }

    /// The objects of `self` in `domain`'s subtree, and the others.
    pub fn split_by_domain(&self, domain: &Domain) -> (SyncConfig, SyncConfig) {
        let inside: std::collections::HashSet<(&str, String)> = self
            .scoped(&SyncConfig::default())
            .into_iter()
            .filter(|s| s.domain.is_within(domain))
            .map(|s| (s.kind, s.name))
            .collect();
        let mut split = (SyncConfig::default(), SyncConfig::default());
        fn sort<T: Clone>(
            items: &[T],
            kind: &'static str,
            name: impl Fn(&T) -> &str,
            inside: &std::collections::HashSet<(&str, String)>,
            into: (&mut Vec<T>, &mut Vec<T>),
        ) {
            for item in items {
                if inside.contains(&(kind, name(item).to_string())) {
                    into.0.push(item.clone());
                } else {
                    into.1.push(item.clone());
                }
            }
        }
        let (a, b) = &mut split;
        sort(
            &self.definitions,
            "definition",
            |o| &o.name,
            &inside,
            (&mut a.definitions, &mut b.definitions),
        );
        sort(
            &self.process_events,
            "process_event",
            |o| &o.name,
            &inside,
            (&mut a.process_events, &mut b.process_events),
        );
        sort(
            &self.captures,
            "capture",
            |o| &o.name,
            &inside,
            (&mut a.captures, &mut b.captures),
        );
        sort(
            &self.remote_systems,
            "remote_system",
            |o| &o.name,
            &inside,
            (&mut a.remote_systems, &mut b.remote_systems),
        );
        sort(
            &self.remote_groups,
            "remote_group",
            |o| &o.name,
            &inside,
            (&mut a.remote_groups, &mut b.remote_groups),
        );
        sort(
            &self.outbound_flows,
            "outbound_flow",
            |o| &o.name,
            &inside,
            (&mut a.outbound_flows, &mut b.outbound_flows),
        );
        sort(
            &self.inbound_flows,
            "inbound_flow",
            |o| &o.name,
            &inside,
            (&mut a.inbound_flows, &mut b.inbound_flows),
        );
        split
    }

    /// `self` followed by every object of `kept`: the whole config a partial
    /// file makes together with what stays.
    pub fn joined(mut self, kept: &SyncConfig) -> SyncConfig {
        self.definitions.extend(kept.definitions.iter().cloned());
        self.process_events
            .extend(kept.process_events.iter().cloned());
        self.captures.extend(kept.captures.iter().cloned());
        self.remote_systems
            .extend(kept.remote_systems.iter().cloned());
        self.remote_groups
            .extend(kept.remote_groups.iter().cloned());
        self.outbound_flows
            .extend(kept.outbound_flows.iter().cloned());
        self.inbound_flows
            .extend(kept.inbound_flows.iter().cloned());
        self
    }

    /// Why a file applied by an admin of `domain` may not hold what it
    /// holds beside `kept` (the stored objects outside that domain): one
    /// sentence per object that lies outside the domain or takes the name
    /// of one that does, with the object's kind and index in the file.
    /// Empty when the file stays inside.
    pub fn outside_of(
        &self,
        domain: &Domain,
        kept: &SyncConfig,
    ) -> Vec<(&'static str, usize, String)> {
        let kept_names: std::collections::HashSet<(&str, String)> = kept
            .scoped(&SyncConfig::default())
            .into_iter()
            .map(|s| (s.kind, s.name))
            .collect();
        let mut problems = Vec::new();
        let mut index_of_kind = std::collections::HashMap::new();
        for object in self.scoped(kept) {
            let index = index_of_kind.entry(object.kind).or_insert(0usize);
            let at = *index;
            *index += 1;
            let mut report = |message: String| problems.push((object.kind, at, message));
            if !object.domain.is_within(domain) {
                report(format!(
                    "{} `{}` is in domain `{}`, outside your domain `{domain}`: only an admin of that domain may change it",
                    object.kind, object.name, object.domain
                ));
            } else if kept_names.contains(&(object.kind, object.name.clone())) {
                report(format!(
                    "{} `{}` already exists in a domain outside yours (`{domain}`); choose another name",
                    object.kind, object.name
                ));
            }
        }
        problems
    }
}
