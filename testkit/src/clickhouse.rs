//! A throw-away ClickHouse server for tests.
//!
//! [`ClickHouseServer::start`] runs the real `clickhouse-server` binary (Debian's
//! 18.16 is the oldest we support) with its own configuration, data directory and
//! logs in a temporary directory, listening on free loopback ports. It never relies
//! on a system service, and the tests that use it never skip: a missing binary is a
//! failure that says how to install it.
//!
//! The server is started from a helper thread that lives until the test process
//! exits, with `PR_SET_PDEATHSIG = SIGKILL`, so a test process that crashes (or a
//! server kept in a `static`, which is never dropped) never leaves a server behind.
//! Directories left by such processes are swept at the next start.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SERVER_ENV: &str = "LIVEHEAD_CLICKHOUSE_SERVER";
const CLIENT_ENV: &str = "LIVEHEAD_CLICKHOUSE_CLIENT";
const DIR_PREFIX: &str = "livehead-clickhouse-";
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when the server exits right away (a port taken
/// between choosing and binding it).
const START_ATTEMPTS: u32 = 3;

const NOT_FOUND: &str = "clickhouse-server not found: install it with `apt-get install \
                         clickhouse-server` (Debian) — the ClickHouse tests never skip";

/// A `clickhouse-server` process owned by the test; killed on drop.
pub struct ClickHouseServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    http_port: u16,
    tcp_port: u16,
    databases: AtomicU32,
}

