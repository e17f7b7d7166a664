//! A throw-away ZooKeeper for ClickHouse cluster tests: Debian's `zookeeper`
//! package run standalone (`ZooKeeperServerMain PORT DATADIR`) on a free
//! loopback port with its data in a temporary directory, tied to the test
//! process like the ClickHouse servers. A missing package is a failure that
//! says how to install it.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JAR: &str = "/usr/share/java/zookeeper.jar";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A standalone ZooKeeper server; killed on drop.
pub struct ZooKeeper {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl ZooKeeper {
    /// # Panics
    /// When Java or the package is missing, or the server does not accept
    /// connections within a minute (with its log).
    pub fn start() -> Self {
        assert!(
            Path::new(JAR).is_file(),
            "{JAR} not found: install ZooKeeper with `apt-get install zookeeper` (Debian) \
             — the cluster tests never skip"
        );
        let dir = tempfile::Builder::new()
            .prefix("livehead-zookeeper-")
            .tempdir()
            .expect("temporary directory for ZooKeeper");
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("zookeeper.log")).expect("ZooKeeper log");
        let mut command = Command::new("java");
        command
            .arg("-Xmx256m")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-cp")
            .arg(format!("{JAR}:/usr/share/java/*"))
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(port.to_string())
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("ZooKeeper log"))
            .stderr(log);
        let child = crate::clickhouse::spawn_tied_to_process(command);
        let mut server = Self {
            child: Some(child),
            dir,
            port,
        };
        server.wait_started();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_started(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(
                !exited && Instant::now() < deadline,
                "ZooKeeper did not start on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
