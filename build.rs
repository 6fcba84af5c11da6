//! Compiles `proto/` with protox (pure Rust, no `protoc` needed) and writes the
//! encoded descriptor set that the gRPC reflection service serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/procsync/admin/v1/admin.proto",
        "proto/procsync/peer/v1/peer.proto",
    ];
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("procsync_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
