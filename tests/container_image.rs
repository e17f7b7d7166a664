//! The container images of `deploy/container/Containerfile`, built and run
//! with Debian's podman as far as this machine allows: no registry is
//! reachable, so the `build` stage (Rust's image from Docker Hub) cannot run
//! here. The test builds the same static binary that stage builds (static
//! glibc, debug profile to spare the suite a release build), lays it out as
//! the stage's `/out`, and builds the two runtime stages exactly as written
//! (only their `COPY --from=build /out/` sources point at that directory).
//! It then checks what the images are (user 65532, no shell, `--version`)
//! and runs them end to end: the collector from the `livehead` image and an
//! agent from the `agent` image, both on the host's loopback, the agent
//! reaching the collector by the name `localhost` (name resolution in a
//! static binary with no libc beside it) over mTLS.
//!
//! Podman runs rootful with private storage under the test's temporary
//! directory (`--root`, `vfs`), `runc` (crun refuses this machine's hybrid
//! cgroups) and lowered rlimits (raising them is refused here).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use livehead_testkit::free_port;
use livehead_testkit::sites::FakeSites;
use support::{Proc, certs, http_get, loopback, wait_for};

const CONTAINERFILE: &str = "deploy/container/Containerfile";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's target directory, from this test's own path
/// (`<target>/debug/deps/container_image-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .expect("target directory")
        .to_path_buf()
}

/// The binary the Containerfile's build stage makes, in the debug profile:
/// static glibc through `--target`, so build scripts stay dynamic.
fn static_binary() -> PathBuf {
    let target = target_dir().join("container-static");
    let status = Command::new(env!("CARGO"))
        .current_dir(repo())
        .args(["build", "--locked", "--bin", "livehead"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .status()
        .expect("run cargo build");
    assert!(status.success(), "static build of livehead failed");
    target.join("x86_64-unknown-linux-gnu/debug/livehead")
}

/// The runtime stages of the Containerfile, taking `/out` from the build
/// context instead of the build stage.
fn runtime_stages() -> String {
    let text = std::fs::read_to_string(repo().join(CONTAINERFILE)).expect("read Containerfile");
    let start = text
        .find("FROM scratch")
        .expect("the Containerfile has FROM scratch stages");
    let stages = &text[start..];
    assert_eq!(
        stages.matches("COPY --from=build /out/").count(),
        4,
        "each runtime stage copies its binary and /etc from the build stage's /out"
    );
    let local = stages.replace("COPY --from=build /out/", "COPY out/");
    assert!(!local.contains("--from="), "{local}");
    local
}

/// `podman` with this test's private storage and the runtime this machine needs.
struct Podman {
    root: PathBuf,
}

impl Podman {
    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file", "--runtime", "runc"]);
        command
    }

    fn run(&self, what: &str, args: &[&str]) -> Output {
        let output = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run podman ({err}): install it with `apt-get install podman runc`")
            });
        assert!(
            output.status.success(),
            "{what}: podman {args:?} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `podman run` arguments shared by every container of the test: host
    /// network (loopback only), rlimits below the host's, `dir` mounted at
    /// the same path so file arguments read the same inside.
    fn run_args(name: &str, dir: &Path) -> Vec<String> {
        let mount = format!("{0}:{0}", dir.display());
        [
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "host",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "-v",
            &mount,
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Removes the named containers when the test ends, whatever happened.
struct Containers<'a> {
    podman: &'a Podman,
    names: Vec<String>,
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self
                .podman
                .command()
                .args(["rm", "-f", "-t", "0", name])
                .output();
        }
    }
}

/// Makes `dir` and everything under it readable (and the data directory
/// writable) by the images' user 65532: the test's files belong to root.
fn open_up(dir: &Path) {
    let status = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir)
        .status()
        .expect("chmod");
    assert!(status.success(), "chmod -R a+rwX {}", dir.display());
}

