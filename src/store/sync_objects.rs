//! The process sync definitions as the instance holds them (remote systems,
//! definitions, events, captures, flows): reads, and `apply_config`, which
//! makes them equal a definitions file and rebuilds the capture rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::capture::CaptureIndex;
use crate::config::sync::{Enrolled, SyncConfig};
use crate::ids::{Millis, new_sys_id, now_millis};
use crate::user::{Role, User};

/// A stored process sync object with its identity and runtime state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSyncObject {
    pub sys_id: String,
    pub kind: String,
    pub name: String,
    pub spec: serde_json::Value,
    /// Remote systems only: Disabled until validated.
    #[serde(default)]
    pub outbound_state: Option<RemoteState>,
    #[serde(default)]
    pub inbound_state: Option<RemoteState>,
    /// Remote systems made by enrolment (`remote invite`, `remote join`):
    /// instance data that `apply` neither needs nor removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<Enrolled>,
    pub created_on: Millis,
    pub updated_on: Millis,
}

/// A remote system's outbound or inbound state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteState {
    Disabled,
    Active,
    Error,
}

impl RemoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteState::Disabled => "Disabled",
            RemoteState::Active => "Active",
            RemoteState::Error => "Error",
        }
    }
}

/// A remote system as configured, with its identity and states.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSystemStatus {
    pub sys_id: String,
    pub spec: crate::config::sync::RemoteSystem,
    pub outbound_state: RemoteState,
    pub inbound_state: RemoteState,
    /// How it was made, when by a join.
    pub enrolled: Option<Enrolled>,
}

impl RemoteSystemStatus {
    /// The user its inbound flows run as (`user_named` finds a user by
    /// name), when it exists and may write records; `None` leaves its
    /// items unapplied.
    pub fn run_as_user<'u>(
        &self,
        user_named: impl FnOnce(&str) -> Option<&'u User>,
    ) -> Option<&'u User> {
        user_named(&self.spec.run_as).filter(|u| u.may(crate::user::Permission::Records))
    }
}

/// The remote systems and the running definitions as last read, with the
/// generation of the process sync objects they were read at (bumped by
/// every job that changes them).
#[derive(Default)]
pub(super) struct RemotesCache {
    held: std::sync::Mutex<Held>,
    /// Held while reading, so the callers that find the cache empty at
    /// once (a thousand dispatchers after a change) read the store once.
    reading: std::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    generation: u64,
    remotes: Option<Arc<Remotes>>,
    config: Option<Arc<SyncConfig>>,
}

impl RemotesCache {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("remotes cache lock")
    }

    /// What `pick` finds held, or else what `read` reads, kept by `keep`
    /// unless a change was committed while it read.
    fn get_or_read<T>(
        &self,
        pick: impl Fn(&Held) -> Option<Arc<T>>,
        keep: impl FnOnce(&mut Held, Arc<T>),
        read: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        if let Some(held) = pick(&self.held()) {
            return Ok(held);
        }
        let _reading = self.reading.lock().expect("remotes reading lock");
        let generation = {
            let held = self.held();
            if let Some(found) = pick(&held) {
                return Ok(found);
            }
            held.generation
        };
        let read = Arc::new(read()?);
        let mut held = self.held();
        if held.generation == generation {
            keep(&mut held, read.clone());
        }
        Ok(read)
    }
}

/// The remote systems as read, and where each name is among them.
struct Remotes {
    all: Arc<Vec<RemoteSystemStatus>>,
    by_name: std::collections::HashMap<String, usize>,
}

impl Remotes {
    fn get(&self, name: &str) -> Option<RemoteSystemStatus> {
        self.by_name.get(name).map(|at| self.all[*at].clone())
    }
}

/// What `apply` did, each entry like ``capture `Capture requests` ``.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Fields of a remote system that, when changed, require validating it
/// again: its states go back to Disabled.
const REMOTE_IDENTITY_FIELDS: &[&str] =
    &["endpoint", "fingerprint", "external_id", "inbound_api_user"];