impl ClickHouseServer {
    /// Starts `clickhouse-server` (`$LIVEHEAD_CLICKHOUSE_SERVER`, else `PATH`, else
    /// `/usr/sbin/clickhouse-server`) with its own config in a temporary directory,
    /// listening on free 127.0.0.1 ports (HTTP and native TCP), and waits until
    /// `GET /ping` answers.
    ///
    /// # Panics
    /// When the binary is missing, or the server does not answer within 30 s
    /// (the message carries the tail of its logs).
    pub fn start() -> Self {
        let binary = find_binary(
            SERVER_ENV,
            "clickhouse-server",
            "/usr/sbin/clickhouse-server",
        )
        .unwrap_or_else(|| panic!("{NOT_FOUND}"));
        sweep_stale_dirs();
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&binary) {
                Ok(server) => return server,
                // The server exited before answering (e.g. a port was taken):
                // retry with fresh ports.
                Err(Failure::Exited(log)) => last_failure = log,
                Err(Failure::Timeout(log)) => {
                    panic!(
                        "clickhouse-server did not answer /ping within {START_TIMEOUT:?}:\n{log}"
                    )
                }
            }
        }
        panic!(
            "clickhouse-server exited during start-up ({START_ATTEMPTS} attempts):\n{last_failure}"
        )
    }

    fn try_start(binary: &Path) -> Result<Self, Failure> {
        Self::try_start_with(binary, crate::free_port(), crate::free_port(), "")
    }

    /// Starts a server on the given ports with `extra` (XML elements) added to
    /// its configuration: what a cluster member needs.
    fn try_start_with(
        binary: &Path,
        http_port: u16,
        tcp_port: u16,
        extra: &str,
    ) -> Result<Self, Failure> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("temporary directory for clickhouse-server");
        write_config(dir.path(), http_port, tcp_port, extra);

        let child = spawn_server(binary, dir.path());
        let mut server = Self {
            child: Some(child),
            dir,
            http_port,
            tcp_port,
            databases: AtomicU32::new(0),
        };
        server.wait_started()?;
        Ok(server)
    }

    /// Kills the server (SIGKILL) and starts it again on the same ports and
    /// data directory, as a crashed server restarted by its supervisor would.
    ///
    /// # Panics
    /// When it does not answer `/ping` again within 30 s.
    pub fn restart(&mut self) {
        self.kill();
        let binary = find_binary(
            SERVER_ENV,
            "clickhouse-server",
            "/usr/sbin/clickhouse-server",
        )
        .unwrap_or_else(|| panic!("{NOT_FOUND}"));
        self.child = Some(spawn_server(&binary, self.dir.path()));
        if let Err(Failure::Exited(log) | Failure::Timeout(log)) = self.wait_started() {
            panic!("clickhouse-server did not come back after a restart:\n{log}");
        }
    }

    fn wait_started(&mut self) -> Result<(), Failure> {
        let server = self;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server.ping() {
                return Ok(());
            }
            let exited = server
                .child
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited {
                return Err(Failure::Exited(server.log_tail()));
            }
            if Instant::now() > deadline {
                let log = server.log_tail();
                server.kill();
                return Err(Failure::Timeout(log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The HTTP endpoint, e.g. `http://127.0.0.1:38123`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The native protocol port (what `clickhouse-client --port` takes).
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// A fresh database name for one test: `prefix` (reduced to `[a-z0-9_]`) plus a
    /// counter. The database itself is not created.
    pub fn unique_database(&self, prefix: &str) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("t_{clean}_{n}")
    }

    /// Runs one SQL statement with `clickhouse-client` in the `default` database and
    /// returns its output (TabSeparated unless the statement says otherwise).
    ///
    /// # Panics
    /// When the client is missing or the statement fails (with the server's error).
    pub fn query(&self, sql: &str) -> String {
        self.query_in("default", sql)
    }

    /// Like [`query`](Self::query), in `database`.
    pub fn query_in(&self, database: &str, sql: &str) -> String {
        let client = find_binary(
            CLIENT_ENV,
            "clickhouse-client",
            "/usr/bin/clickhouse-client",
        )
        .unwrap_or_else(|| {
            panic!(
                "clickhouse-client not found: install it with `apt-get install \
                     clickhouse-client` (Debian) — the ClickHouse tests never skip"
            )
        });
        let output = Command::new(client)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.tcp_port.to_string())
            .arg("--database")
            .arg(database)
            .arg("--query")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .expect("run clickhouse-client");
        if !output.status.success() {
            panic!(
                "clickhouse-client failed ({}) for {sql:?}:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8(output.stdout).expect("clickhouse-client printed UTF-8")
    }

    /// The last lines of the server's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "server.err.log", "server.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!("--- {name} (last {} lines)\n", tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Kills the server (SIGKILL) and waits for it. Idempotent.
    /// The server process's id, while it runs (for CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.http_port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        if stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("Ok.\n")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Failure {
    Exited(String),
    Timeout(String),
}

/// `$env`, else `name` on `PATH`, else `fallback`, if it is a file.
pub(crate) fn find_binary(env: &str, name: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .chain(std::iter::once(PathBuf::from(fallback)))
        .find(|path| path.is_file())
}

/// Spawns `command` from a thread that never exits, with the child set to receive
/// SIGKILL when that thread dies, i.e. when the test process exits. (The parent
/// death signal follows the spawning *thread*; test threads end after each test,
/// which would kill a server shared by several tests.)
/// `clickhouse-server` with the configuration written in `dir`, logging there.
fn spawn_server(binary: &Path, dir: &Path) -> Child {
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .expect("clickhouse-server log file")
    };
    let mut command = Command::new(binary);
    command
        .arg(format!(
            "--config-file={}",
            dir.join("config.xml").display()
        ))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(open("stdout.log"))
        .stderr(open("stderr.log"));
    spawn_tied_to_process(command)
}

pub(crate) fn spawn_tied_to_process(mut command: Command) -> Child {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("clickhouse-server-parent".into())
        .spawn(move || {
            set_parent_death_signal(&mut command);
            let _ = sender.send(command.spawn());
            loop {
                std::thread::park();
            }
        })
        .expect("spawn the clickhouse-server parent thread");
    receiver
        .recv()
        .expect("clickhouse-server parent thread answers")
        .expect("spawn clickhouse-server")
}

// `pre_exec` is unsafe because the closure runs between fork and exec; it only
// calls async-signal-safe syscalls (prctl, getppid), which is what makes the
// server die with the test process instead of outliving it.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe syscalls and touches no
    // memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("test process exited"));
            }
            Ok(())
        });
    }
}

/// Removes the directories of servers whose test process is gone (those kept in a
/// `static`, or left by a crash).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Config for ClickHouse 18.16 and newer (`<yandex>` is still accepted as the root
/// element by current servers).
fn write_config(dir: &Path, http_port: u16, tcp_port: u16, extra: &str) {
    let d = dir.display();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{d}/server.log</log>
        <errorlog>{d}/server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>64</max_concurrent_queries>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>67108864</mark_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
{extra}
</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::/0</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"#;
    std::fs::write(dir.join("config.xml"), config).expect("write clickhouse config.xml");
    std::fs::write(dir.join("users.xml"), users).expect("write clickhouse users.xml");
}

