//! Compiles `proto/cicada.proto` into Rust with protox (a protobuf compiler in Rust, so no `protoc` binary is
//! needed) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cicada.proto");
    let descriptors = protox::compile(["proto/cicada.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Payloads travel as `bytes::Bytes`: handing them to the embedding code copies nothing.
        .bytes(".")
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
