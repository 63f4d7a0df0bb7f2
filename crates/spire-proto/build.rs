//! Compiles the project's own `.proto` files (repository root `proto/`) with protox and
//! generates prost messages plus tonic clients and servers. No system `protoc` is needed.
//!
//! Also writes the encoded `FileDescriptorSet` (imports included, source info stripped) to
//! `$OUT_DIR/spire_proto_descriptor.bin` for gRPC server reflection.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_root = proto_root
        .canonicalize()
        .map_err(|e| format!("proto directory {} not found: {e}", proto_root.display()))?;
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut files = Vec::new();
    collect_protos(&proto_root, &proto_root, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files under {}", proto_root.display()).into());
    }

    let fds = protox::compile(&files, [&proto_root])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut stripped = fds.clone();
    for file in &mut stripped.file {
        file.source_code_info = None;
    }
    fs::write(
        out_dir.join("spire_proto_descriptor.bin"),
        stripped.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

/// Collects every `.proto` file below `dir`, as paths relative to `root`.
fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}
