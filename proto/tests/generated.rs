//! Fails when the committed generated code no longer matches the `.proto`
//! files, and rewrites it so the next run passes (tokio-console's pattern).

use std::path::Path;

#[test]
fn generated_code_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let protos = [
        "livehead/v1/alerts.proto",
        "livehead/v1/heartbeats.proto",
        "livehead/v1/watchdog.proto",
        "livehead/v1/samples.proto",
        "livehead/v1/records.proto",
        "livehead/v1/ingest.proto",
        "livehead/v1/watch.proto",
    ];
    let fds = protox::compile(protos, [root]).expect("the .proto files compile");

    let out = tempfile::tempdir().expect("temporary directory");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("code generation succeeds");

    let name = "livehead.v1.rs";
    let fresh = std::fs::read_to_string(out.path().join(name)).expect("generated file");
    let committed_path = root.join("src/generated").join(name);
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if fresh != committed {
        std::fs::write(&committed_path, &fresh).expect("rewrite generated code");
        panic!(
            "{} was stale and has been regenerated; review and commit it",
            committed_path.display()
        );
    }
}
