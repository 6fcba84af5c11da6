//! Tokens, roles and domain separation.

use serde_json::Value;

use crate::support::{Instance, as_user};

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn wrong_tokens_and_missing_roles_are_refused() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();

    let err = stderr(&as_user(
        &instance,
        "pst_not_a_real_token",
        &["record", "list", "incident"],
    ));
    assert!(
        err.contains("not authenticated") && err.contains("not valid"),
        "{err}"
    );

    let api_token = instance
        .ok(&["user", "add", "peer_api", "--roles", "process_sync_api"])
        .trim()
        .to_string();
    let err = stderr(&as_user(
        &instance,
        &api_token,
        &["record", "create", "incident", "a=b"],
    ));
    assert!(
        err.contains("permission denied") && err.contains("may not read and write records"),
        "{err}"
    );
    let err = stderr(&as_user(&instance, &api_token, &["user", "list"]));
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&instance.ok(&["record", "list", "incident", "--json"]))
            .unwrap(),
        Value::Array(vec![]),
        "the refused write wrote nothing"
    );

    // Granting a role takes effect at once; a new token replaces the old.
    instance.ok(&[
        "user",
        "roles",
        "peer_api",
        "process_sync_api",
        "process_sync",
    ]);
    stdout(&as_user(
        &instance,
        &api_token,
        &["record", "create", "incident", "a=b"],
    ));
    let new_token = instance
        .ok(&["user", "token", "peer_api"])
        .trim()
        .to_string();
    let err = stderr(&as_user(
        &instance,
        &api_token,
        &["record", "list", "incident"],
    ));
    assert!(err.contains("not authenticated"), "{err}");
    stdout(&as_user(
        &instance,
        &new_token,
        &["record", "list", "incident"],
    ));

    let err = instance.fails(&["user", "add", "peer_api", "--roles", "admin"]);
    assert!(err.contains("already exists"), "{err}");
    let err = instance.fails(&["user", "add", "x", "--roles", "superuser"]);
    assert!(err.contains("unknown role `superuser`"), "{err}");

    let users: Value = serde_json::from_str(&instance.ok(&["user", "list", "--json"])).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "peer_api"]);
    let table = instance.ok(&["user", "list"]);
    assert!(table.contains("process_sync,process_sync_api"), "{table}");
}

#[test]
fn users_see_and_write_only_their_domain_subtree() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    let acme = instance.add_user("acme_agent", "process_sync", Some("global/acme"));
    let acme_admin = instance.add_user("acme_admin", "admin", Some("global/acme"));

    let global_record = instance
        .ok(&["record", "create", "incident", "title=global one"])
        .trim()
        .to_string();
    let emea_record = instance
        .ok(&[
            "record",
            "create",
            "incident",
            "title=emea one",
            "sys_domain=global/acme/emea",
        ])
        .trim()
        .to_string();
    let acme_record = stdout(&as_user(
        &instance,
        &acme,
        &["record", "create", "incident", "title=acme one"],
    ))
    .trim()
    .to_string();

    let seen: Value = serde_json::from_str(&stdout(&as_user(
        &instance,
        &acme,
        &["record", "list", "incident", "--json"],
    )))
    .unwrap();
    let mut titles: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fields"]["title"].as_str().unwrap())
        .collect();
    titles.sort();
    assert_eq!(titles, ["acme one", "emea one"]);
    let record: Value = serde_json::from_str(&stdout(&as_user(
        &instance,
        &acme,
        &["record", "get", "incident", &acme_record, "--json"],
    )))
    .unwrap();
    assert_eq!(record["fields"]["sys_domain"], "global/acme");

    let err = stderr(&as_user(
        &instance,
        &acme,
        &["record", "get", "incident", &global_record],
    ));
    assert!(err.contains("not found"), "{err}");
    let err = stderr(&as_user(
        &instance,
        &acme,
        &["record", "update", "incident", &global_record, "title=mine"],
    ));
    assert!(err.contains("not found"), "{err}");
    let err = stderr(&as_user(
        &instance,
        &acme,
        &["record", "create", "incident", "sys_domain=global"],
    ));
    assert!(err.contains("outside your domain"), "{err}");
    stdout(&as_user(
        &instance,
        &acme,
        &[
            "record",
            "update",
            "incident",
            &emea_record,
            "title=emea two",
        ],
    ));

    // An admin of a subtree manages only users in it.
    let err = stderr(&as_user(
        &instance,
        &acme_admin,
        &["user", "add", "x", "--domain", "global"],
    ));
    assert!(err.contains("outside your domain"), "{err}");
    let users: Value = serde_json::from_str(&stdout(&as_user(
        &instance,
        &acme_admin,
        &["user", "list", "--json"],
    )))
    .unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme_admin", "acme_agent"]);
    let err = stderr(&as_user(
        &instance,
        &acme_admin,
        &["user", "token", "admin"],
    ));
    assert!(err.contains("not found"), "{err}");
}
