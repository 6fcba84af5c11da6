//! Fixtures for unit tests that need a real store: a temporary instance
//! with the users and definitions of one link to a remote system `hub`
//! (nobody answers for it), and helpers that queue items on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::Domain;
use crate::ids::{new_sys_id, now_millis};
use crate::record::{Operation, RecordWrite};
use crate::store::{Actor, RecordWriteLimits, RemoteState, Store};
use crate::user::{Role, User};

/// Incidents captured for `hub` and applied from it.
const DEFINITIONS: &str = r#"
[[definition]]
name = "Incidents"

[[process_event]]
name = "incident_sync"
definition = "Incidents"

[[capture]]
name = "Capture incidents"
process_event = "incident_sync"
table = "incident"
fields = ["short_description", "state"]

[[remote_system]]
name = "hub"
endpoint = "https://127.0.0.1:9"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
inbound_api_user = "api_user"
run_as = "runas_user"

[[outbound_flow]]
name = "Incidents to hub"
process_event = "incident_sync"
remote_system = "hub"

[[inbound_flow]]
name = "Incidents from hub"
process_event = "incident_sync"
remote_system = "hub"
table = "incident"
"#;

/// A store in a temporary directory (removed when the guard drops), with
/// the definitions above applied and `hub` Active both ways.
pub async fn linked_store() -> (tempfile::TempDir, Arc<Store>) {
    let (dir, store) = crate::store::test_support::scratch_store("edge");
    let store = Arc::new(store);
    for (name, role) in [
        ("api_user", Role::ProcessSyncApi),
        ("runas_user", Role::ProcessSyncRunAs),
    ] {
        let user = User {
            sys_id: new_sys_id(),
            name: name.to_string(),
            roles: vec![role],
            domain: Domain::global(),
            created_on: now_millis(),
            token_hashes: Vec::new(),
        };
        store
            .add_user(user, format!("{name}-token"))
            .await
            .expect("the user is added");
    }
    let config = crate::config::sync::SyncConfig::parse("test.toml", DEFINITIONS)
        .expect("the definitions parse");
    store
        .apply_config(config, Domain::global(), Default::default())
        .await
        .expect("the definitions apply");
    // As `procsync remote validate hub` leaves it.
    store
        .set_remote_states(
            "hub".to_string(),
            Some(RemoteState::Active),
            Some(RemoteState::Active),
        )
        .await
        .expect("the remote is made Active");
    (dir, store)
}

/// Creates `count` incidents as `admin`: each queues one item for `hub`.
pub async fn create_incidents(store: &Store, count: usize) {
    let writes = (0..count)
        .map(|n| RecordWrite {
            operation: Operation::Create,
            table: "incident".to_string(),
            sys_id: None,
            fields: BTreeMap::from([
                ("short_description".to_string(), format!("incident {n}")),
                ("state".to_string(), "1".to_string()),
            ]),
            journal: Vec::new(),
            attachments: Default::default(),
        })
        .collect();
    let actor = Actor {
        user: "admin".to_string(),
        domain: Domain::global(),
    };
    let limits = RecordWriteLimits {
        max_record_bytes: 1 << 20,
    };
    store
        .write_records(actor, writes, limits)
        .await
        .expect("the incidents are written");
}
