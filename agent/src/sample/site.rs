//! Sites: disk use of each site directory (a slow background walk), and the
//! processes of each site's Unix user.

use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use livehead_proto::v1::{SiteDiskSample, SiteProcessSample};
use tokio::task::JoinHandle;

use super::procfs::rate;
use super::read::{ReadError, Reader};

/// What one site's walk found. Sizes are apparent sizes of regular files
/// (what `du -sb` adds up, less the directories' own sizes), each hard-linked
/// file counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkTotals {
    pub bytes: u64,
    pub files: u64,
    pub truncated: bool,
}

/// Walks one site's tree without following symlinks, stopping after
/// `max_entries` entries (files, directories and links alike), or as soon
/// as `stop` is set (the agent is stopping: the blocking pool must not keep
/// it alive). Entries that vanish or cannot be read are skipped.
pub fn walk_site(dir: &Path, max_entries: u64, stop: &AtomicBool) -> WalkTotals {
    let mut t = WalkTotals::default();
    // Only inodes with several links are remembered, so the set stays small.
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    let mut seen = 0u64;
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let Ok(entry) = entry else { continue };
        seen += 1;
        if seen > max_entries || stop.load(Ordering::Relaxed) {
            t.truncated = true;
            break;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino())) {
            continue;
        }
        t.bytes = t.bytes.saturating_add(meta.len());
        t.files += 1;
    }
    t
}

/// The site directories of a web root (hidden ones and those `ignore`
/// matches left out, as site discovery does), sorted.
pub fn list_sites(web_root: &Path, ignore: Option<&Regex>) -> std::io::Result<Vec<String>> {
    let mut sites = Vec::new();
    for entry in std::fs::read_dir(web_root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A symlinked site would be walked twice, or outside the web root.
        let ignored = ignore.is_some_and(|re| re.is_match(&name));
        if !ignored && !name.starts_with('.') && entry.file_type().is_ok_and(|t| t.is_dir()) {
            sites.push(name);
        }
    }
    sites.sort();
    Ok(sites)
}

/// Walks every site of `web_root`, one after the other, until `stop`.
pub fn walk_web_root(
    web_root: &Path,
    ignore: Option<&Regex>,
    max_entries: u64,
    ts_ms: u64,
    stop: &AtomicBool,
) -> Result<Vec<SiteDiskSample>, ReadError> {
    let sites =
        list_sites(web_root, ignore).map_err(|e| ReadError::new("web_root", web_root, e))?;
    Ok(sites
        .into_iter()
        .take_while(|_| !stop.load(Ordering::Relaxed))
        .map(|site| {
            let started = Instant::now();
            let t = walk_site(&web_root.join(&site), max_entries, stop);
            if t.truncated {
                tracing::warn!(site = %site, max_entries, "site walk stopped at the limit; counts are lower bounds");
            }
            SiteDiskSample {
                ts_ms,
                site,
                disk_bytes: t.bytes,
                file_count: t.files,
                walk_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                truncated: t.truncated,
            }
        })
        .collect())
}

/// At most one background walk at a time.
#[derive(Debug)]
pub struct Walker<T> {
    running: Option<JoinHandle<T>>,
}

/// A walk was asked for while the previous one still runs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the previous site walk is still running")]
pub struct WalkBusy;

impl<T: Send + 'static> Default for Walker<T> {
    fn default() -> Self {
        Self { running: None }
    }
}

impl<T: Send + 'static> Walker<T> {
    /// Starts `job` on the blocking pool, unless a walk is running.
    pub fn try_start(&mut self, job: impl FnOnce() -> T + Send + 'static) -> Result<(), WalkBusy> {
        if self.running.is_some() {
            return Err(WalkBusy);
        }
        self.running = Some(tokio::task::spawn_blocking(job));
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Waits for the running walk; pending forever when none runs, so it
    /// can sit in a `select!` next to the timers.
    pub async fn finished(&mut self) -> Option<T> {
        let Some(handle) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let result = handle.await;
        self.running = None;
        match result {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "site walk failed");
                None
            }
        }
    }
}

/// uid of each user name in a passwd file.
pub fn parse_passwd(text: &str) -> HashMap<String, u32> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((name.to_owned(), uid))
        })
        .collect()
}

