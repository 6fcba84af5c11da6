//! Records and journals through the CLI, and bad input.

use serde_json::Value;

use crate::support::Instance;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn records_round_trip_through_the_cli() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    let sys_id = instance
        .ok(&[
            "record",
            "create",
            "incident",
            "short_description=Printer on fire",
            "state=1",
        ])
        .trim()
        .to_string();
    assert_eq!(sys_id.len(), 32);
    let other = instance
        .ok(&[
            "record",
            "create",
            "incident",
            "--json",
            r#"{"short_description": "Mouse broken", "state": 2, "active": true}"#,
        ])
        .trim()
        .to_string();

    let record = json(&instance.ok(&["record", "get", "incident", &sys_id, "--json"]));
    let fields = &record["fields"];
    assert_eq!(fields["short_description"], "Printer on fire");
    assert_eq!(fields["state"], "1");
    assert_eq!(fields["sys_id"], sys_id.as_str());
    assert_eq!(fields["sys_created_by"], "admin");
    assert_eq!(fields["sys_updated_by"], "admin");
    assert_eq!(fields["sys_mod_count"], "0");
    assert_eq!(fields["sys_domain"], "global");
    assert_eq!(fields["sys_created_on"].as_str().unwrap().len(), 19);

    instance.ok(&[
        "record",
        "update",
        "incident",
        &sys_id,
        "state=2",
        "short_description=",
    ]);
    instance.ok(&[
        "journal",
        "add",
        "incident",
        &sys_id,
        "comments",
        "Fire is out",
    ]);
    instance.ok(&[
        "journal",
        "add",
        "incident",
        &sys_id,
        "work_notes",
        "Replaced the fuser",
    ]);
    let record = json(&instance.ok(&["record", "get", "incident", &sys_id, "--json"]));
    assert_eq!(record["fields"]["state"], "2");
    assert!(
        record["fields"].get("short_description").is_none(),
        "an empty value clears the field"
    );
    assert_eq!(record["fields"]["sys_mod_count"], "3");
    let journal = record["journal"].as_array().unwrap();
    assert_eq!(journal.len(), 2);
    assert_eq!(journal[0]["field"], "comments");
    assert_eq!(journal[0]["text"], "Fire is out");
    assert_eq!(journal[0]["author"], "admin");
    assert_eq!(journal[1]["field"], "work_notes");
    let text = instance.ok(&["record", "get", "incident", &sys_id]);
    assert!(
        text.contains("[comments]") && text.contains("Fire is out"),
        "{text}"
    );

    let listed =
        json(&instance.ok(&["record", "list", "incident", "--query", "state=2", "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let listed = json(&instance.ok(&[
        "record",
        "list",
        "incident",
        "--query",
        "short_descriptionLIKEmouse",
        "--json",
    ]));
    assert_eq!(listed[0]["fields"]["sys_id"], other.as_str());
    assert_eq!(listed[0]["fields"]["active"], "true");
    let limited = json(&instance.ok(&["record", "list", "incident", "--limit", "1", "--json"]));
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let table = instance.ok(&["record", "list", "incident"]);
    assert!(
        table.lines().next().unwrap().starts_with("sys_id"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");

    instance.ok(&["record", "delete", "incident", &sys_id]);
    let err = instance.fails(&["record", "get", "incident", &sys_id]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn bulk_import_goes_through_the_batch_call() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    let lines: String = (0..2500)
        .map(|i| format!("{{\"number\": \"INC{i:05}\", \"state\": 1}}\n"))
        .collect();
    let file = instance.file("bulk.jsonl", &lines);
    let out = instance.ok(&[
        "record",
        "import",
        "incident",
        file.to_str().unwrap(),
        "--batch",
        "1000",
    ]);
    assert!(out.contains("imported 2500"), "{out}");
    let listed = json(&instance.ok(&["record", "list", "incident", "--limit", "5000", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2500);
}

#[test]
fn bad_input_is_rejected_with_a_reason_and_nothing_is_written() {
    let instance = Instance::init("edge-1");
    let config = instance.file("server.toml", "[limits]\nmax_record_bytes = 1000\n");
    let _server = instance.serve_with(&["--config", config.to_str().unwrap()]);

    let err = instance.fails(&["record", "create", "incident", "--json", "{\"state\": 1,"]);
    assert!(err.contains("malformed JSON at line 1"), "{err}");
    let err = instance.fails(&["record", "create", "incident", "--json", "[1, 2]"]);
    assert!(err.contains("must be an object"), "{err}");

    let big = format!("description={}", "x".repeat(2000));
    let err = instance.fails(&["record", "create", "incident", &big]);
    assert!(
        err.contains("over the limit of 1000 bytes") && err.contains("max_record_bytes"),
        "{err}"
    );

    let err = instance.fails(&["record", "create", "incident", "sys_created_by=mallory"]);
    assert!(err.contains("maintained by the instance"), "{err}");
    let err = instance.fails(&["record", "create", "Incident Table", "a=b"]);
    assert!(
        err.contains("table name `Incident Table` is invalid"),
        "{err}"
    );
    let err = instance.fails(&["record", "list", "incident", "--query", "state=1^^x=2"]);
    assert!(err.contains("position 9"), "{err}");
    let err = instance.fails(&["record", "update", "incident", &"a".repeat(32), "state=1"]);
    assert!(err.contains("not found"), "{err}");

    // One bad record in a batch rejects the whole batch.
    let file = instance.file(
        "bulk.jsonl",
        "{\"state\": 1}\n{\"Bad Field\": 2}\n{\"state\": 3}\n",
    );
    let err = instance.fails(&["record", "import", "incident", file.to_str().unwrap()]);
    assert!(
        err.contains("write 2 of 3") && err.contains("Bad Field"),
        "{err}"
    );

    let listed = json(&instance.ok(&["record", "list", "incident", "--json"]));
    assert_eq!(
        listed.as_array().unwrap().len(),
        0,
        "nothing may have been written"
    );
    // The server is still up and writes work.
    instance.ok(&["record", "create", "incident", "state=1"]);
}