fn build_images(podman: &Podman, dir: &Path) {
    let context = dir.join("context");
    let out = context.join("out");
    for sub in ["livehead", "agent", "etc/ssl/certs"] {
        std::fs::create_dir_all(out.join(sub)).expect("context directories");
    }
    let binary = static_binary();
    for stage in ["livehead", "agent"] {
        std::fs::copy(&binary, out.join(stage).join("livehead")).expect("copy the binary");
    }
    // The build stage copies Debian's bundle; any PEM bundle shows the path.
    std::fs::copy(
        dir.join("certs/ca.pem"),
        out.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .expect("copy a CA bundle");
    std::fs::write(context.join("Containerfile"), runtime_stages()).expect("write Containerfile");
    for (stage, tag) in [
        ("livehead", "localhost/livehead:test"),
        ("agent", "localhost/livehead-agent:test"),
    ] {
        let context = context.display().to_string();
        podman.run(
            &format!("build the {stage} stage"),
            &["build", "--target", stage, "-t", tag, &context],
        );
    }
}

fn check_image(podman: &Podman, tag: &str) {
    let user = podman.run(
        "inspect",
        &["image", "inspect", "--format", "{{.Config.User}}", tag],
    );
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");

    let version = podman.run(
        "--version",
        &[
            "run",
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            tag,
            "--version",
        ],
    );
    let printed = String::from_utf8_lossy(&version.stdout);
    assert!(
        printed.contains(env!("CARGO_PKG_VERSION")),
        "{tag} --version printed {printed:?}"
    );

    // No shell to fall back on in a scratch image.
    let shell = podman
        .command()
        .args([
            "run",
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(["--entrypoint", "/bin/sh", tag, "-c", "true"])
        .output()
        .expect("podman run");
    assert!(!shell.status.success(), "{tag} has /bin/sh");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_images_build_and_run_end_to_end() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let dir = dir.path();
    certs(&dir.join("certs"), &["node-1"]);
    let podman = Podman {
        root: dir.join("podman"),
    };
    build_images(&podman, dir);
    for tag in ["localhost/livehead:test", "localhost/livehead-agent:test"] {
        check_image(&podman, tag);
    }

    let sites = FakeSites::start().await;
    let list = dir.join("sites.txt");
    std::fs::write(&list, "shop.example\nblog.example\n").expect("sites list");
    std::fs::create_dir_all(dir.join("data")).expect("data directory");
    open_up(&dir.join("certs"));
    open_up(&dir.join("data"));
    open_up(&list);

    let suffix = std::process::id();
    let mut containers = Containers {
        podman: &podman,
        names: Vec::new(),
    };
    let (grpc, http) = (free_port(), free_port());
    let collector_name = format!("livehead-collector-{suffix}");
    containers.names.push(collector_name.clone());
    let mut args = Podman::run_args(&collector_name, dir);
    args.push("localhost/livehead:test".into());
    args.extend(
        [
            "collector",
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--sqlite-path",
            &dir.join("data/livehead.db").display().to_string(),
        ]
        .map(String::from),
    );
    args.extend(support::tls_args(&dir.join("certs"), "collector"));
    let collector = spawn_podman("collector", &podman, &args, dir);
    support::wait_healthy(&collector, http).await;

    let agent_name = format!("livehead-agent-{suffix}");
    containers.names.push(agent_name.clone());
    let mut args = Podman::run_args(&agent_name, dir);
    args.push("localhost/livehead-agent:test".into());
    args.extend(
        [
            "agent",
            "--collector-url",
            &format!("https://localhost:{grpc}"),
            "--server-name",
            "localhost",
            "--sites-file",
            &list.display().to_string(),
            "--target",
            &format!("127.0.0.1:{}", sites.port()),
            "--metrics-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-sample",
            "--once",
        ]
        .map(String::from),
    );
    args.extend(support::tls_args(&dir.join("certs"), "agent-node-1"));
    let mut agent = spawn_podman("agent", &podman, &args, dir);
    let status = agent.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "agent container: {}", agent.log());

    let last = wait_for(
        "the agent's probe of shop.example through /last",
        Duration::from_secs(30),
        || collector.log(),
        || http_get(loopback(http), "/last?site=shop.example").filter(|(code, _)| *code == 200),
    )
    .await;
    assert!(last.1.contains("\"s\":200"), "{}", last.1);
    drop(containers);
}

/// `podman args` as a [`Proc`] whose log is the container's output.
fn spawn_podman(name: &str, podman: &Podman, args: &[String], dir: &Path) -> Proc {
    let mut command = podman.command();
    command.args(args);
    Proc::spawn_command(name, command, dir)
}