/// Real uid, from the `Uid:` line of `/proc/<pid>/status`.
pub fn parse_status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// From `/proc/<pid>/stat`: start time, utime + stime (clock ticks) and RSS
/// (pages). The command name may hold spaces and parentheses: fields are
/// counted from the last ')'.
pub fn parse_pid_stat(text: &str) -> Option<(u64, u64, u64)> {
    let after = &text[text.rfind(')')? + 1..];
    // After the name: state is field 3; utime 14, stime 15, starttime 22, rss 24.
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some((n(22)?, n(14)?.saturating_add(n(15)?), n(24)?))
}

/// Processes, CPU and memory of the sites' users, from `/proc/<pid>`.
#[derive(Debug)]
pub struct UserSampler {
    proc_root: PathBuf,
    ticks_per_s: f64,
    page_size: u64,
    reader: Reader,
    prev_at: Option<Instant>,
    /// Uptime at the previous tick, in clock ticks: a process not seen then
    /// that started later is new, and all its CPU time falls in the interval.
    prev_uptime_ticks: u64,
    /// CPU ticks of each process seen last time, by (pid, start time), so a
    /// reused pid is a new process.
    prev: HashMap<(u32, u64), u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct UserTotals {
    processes: u32,
    cpu_ticks: u64,
    rss_pages: u64,
}

impl UserSampler {
    pub fn new(proc_root: PathBuf) -> Self {
        Self::with_units(
            proc_root,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
        )
    }

    pub fn with_units(proc_root: PathBuf, ticks_per_s: u64, page_size: u64) -> Self {
        Self {
            proc_root,
            ticks_per_s: ticks_per_s.max(1) as f64,
            page_size,
            reader: Reader::default(),
            prev_at: None,
            prev_uptime_ticks: u64::MAX,
            prev: HashMap::new(),
        }
    }

    /// One sample per site in `users` ((site, user name, uid)). The first
    /// tick is a baseline. CPU counts the ticks each process used since the
    /// last tick: all of them for a process started since, none for one
    /// that ran before but was not counted (its site or user is new); a
    /// process that exits mid-read is skipped.
    pub fn tick(
        &mut self,
        ts_ms: u64,
        now: Instant,
        users: &[(String, String, u32)],
    ) -> Result<Vec<SiteProcessSample>, ReadError> {
        if users.is_empty() {
            // No site has its user (yet): no need to read every process.
            self.prev_at = None;
            self.prev.clear();
            return Ok(Vec::new());
        }
        let secs = self
            .prev_at
            .map_or(0.0, |p| now.saturating_duration_since(p).as_secs_f64());
        let first = self.prev_at.is_none();
        self.prev_at = Some(now);
        let started_after = self.prev_uptime_ticks;
        // Unknown uptime: no process counts as new, rather than a spike.
        self.prev_uptime_ticks = self.uptime_ticks().unwrap_or(u64::MAX);
        let uids: HashSet<u32> = users.iter().map(|u| u.2).collect();
        let mut totals: HashMap<u32, UserTotals> = HashMap::new();
        let mut next = HashMap::with_capacity(self.prev.len());
        let dir = std::fs::read_dir(&self.proc_root)
            .map_err(|e| ReadError::new("proc", &self.proc_root, e))?;
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((uid, start, ticks, rss)) = self.read_pid(pid, &uids) else {
                continue;
            };
            let t = totals.entry(uid).or_default();
            t.processes += 1;
            t.rss_pages = t.rss_pages.saturating_add(rss);
            let used = match self.prev.get(&(pid, start)) {
                Some(&before) => ticks.saturating_sub(before),
                None if start > started_after => ticks,
                None => 0,
            };
            t.cpu_ticks = t.cpu_ticks.saturating_add(used);
            next.insert((pid, start), ticks);
        }
        self.prev = next;
        if first {
            return Ok(Vec::new());
        }
        Ok(users
            .iter()
            .map(|(site, user, uid)| {
                let t = totals.get(uid).copied().unwrap_or_default();
                SiteProcessSample {
                    ts_ms,
                    site: site.clone(),
                    user: user.clone(),
                    processes: t.processes,
                    cpu_pct: rate(0, t.cpu_ticks, secs) / self.ticks_per_s * 100.0,
                    rss_bytes: t.rss_pages.saturating_mul(self.page_size),
                }
            })
            .collect())
    }

    fn uptime_ticks(&mut self) -> Option<u64> {
        let text = self.reader.read(&self.proc_root.join("uptime")).ok()?;
        let secs: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
        Some((secs * self.ticks_per_s) as u64)
    }