/// The cluster name [`ClickHouseCluster`] configures on every server.
pub const TEST_CLUSTER: &str = "livehead_test";

/// ClickHouse servers forming one cluster ([`TEST_CLUSTER`]): `shards` shards
/// of `replicas` replicas each, every server knowing all of them
/// (`remote_servers`), its own `{shard}` and `{replica}` macros, and one
/// ZooKeeper for `ON CLUSTER` DDL and replicated tables. All on loopback, in
/// temporary directories, killed with the test process.
pub struct ClickHouseCluster {
    /// Before `zookeeper`: fields drop in order, so the servers stop before
    /// the ZooKeeper they use.
    servers: Vec<ClickHouseServer>,
    zookeeper: crate::zookeeper::ZooKeeper,
    shards: usize,
}

impl ClickHouseCluster {
    /// # Panics
    /// When a binary is missing or a server does not start (with its logs).
    pub fn start(shards: usize, replicas: usize) -> Self {
        assert!(shards > 0 && replicas > 0, "a cluster has servers");
        let binary = find_binary(
            SERVER_ENV,
            "clickhouse-server",
            "/usr/sbin/clickhouse-server",
        )
        .unwrap_or_else(|| panic!("{NOT_FOUND}"));
        sweep_stale_dirs();
        let zookeeper = crate::zookeeper::ZooKeeper::start();
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports: Vec<(u16, u16)> = (0..shards * replicas)
                .map(|_| (crate::free_port(), crate::free_port()))
                .collect();
            match start_members(&binary, &ports, shards, replicas, zookeeper.port()) {
                Ok(servers) => {
                    return Self {
                        servers,
                        zookeeper,
                        shards,
                    };
                }
                Err(Failure::Exited(log) | Failure::Timeout(log)) => last_failure = log,
            }
        }
        panic!("the ClickHouse cluster did not start ({START_ATTEMPTS} attempts):\n{last_failure}")
    }

    /// Every server, shard by shard (shard 1's replicas first).
    pub fn servers(&self) -> &[ClickHouseServer] {
        &self.servers
    }

    /// The server `index` of [`servers`](Self::servers), to kill or restart.
    pub fn server_mut(&mut self, index: usize) -> &mut ClickHouseServer {
        &mut self.servers[index]
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The ZooKeeper's client port.
    pub fn zookeeper_port(&self) -> u16 {
        self.zookeeper.port()
    }
}

fn start_members(
    binary: &Path,
    ports: &[(u16, u16)],
    shards: usize,
    replicas: usize,
    zookeeper: u16,
) -> Result<Vec<ClickHouseServer>, Failure> {
    let mut servers = Vec::with_capacity(ports.len());
    for (index, (http, tcp)) in ports.iter().enumerate() {
        let (shard, replica) = (index / replicas + 1, index % replicas + 1);
        let extra = cluster_config(ports, shards, replicas, zookeeper, shard, replica);
        servers.push(ClickHouseServer::try_start_with(
            binary, *http, *tcp, &extra,
        )?);
    }
    Ok(servers)
}

/// The cluster part of one member's configuration.
fn cluster_config(
    ports: &[(u16, u16)],
    shards: usize,
    replicas: usize,
    zookeeper: u16,
    shard: usize,
    replica: usize,
) -> String {
    let mut remote = String::new();
    for s in 0..shards {
        remote.push_str("<shard><internal_replication>true</internal_replication>");
        for r in 0..replicas {
            let tcp = ports[s * replicas + r].1;
            remote.push_str(&format!(
                "<replica><host>127.0.0.1</host><port>{tcp}</port></replica>"
            ));
        }
        remote.push_str("</shard>");
    }
    format!(
        "    <remote_servers><{TEST_CLUSTER}>{remote}</{TEST_CLUSTER}></remote_servers>
    <zookeeper><node><host>127.0.0.1</host><port>{zookeeper}</port></node></zookeeper>
    <macros><cluster>{TEST_CLUSTER}</cluster><shard>{shard}</shard><replica>replica{replica}</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
    )
}
