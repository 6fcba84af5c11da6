//! Process sync definitions: validate offline, apply, export.

use crate::support::{DEFINITIONS, Instance, apply_definitions};

#[test]
fn validate_reports_every_problem_with_file_and_line() {
    let instance = Instance::init("edge-1");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sync.example.toml");
    let out = instance.ok(&["config", "validate", example]);
    assert!(out.contains("valid process sync definitions"), "{out}");
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/procsync.toml");
    let out = instance.ok(&["config", "validate", server]);
    assert!(out.contains("a valid server config"), "{out}");

    let broken = DEFINITIONS
        .replace(
            "filter = \"priority<=2^ORurgency=1\"",
            "filter = \"priority<=2^ORurgency~1\"",
        )
        .replace(
            "remote_system = \"other\"\n",
            "remote_system = \"nowhere\"\n",
        )
        .replace(
            "name = \"Incidents to hub\"",
            "name = \"Incidents to other\"",
        );
    let file = instance.file("broken.toml", &broken);
    let err = instance.fails(&["config", "validate", file.to_str().unwrap()]);
    let shown = file.display().to_string();
    assert!(
        err.contains(&format!("{shown}:14: capture `Capture incidents`: filter")),
        "{err}"
    );
    assert!(err.contains("position 22"), "{err}");
    assert!(
        err.contains("duplicate outbound_flow name `Incidents to other`"),
        "{err}"
    );
    assert!(err.contains("refers to remote_system `nowhere`"), "{err}");
    assert!(err.contains("3 problem(s) found"), "{err}");

    let file = instance.file("bad.toml", "[[capture]]\nname = \"c\"\norder = \"first\"\n");
    let err = instance.fails(&["config", "validate", file.to_str().unwrap()]);
    assert!(err.contains("bad.toml:3: invalid TOML"), "{err}");
    let file = instance.file(
        "server.toml",
        "[admin]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n",
    );
    let err = instance.fails(&["config", "validate", file.to_str().unwrap()]);
    assert!(
        err.contains("server.toml:3:") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn apply_is_idempotent_by_name_and_export_round_trips() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    let file = instance.file("defs.toml", DEFINITIONS);
    let path = file.to_str().unwrap();

    // Users the remote systems name must exist; nothing is applied before.
    let err = instance.fails(&["apply", path]);
    assert!(
        err.contains("inbound_api_user `api_user` is not a user of this instance"),
        "{err}"
    );
    assert!(
        err.contains("procsync user add api_user --roles process_sync_api"),
        "{err}"
    );
    assert!(instance.ok(&["export"]).trim().is_empty());

    apply_definitions(&instance);
    let remotes: serde_json::Value =
        serde_json::from_str(&instance.ok(&["remote", "list", "--json"])).unwrap();
    let remotes = remotes.as_array().unwrap();
    assert_eq!(remotes.len(), 2);
    for remote in remotes {
        assert_eq!(remote["outbound_state"], "Disabled", "{remote}");
        assert_eq!(remote["inbound_state"], "Disabled", "{remote}");
        assert_eq!(remote["sys_id"].as_str().unwrap().len(), 32);
    }
    let hub_sys_id = remotes[0]["sys_id"].clone();
    let again = instance.ok(&["apply", path]);
    assert!(again.contains("unchanged"), "{again}");

    let changed = DEFINITIONS
        .replace("fields = [\"short_description\", \"state\", \"priority\"]", "fields = [\"short_description\", \"state\"]")
        .replace("[[inbound_flow]]\nname = \"Incidents from hub\"\nprocess_event = \"incident_sync\"\nremote_system = \"hub\"\ntable = \"incident\"\n", "");
    let file2 = instance.file("defs2.toml", &changed);
    let out = instance.ok(&["apply", file2.to_str().unwrap()]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "changed capture `Capture incidents`",
            "removed inbound_flow `Incidents from hub`"
        ],
        "{out}"
    );

    let remotes: serde_json::Value =
        serde_json::from_str(&instance.ok(&["remote", "list", "--json"])).unwrap();
    assert_eq!(
        remotes[0]["sys_id"], hub_sys_id,
        "a changed apply keeps the identity of unchanged objects"
    );
    let table = instance.ok(&["remote", "list"]);
    assert!(
        table.starts_with("NAME") && table.contains("Disabled"),
        "{table}"
    );

    let exported = instance.ok(&["export"]);
    let exported_file = instance.file("exported.toml", &exported);
    instance.ok(&["config", "validate", exported_file.to_str().unwrap()]);
    let out = instance.ok(&["apply", exported_file.to_str().unwrap()]);
    assert!(
        out.contains("unchanged"),
        "export must describe exactly what is applied: {out}"
    );
    let first = procsync::config::sync::SyncConfig::parse("a", &changed).unwrap();
    let second = procsync::config::sync::SyncConfig::parse("b", &exported).unwrap();
    assert_eq!(first.objects().len(), second.objects().len());

    // An invalid file applies nothing and names the problem.
    let bad = instance.file(
        "bad.toml",
        &changed.replace("table = \"incident\"", "table = \"In Cident\""),
    );
    let err = instance.fails(&["apply", bad.to_str().unwrap()]);
    assert!(err.contains("table name `In Cident` is invalid"), "{err}");
    assert_eq!(instance.ok(&["export"]), exported);
}
