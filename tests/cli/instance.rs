//! init, serve, the store lock, health, TLS and shutdown.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{BIN, Instance};

#[test]
fn init_creates_an_instance_once() {
    let instance = Instance::init("edge-1");
    assert!(instance.fingerprint.starts_with("sha256:") && instance.fingerprint.len() == 71);
    let token_file = instance.path().join("admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin token must be private");
    assert!(instance.token().starts_with("pst_"));
    let db_mode = std::fs::metadata(instance.path().join("procsync.redb"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(db_mode, 0o600, "the store holds the private key");

    let before = std::fs::read(instance.path().join("procsync.redb")).unwrap();
    let out = Command::new(BIN)
        .args(["init", "--name", "again", "--data"])
        .arg(instance.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("an instance already exists"), "{stderr}");
    assert_eq!(
        before,
        std::fs::read(instance.path().join("procsync.redb")).unwrap(),
        "init touched the existing store"
    );
    assert_eq!(
        instance.token(),
        std::fs::read_to_string(&token_file).unwrap().trim()
    );
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(instance.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already in use by another procsync process"),
        "{stderr}"
    );
    // The first server still answers.
    instance.ok(&["record", "list", "incident"]);
}

#[test]
fn serving_without_an_instance_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("procsync init"));
}

#[test]
fn non_loopback_admin_requires_tls() {
    let instance = Instance::init("edge-1");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--admin-listen",
            "0.0.0.0:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(instance.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.tls = true"));
}

#[test]
fn the_admin_api_over_tls_pins_the_instance_certificate() {
    let instance = Instance::init("edge-1");
    let config = instance.file(
        "server.toml",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntls = true\n",
    );
    let _server = instance.serve_with(&["--config", config.to_str().unwrap()]);
    let cert = instance.path().join("instance.crt");
    let out = instance.ok(&[
        "record",
        "list",
        "incident",
        "--json",
        "--tls-cert",
        cert.to_str().unwrap(),
    ]);
    assert_eq!(out.trim(), "[]");
    // Plain text against a TLS listener fails clearly.
    let err = instance.fails(&["record", "list", "incident"]);
    assert!(!err.is_empty());
    // HTTP/1.1 over the same TLS port (what Prometheus scrapers speak).
    let answer = https_get_http1(&instance.admin_address(), &cert, "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
}

/// One HTTP/1.1 GET over TLS, trusting only `cert`; the whole answer.
fn https_get_http1(address: &str, cert: &std::path::Path, path: &str) -> String {
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(cert).unwrap();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(der.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = address.rsplit_once(':').unwrap().0.to_string();
    let name = rustls::pki_types::ServerName::try_from(host).unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(address).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    // The server may end without close_notify; what arrived is the answer.
    let _ = tls.read_to_end(&mut answer);
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    String::from_utf8_lossy(&answer).to_string()
}

#[test]
fn sigterm_shuts_down_cleanly_and_health_answers() {
    let instance = Instance::init("edge-1");
    let mut server = instance.serve();
    let target = instance.target(&instance.token());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", target.address))
            .unwrap()
            .connect()
            .await
            .unwrap();
        // Reflection lists the admin service, so grpcurl-style tools work.
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected reflection answer {answer:?}");
        };
        let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            services.contains(&"procsync.admin.v1.Admin".to_string()),
            "{services:?}"
        );
        assert!(
            services.contains(&"grpc.health.v1.Health".to_string()),
            "{services:?}"
        );
        assert!(
            !services.iter().any(|s| s.contains("peer")),
            "the admin port lists only what it serves: {services:?}"
        );

        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "procsync.admin.v1.Admin".to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    });
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let exit = server.stop();
    assert!(exit.success(), "serve exited with {exit}");
    let logs = instance.logs();
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("the store is closed"), "{logs}");
    assert!(!instance.path().join("admin.addr").exists());
}
