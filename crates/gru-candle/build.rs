//! Generates the ONNX protobuf types (`io::onnx`) from the vendored `proto/onnx.proto` with
//! protox, a protobuf compiler written in Rust: the build needs no system `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto compiles");
    // The proto's comments would become doc comments that rustdoc cannot check; the types
    // are documented by onnx.proto itself.
    prost_build::Config::new()
        .disable_comments(["."])
        .compile_fds(fds)
        .expect("prost generates the ONNX types");
}
