//! What the command line says when it cannot do what was asked: each kind
//! of failure an operator meets (no instance, not running, wrong token,
//! wrong address, a TLS mismatch, malformed arguments), checked by its
//! first line, and never a Rust debug dump.

use crate::support::{Instance, free_port};

/// The first line of what `procsync ARGS` printed on failure, after
/// checking the whole message reads as sentences.
fn first_line(instance: &Instance, args: &[&str]) -> String {
    let error = instance.fails(args);
    for dump in ["Os {", "Error {", "kind:", "Some(", "Status {", "source:"] {
        assert!(!error.contains(dump), "a debug dump in: {error}");
    }
    error.lines().next().unwrap_or_default().to_string()
}

#[test]
fn each_failure_the_cli_meets_says_what_failed_and_what_to_do() {
    let plain = Instance::init("plain");
    let dir = plain.path().display().to_string();

    // The instance exists but nobody serves it.
    let line = first_line(&plain, &["record", "list", "incident"]);
    assert_eq!(
        line,
        format!(
            "error: the instance in {dir} is not running (`procsync serve` writes {dir}/admin.addr while it runs); start it with `procsync serve --data {dir}`, or pass --addr"
        )
    );
    // No instance there at all.
    let nowhere = plain.path().join("nowhere");
    let line = first_line(
        &plain,
        &[
            "record",
            "list",
            "incident",
            "--data",
            nowhere.to_str().unwrap(),
        ],
    );
    assert!(
        line.contains("holds no procsync instance; create one with `procsync init --data"),
        "{line}"
    );

    let _server = plain.serve();
    // A wrong token.
    let line = first_line(
        &plain,
        &["record", "list", "incident", "--token", "not-a-token"],
    );
    assert!(
        line.starts_with("error: not authenticated: the API token is not valid"),
        "{line}"
    );

    // Wrong addresses: nothing listening, a name that does not resolve, not an address.
    let port = free_port().to_string();
    let address = format!("127.0.0.1:{port}");
    let line = first_line(&plain, &["record", "list", "incident", "--addr", &address]);
    assert_eq!(
        line,
        format!(
            "error: cannot reach the procsync admin API at {address}: nothing accepts connections there; start `procsync serve`, or check the address (--addr, PROCSYNC_ADDR, or the admin.addr file in the data directory)"
        )
    );
    let line = first_line(
        &plain,
        &[
            "record",
            "list",
            "incident",
            "--addr",
            "nosuchhost.invalid:7480",
        ],
    );
    assert!(
        line.ends_with("the host name does not resolve; check --addr or PROCSYNC_ADDR"),
        "{line}"
    );
    let line = first_line(&plain, &["record", "list", "incident", "--addr", "a b:c"]);
    assert!(
        line.ends_with("that is not an address of the form HOST:PORT (for example 127.0.0.1:7480)"),
        "{line}"
    );

    // TLS where the admin API is plain, and the other way round.
    let cert = plain.path().join("instance.crt");
    let cert = cert.to_str().unwrap();
    let line = first_line(&plain, &["record", "list", "incident", "--tls-cert", cert]);
    assert!(line.ends_with("it does not speak TLS; leave out --tls-cert (the admin API is plain on loopback unless admin.tls = true)"), "{line}");
    let tls = Instance::init("tls");
    let config = tls.file(
        "server.toml",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntls = true\n",
    );
    let _tls_server = tls.serve_with(&["--config", config.to_str().unwrap()]);
    let line = first_line(&tls, &["record", "list", "incident"]);
    // (The words in brackets depend on timing: the connection closed, or
    // TLS records read as broken HTTP/2 frames.)
    assert!(
        line.starts_with("error: the admin API broke off the call without an answer ("),
        "{line}"
    );
    assert!(
        line.ends_with("); if it serves TLS (admin.tls = true), pass --tls-cert with the instance's instance.crt"),
        "{line}"
    );
    // Another instance's certificate, and a file that holds none.
    let line = first_line(&tls, &["record", "list", "incident", "--tls-cert", cert]);
    assert!(
        line.contains("its certificate does not match the one given with --tls-cert"),
        "{line}"
    );
    let line = first_line(
        &tls,
        &[
            "record",
            "list",
            "incident",
            "--tls-cert",
            config.to_str().unwrap(),
        ],
    );
    assert!(line.ends_with("holds no PEM certificate; pass the instance's instance.crt (from its data directory) with --tls-cert"), "{line}");

    // Malformed arguments.
    let line = first_line(&plain, &["record", "get"]);
    assert_eq!(
        line,
        "error: the following required arguments were not provided:"
    );
    let line = first_line(&plain, &["queue", "outbound", "list", "--limit", "many"]);
    assert!(
        line.starts_with("error: invalid value 'many' for '--limit <LIMIT>'"),
        "{line}"
    );
    let line = first_line(&plain, &["recrod", "list"]);
    assert!(
        line.starts_with("error: unrecognized subcommand 'recrod'"),
        "{line}"
    );
}
