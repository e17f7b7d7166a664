//! The `livehead` binary under test: development certificates, a collector
//! process on either store, and agent command lines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use livehead_testkit::free_port;
use sha2::{Digest, Sha256};

use crate::proc::Service;

/// Where the benchmark's files go, and the binary it runs.
pub struct Env {
    pub bin: PathBuf,
    pub dir: PathBuf,
}

impl Env {
    pub fn livehead(&self) -> Command {
        Command::new(&self.bin)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A development CA, a collector certificate and one client certificate per
    /// agent name, in `<dir>/pki` (reused across parts).
    pub fn pki(&self, agents: &[String]) -> anyhow::Result<PathBuf> {
        let out = self.path("pki");
        let mut certs = self.livehead();
        certs.arg("certs").arg("--out").arg(&out);
        for agent in agents {
            certs.arg("--agent").arg(agent);
        }
        let output = certs.output().context("running livehead certs")?;
        anyhow::ensure!(
            output.status.success(),
            "livehead certs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(out)
    }
}

/// Which store a collector writes.
pub enum StoreKind {
    Sqlite(PathBuf),
    ClickHouse { url: String, database: String },
}

/// A running `livehead collector`.
pub struct Collector {
    pub service: Service,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// A token `/push` accepts.
    pub token: String,
}

impl Collector {
    /// Starts a collector with mTLS from `pki` and the given store. `extra_toml`
    /// is appended to its config file (limits, say).
    pub fn start(
        env: &Env,
        name: &str,
        pki: &Path,
        store: &StoreKind,
        extra_toml: &str,
    ) -> anyhow::Result<Self> {
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let token = format!("bench-{}", hex::encode(rand::random::<[u8; 16]>()));
        let sha = hex::encode(Sha256::digest(token.as_bytes()));
        let storage = match store {
            StoreKind::Sqlite(path) => format!("sqlite_path = {:?}", path.display().to_string()),
            StoreKind::ClickHouse { url, database } => {
                format!("clickhouse_url = {url:?}\ndatabase = {database:?}")
            }
        };
        let config = format!(
            "grpc_listen = \"{grpc}\"\nhttp_listen = \"{http}\"\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n\
             [storage]\n{storage}\n\
             [[api.push_tokens]]\nname = \"bench\"\nsha256 = \"{sha}\"\n\
             {extra_toml}\n",
            ca = pki.join("ca.pem").display().to_string(),
            cert = pki.join("collector.pem").display().to_string(),
            key = pki.join("collector-key.pem").display().to_string(),
        );
        let config_path = env.path(&format!("{name}.toml"));
        std::fs::write(&config_path, config)?;
        let mut command = env.livehead();
        command
            .arg("collector")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn");
        let mut service = Service::spawn(name, &mut command, &env.path(&format!("{name}.log")))?;
        service.wait_for_port(grpc)?;
        service.wait_for_port(http)?;
        Ok(Self {
            service,
            grpc,
            http,
            token,
        })
    }

    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc)
    }
}

/// `livehead agent` flags for mTLS to `collector` as agent `name`.
pub fn agent_command(env: &Env, pki: &Path, name: &str, collector: &Collector) -> Command {
    let mut command = env.livehead();
    command
        .arg("agent")
        .arg("--collector-url")
        .arg(collector.grpc_url())
        .arg("--tls-ca")
        .arg(pki.join("ca.pem"))
        .arg("--tls-cert")
        .arg(pki.join(format!("agent-{name}.pem")))
        .arg("--tls-key")
        .arg(pki.join(format!("agent-{name}-key.pem")))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn");
    command
}