    /// (uid, start time, cpu ticks, rss pages) of a process of one of
    /// `uids`; None for others and for a process gone mid-read.
    fn read_pid(&mut self, pid: u32, uids: &HashSet<u32>) -> Option<(u32, u64, u64, u64)> {
        let dir = self.proc_root.join(pid.to_string());
        let uid = parse_status_uid(self.reader.read(&dir.join("status")).ok()?)?;
        if !uids.contains(&uid) {
            return None;
        }
        let (start, ticks, rss) = parse_pid_stat(self.reader.read(&dir.join("stat")).ok()?)?;
        Some((uid, start, ticks, rss))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    fn write(path: &Path, bytes: usize) {
        fs::create_dir_all(path.parent().expect("fixture files")).expect("fixture files");
        fs::write(path, vec![b'x'; bytes]).expect("fixture files");
    }

    #[test]
    fn walk_counts_exact_bytes_and_files_once() {
        let root = tempfile::tempdir().expect("fixture files");
        let a = root.path().join("a.example");
        write(&a.join("index.php"), 1000);
        write(&a.join("wp-content/uploads/2024/img.jpg"), 12_345);
        write(&a.join("wp-content/empty"), 0);
        fs::hard_link(a.join("index.php"), a.join("index-link.php")).expect("fixture files");
        // Symlinks are not followed: the target's bytes are not counted twice.
        std::os::unix::fs::symlink(a.join("wp-content"), a.join("loop")).expect("fixture files");
        std::os::unix::fs::symlink("/usr", a.join("outside")).expect("fixture files");
        write(&root.path().join("b.example/x"), 7);
        fs::create_dir(root.path().join(".cache")).expect("fixture files");
        fs::write(root.path().join("stray-file"), "x").expect("fixture files");

        let samples = walk_web_root(root.path(), None, 1_000_000, 9, &AtomicBool::new(false))
            .expect("test value");
        let got: Vec<(&str, u64, u64, bool)> = samples
            .iter()
            .map(|s| (s.site.as_str(), s.disk_bytes, s.file_count, s.truncated))
            .collect();
        assert_eq!(
            got,
            [
                ("a.example", 1000 + 12_345, 3, false),
                ("b.example", 7, 1, false)
            ]
        );
        assert!(samples.iter().all(|s| s.ts_ms == 9));
    }

    #[test]
    fn walk_over_the_limit_says_truncated() {
        let root = tempfile::tempdir().expect("fixture files");
        for i in 0..10 {
            write(&root.path().join(format!("f{i}")), 10);
        }
        let go = AtomicBool::new(false);
        let t = walk_site(root.path(), 4, &go);
        assert!(t.truncated);
        assert_eq!(t.files, 4);
        assert_eq!(t.bytes, 40);
        let t = walk_site(root.path(), 10, &go);
        assert_eq!(
            t,
            WalkTotals {
                bytes: 100,
                files: 10,
                truncated: false
            }
        );
    }

    #[test]
    fn a_stopped_walk_ends_at_once() {
        let root = tempfile::tempdir().expect("fixture files");
        write(&root.path().join("a.example/f"), 10);
        write(&root.path().join("b.example/f"), 10);
        let stop = AtomicBool::new(true);
        assert!(walk_site(&root.path().join("a.example"), 100, &stop).truncated);
        let samples = walk_web_root(root.path(), None, 100, 0, &stop).expect("test value");
        assert!(samples.is_empty(), "{samples:?}");
    }

    #[test]
    fn a_missing_web_root_is_an_error_naming_it() {
        let err = walk_web_root(
            Path::new("/nonexistent/www"),
            None,
            10,
            0,
            &AtomicBool::new(false),
        )
        .expect_err("refused");
        assert_eq!(err.what, "web_root");
        assert!(err.to_string().contains("/nonexistent/www"), "{err}");
    }

    #[tokio::test]
    async fn a_second_walk_is_refused_while_the_first_runs() {
        let mut w: Walker<u32> = Walker::default();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        w.try_start(move || {
            let _ = wait.recv();
            1
        })
        .expect("test value");
        assert_eq!(w.try_start(|| 2), Err(WalkBusy));
        assert!(w.is_running());
        release.send(()).expect("send");
        assert_eq!(w.finished().await, Some(1));
        assert!(!w.is_running());
        w.try_start(|| 3).expect("walker idle");
        assert_eq!(w.finished().await, Some(3));
    }

    #[test]
    fn passwd_status_and_stat() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nweb_a:x:1001:1001::/srv:/bin/sh\nbroken\n",
        );
        assert_eq!(users.get("web_a"), Some(&1001));
        assert_eq!(users.len(), 2);
        let status = fs::read_to_string(fixture("proc/101/status")).expect("fixture files");
        assert_eq!(parse_status_uid(&status), Some(1001));
        let stat = fs::read_to_string(fixture("proc/101/stat")).expect("fixture files");
        // The command name "php-fpm: pool (a) x" has spaces and parentheses.
        assert_eq!(parse_pid_stat(&stat), Some((5000, 300 + 200, 2560)));
        assert_eq!(parse_pid_stat("12 (x) R 1 2"), None);
    }

    fn fixture(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sample")
            .join(rel)
    }

    #[test]
    fn user_processes_cpu_and_rss_and_an_exit_mid_read() {
        let proc = tempfile::tempdir().expect("fixture files");
        let p = proc.path();
        for pid in ["101", "102", "103", "104"] {
            fs::create_dir_all(p.join(pid)).expect("fixture files");
        }
        let status = |uid: u32| format!("Name:\tphp-fpm\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n");
        let stat = |ticks: u64, start: u64, rss: u64| {
            format!("1 (php-fpm) S 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 {start} 0 {rss} 0\n")
        };
        fs::write(p.join("101/status"), status(1001)).expect("fixture files");
        fs::write(p.join("101/stat"), stat(100, 10, 100)).expect("fixture files");
        fs::write(p.join("102/status"), status(1001)).expect("fixture files");
        fs::write(p.join("102/stat"), stat(50, 11, 50)).expect("fixture files");
        fs::write(p.join("103/status"), status(0)).expect("fixture files");
        fs::write(p.join("103/stat"), stat(9999, 1, 1)).expect("fixture files");
        // 104 exited between its status and its stat.
        fs::write(p.join("104/status"), status(1001)).expect("fixture files");
        fs::write(p.join("self"), "not a pid").expect("fixture files");
        fs::write(p.join("uptime"), "4.00 1.00\n").expect("fixture files");

        let users = vec![
            ("a.example".to_owned(), "web_a".to_owned(), 1001),
            ("b.example".to_owned(), "web_b".to_owned(), 1002),
        ];
        let mut s = UserSampler::with_units(p.into(), 100, 4096);
        let t0 = Instant::now();
        assert!(
            s.tick(1, t0, &users).expect("tick").is_empty(),
            "first tick is a baseline"
        );

        // 10 s later: 101 used 200 ticks, 102 was replaced by a new process
        // with the same pid (30 ticks), 105 started (70 ticks).
        fs::write(p.join("101/stat"), stat(300, 10, 100)).expect("fixture files");
        fs::write(p.join("102/stat"), stat(30, 500, 50)).expect("fixture files");
        fs::create_dir_all(p.join("105")).expect("fixture files");
        fs::write(p.join("105/status"), status(1001)).expect("fixture files");
        fs::write(p.join("105/stat"), stat(70, 600, 10)).expect("fixture files");
        // 106 ran before the last tick under another uid: a baseline only.
        fs::create_dir_all(p.join("106")).expect("fixture files");
        fs::write(p.join("106/status"), status(1001)).expect("fixture files");
        fs::write(p.join("106/stat"), stat(1000, 50, 20)).expect("fixture files");
        fs::write(p.join("uptime"), "14.00 2.00\n").expect("fixture files");
        let out = s
            .tick(2, t0 + Duration::from_secs(10), &users)
            .expect("tick");
        assert_eq!(out.len(), 2);
        let a = &out[0];
        assert_eq!((a.site.as_str(), a.user.as_str()), ("a.example", "web_a"));
        assert_eq!(a.processes, 4);
        // 300 ticks in 10 s at 100 Hz: 30% of a core.
        assert!((a.cpu_pct - 30.0).abs() < 1e-9, "{}", a.cpu_pct);
        assert_eq!(a.rss_bytes, (100 + 50 + 10 + 20) * 4096);
        let b = &out[1];
        assert_eq!((b.processes, b.cpu_pct, b.rss_bytes), (0, 0.0, 0));
    }
}
