//! Compiles the patchgap.v1 protos with protox (pure Rust, no protoc on the
//! build machine) and generates prost types and tonic services from them.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/patchgap/v1/inventory.proto",
        "proto/patchgap/v1/ingest.proto",
        "proto/patchgap/v1/verify.proto",
        "proto/patchgap/v1/incident.proto",
        "proto/patchgap/v1/gate.proto",
        "proto/patchgap/v1/deliver.proto",
        "proto/patchgap/v1/egress.proto",
        "proto/patchgap/v1/query.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // The descriptor set feeds gRPC server reflection.
    std::fs::write(
        out.join("patchgap_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