/// Whether a remote system's new spec pins a different certificate than
/// its old one did: a certificate is made once per instance at `init`, so
/// another one is another instance (one re-created under the same name).
fn pins_new_instance(old: &serde_json::Value, new: &serde_json::Value) -> bool {
    let pin = |spec: &serde_json::Value| {
        spec.get("fingerprint")
            .and_then(|f| f.as_str())
            .and_then(|f| crate::config::sync::normalize_fingerprint(f).ok())
    };
    matches!((pin(old), pin(new)), (Some(old), Some(new)) if old != new)
}

#[allow(
    clippy::too_many_lines,
    reason = "apply's scope check, diff and writes must read as one transaction"
)]
pub fn apply_config(txn: &mut Txn<'_>, config: SyncConfig) -> Result<ApplyReport, StoreError> {
    // Users named by remote systems must exist here.
    {
        let users = txn.open_table(USERS)?;
        let mut problems = Vec::new();
        for remote in &config.remote_systems {
            for (key, name, role) in [
                (
                    "inbound_api_user",
                    &remote.inbound_api_user,
                    Role::ProcessSyncApi,
                ),
                ("run_as", &remote.run_as, Role::ProcessSyncRunAs),
            ] {
                match users.get(name.as_str())? {
                    None => problems.push(format!(
                        "remote_system `{}`: {key} `{name}` is not a user of this instance; create it with `procsync user add {name} --roles {}`",
                        remote.name,
                        role.as_str()
                    )),
                    Some(value) => {
                        let user: User = decode(value.value())?;
                        if !user.roles.contains(&role) && !user.roles.contains(&Role::Admin) {
                            problems.push(format!(
                                "remote_system `{}`: {key} `{name}` lacks role {}; add it with `procsync user roles {name} {}`",
                                remote.name,
                                role.as_str(),
                                role.as_str()
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(StoreError::Invalid(problems.join("\n")));
        }
    }

    let mut table = txn.open_table(SYNC_OBJECTS)?;
    let (enrolled, stored): (Vec<StoredSyncObject>, Vec<StoredSyncObject>) =
        read_sync_objects(&table)?
            .into_iter()
            .partition(|o| o.enrolled.is_some());
    refuse_enrolled_clash(&config, &enrolled)?;
    let stored: BTreeMap<(String, String), StoredSyncObject> = stored
        .into_iter()
        .map(|o| ((o.kind.clone(), o.name.clone()), o))
        .collect();
    let now = now_millis();
    let mut report = ApplyReport::default();
    let mut wanted = std::collections::HashSet::new();
    for (kind, name, spec) in config.objects() {
        let label = format!("{kind} `{name}`");
        wanted.insert((kind.to_string(), name.clone()));
        let is_remote = kind == "remote_system";
        let object = match stored.get(&(kind.to_string(), name.clone())) {
            Some(old) if old.spec == spec => continue,
            Some(old) => {
                let identity_changed = is_remote
                    && REMOTE_IDENTITY_FIELDS
                        .iter()
                        .any(|field| old.spec.get(field) != spec.get(field));
                let new_instance = is_remote && pins_new_instance(&old.spec, &spec);
                if new_instance {
                    let released = super::correlations::release_correlations(txn, &name)?;
                    report.changed.push(format!(
                        "{label} (a different certificate: a new instance; {released} correlations with the old one released, its records will be created anew there)"
                    ));
                } else {
                    report.changed.push(label);
                }
                StoredSyncObject {
                    spec,
                    updated_on: now,
                    outbound_state: if identity_changed {
                        Some(RemoteState::Disabled)
                    } else {
                        old.outbound_state
                    },
                    inbound_state: if identity_changed {
                        Some(RemoteState::Disabled)
                    } else {
                        old.inbound_state
                    },
                    ..old.clone()
                }
            }
            None => {
                report.created.push(label);
                StoredSyncObject {
                    sys_id: new_sys_id(),
                    kind: kind.to_string(),
                    name: name.clone(),
                    spec,
                    outbound_state: is_remote.then_some(RemoteState::Disabled),
                    inbound_state: is_remote.then_some(RemoteState::Disabled),
                    enrolled: None,
                    created_on: now,
                    updated_on: now,
                }
            }
        };
        table.insert((kind, name.as_str()), encode(&object).as_slice())?;
    }
    for (kind, name) in stored.keys() {
        if !wanted.contains(&(kind.clone(), name.clone())) {
            table.remove((kind.as_str(), name.as_str()))?;
            report.removed.push(format!("{kind} `{name}`"));
        }
    }
    drop(table);
    let config = config.with_enrolled(enrolled_remotes(&enrolled)?);
    txn.capture = Arc::new(CaptureIndex::build(&config));
    super::match_index::follow(txn, txn.names, &txn.capture.matched())?;
    Ok(report)
}

pub(super) fn read_sync_objects(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Vec<StoredSyncObject>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, value) = row?;
        out.push(decode(value.value())?);
    }
    Ok(out)
}

/// The definitions as applied from files: every object but the remote
/// systems made by enrolment.
pub(super) fn definitions_of(objects: &[StoredSyncObject]) -> Result<SyncConfig, StoreError> {
    SyncConfig::from_objects(
        objects
            .iter()
            .filter(|o| o.enrolled.is_none())
            .map(|o| (o.kind.clone(), o.spec.clone())),
    )
    .map_err(|e| StoreError::Corrupt(format!("a stored process sync object does not decode: {e}")))
}

/// The remote systems made by enrolment, with how each was made.
pub(super) fn enrolled_remotes(
    objects: &[StoredSyncObject],
) -> Result<Vec<(crate::config::sync::RemoteSystem, Enrolled)>, StoreError> {
    objects
        .iter()
        .filter_map(|o| Some((o, o.enrolled.clone()?)))
        .map(|(o, how)| {
            let spec = serde_json::from_value(o.spec.clone()).map_err(|e| {
                StoreError::Corrupt(format!("remote system `{}` does not decode: {e}", o.name))
            })?;
            Ok((spec, how))
        })
        .collect()
}

/// The definitions as they run: the files' and the enrolled remote
/// systems, each member with its group's flows.
pub(super) fn sync_config_of(objects: &[StoredSyncObject]) -> Result<SyncConfig, StoreError> {
    Ok(definitions_of(objects)?.with_enrolled(enrolled_remotes(objects)?))
}

/// Refuses definitions that would take the name of an enrolled remote
/// system, or drop a group that still has members.
fn refuse_enrolled_clash(
    config: &SyncConfig,
    enrolled: &[StoredSyncObject],
) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    for object in enrolled {
        if config.remote_systems.iter().any(|r| r.name == object.name)
            || config.remote_groups.iter().any(|g| g.name == object.name)
        {
            problems.push(format!(
                "remote system `{}` was made by enrolment; give the one in the file another name (or `procsync remote remove {}` first)",
                object.name, object.name
            ));
        }
        if let Some(Enrolled::Member { group }) = &object.enrolled {
            if !config.remote_groups.iter().any(|g| &g.name == group) {
                problems.push(format!(
                    "remote_group `{group}` still has member `{}`; keep the group, or remove its members first (`procsync remote remove {}`)",
                    object.name, object.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.dedup();
        Err(StoreError::Invalid(problems.join("\n")))
    }
}

pub(super) fn read_sync_config(db: &super::handle::SharedDb) -> Result<SyncConfig, StoreError> {
    let txn = db.begin_read()?;
    let objects = read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?;
    sync_config_of(&objects)
}

impl Store {
    /// The process sync objects as stored, in (kind, name) order.
    pub fn sync_objects(&self) -> Result<Vec<StoredSyncObject>, StoreError> {
        let txn = self.db.begin_read()?;
        read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)
    }

    /// Every remote system with its states, by name.
    pub fn remote_systems(&self) -> Result<Vec<RemoteSystemStatus>, StoreError> {
        Ok(self.remote_systems_shared()?.as_ref().clone())
    }

    /// Every remote system with its states, shared: read from the store
    /// once per change of the process sync objects, so the many callers
    /// (each dispatcher, each peer call) do not decode them every time.
    pub fn remote_systems_shared(&self) -> Result<Arc<Vec<RemoteSystemStatus>>, StoreError> {
        Ok(self.remotes()?.all.clone())
    }

    fn remotes(&self) -> Result<Arc<Remotes>, StoreError> {
        self.remotes.get_or_read(
            |held| held.remotes.clone(),
            |held, remotes| held.remotes = Some(remotes),
            || {
                let all = self.read_remote_systems()?;
                let by_name = all
                    .iter()
                    .enumerate()
                    .map(|(at, remote)| (remote.spec.name.clone(), at))
                    .collect();
                Ok(Remotes {
                    all: Arc::new(all),
                    by_name,
                })
            },
        )
    }

    /// One remote system with its states.
    pub fn remote_system(&self, name: &str) -> Result<Option<RemoteSystemStatus>, StoreError> {
        Ok(self.remotes()?.get(name))
    }

    /// One remote system with its states if they are at hand without
    /// reading the store (`None`: call `remote_system`), for async code.
    pub fn cached_remote_system(&self, name: &str) -> Option<Option<RemoteSystemStatus>> {
        let held = self.remotes.held();
        held.remotes.as_ref().map(|remotes| remotes.get(name))
    }

    /// `remote_system` for async code: from the cache when at hand, else
    /// read off the async threads.
    pub async fn remote_system_async(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<RemoteSystemStatus>, StoreError> {
        if let Some(cached) = self.cached_remote_system(name) {
            return Ok(cached);
        }
        let (store, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || store.remote_system(&name)).await?
    }

    /// Forgets the remote systems and definitions read: a job changed them.
    pub(super) fn forget_remotes(&self) {
        let mut held = self.remotes.held();
        held.generation += 1;
        held.remotes = None;
        held.config = None;
    }

    fn read_remote_systems(&self) -> Result<Vec<RemoteSystemStatus>, StoreError> {
        self.sync_objects()?
            .into_iter()
            .filter(|o| o.kind == "remote_system")
            .map(|o| {
                let spec = serde_json::from_value(o.spec).map_err(|e| {
                    StoreError::Corrupt(format!("remote system `{}` does not decode: {e}", o.name))
                })?;
                Ok(RemoteSystemStatus {
                    sys_id: o.sys_id,
                    spec,
                    outbound_state: o.outbound_state.unwrap_or(RemoteState::Disabled),
                    inbound_state: o.inbound_state.unwrap_or(RemoteState::Disabled),
                    enrolled: o.enrolled,
                })
            })
            .collect()
    }

    /// The definitions as they run (the files' and the enrolled remote
    /// systems with their groups' flows).
    pub fn sync_config(&self) -> Result<SyncConfig, StoreError> {
        Ok(self.sync_config_shared()?.as_ref().clone())
    }

    /// `sync_config`, shared: read once per change, like the remote
    /// systems.
    pub fn sync_config_shared(&self) -> Result<Arc<SyncConfig>, StoreError> {
        self.remotes.get_or_read(
            |held| held.config.clone(),
            |held, config| held.config = Some(config),
            || read_sync_config(&self.db),
        )
    }

    /// The definitions as applied from files, without the remote systems
    /// made by enrolment: what `export` shows and `apply` replaces.
    pub fn definitions(&self) -> Result<SyncConfig, StoreError> {
        definitions_of(&self.sync_objects()?)
    }

    /// The remote systems made by enrolment, with how each was made.
    pub fn enrolled_remotes(
        &self,
    ) -> Result<Vec<(crate::config::sync::RemoteSystem, Enrolled)>, StoreError> {
        enrolled_remotes(&self.sync_objects()?)
    }

    /// Makes the stored process sync objects equal `config`, by name, for
    /// an admin of `domain` who read `kept` as the objects outside it:
    /// refused if those changed meanwhile.
    pub async fn apply_config(
        &self,
        config: SyncConfig,
        domain: crate::domain::Domain,
        kept: SyncConfig,
    ) -> Result<ApplyReport, StoreError> {
        let applied = self
            .writer
            .submit(move |txn| {
                let stored = definitions_of(&read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?)?;
                if stored.split_by_domain(&domain).1 != kept {
                    return Err(StoreError::DefinitionsChanged);
                }
                apply_config(txn, config)
            })
            .await;
        self.forget_remotes();
        applied
    }

    /// The inbound flow for `process_event` from `remote`, as last applied.
    pub fn inbound_flow(
        &self,
        process_event: &str,
        remote: &str,
    ) -> Option<crate::config::sync::InboundFlow> {
        self.writer
            .capture()
            .inbound_flow(process_event, remote)
            .cloned()
    }
}
