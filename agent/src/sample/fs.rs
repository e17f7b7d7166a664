//! Filesystems: the mounts of `mountinfo`, each measured by statvfs under a
//! timeout, so a stuck network mount costs one blocked thread, once.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use livehead_proto::v1::FilesystemSample;
use tokio::task::JoinHandle;

use super::procfs::{self, Mount};
use super::read::{ReadError, Reader};

/// The statvfs numbers a sample needs, in bytes and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub fragment_size: u64,
    pub files: u64,
    pub files_free: u64,
}

/// How a mount is measured: statvfs, or a stand-in in tests.
pub type StatFn = fn(&Path) -> io::Result<FsStats>;

pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let s = rustix::fs::statvfs(path)?;
    Ok(FsStats {
        blocks: s.f_blocks,
        blocks_free: s.f_bfree,
        blocks_avail: s.f_bavail,
        fragment_size: s.f_frsize,
        files: s.f_files,
        files_free: s.f_ffree,
    })
}

pub fn to_sample(ts_ms: u64, m: &Mount, s: &FsStats) -> FilesystemSample {
    let size = s.blocks.saturating_mul(s.fragment_size);
    let used = s
        .blocks
        .saturating_sub(s.blocks_free)
        .saturating_mul(s.fragment_size);
    let free = s.blocks_avail.saturating_mul(s.fragment_size);
    let inodes_used = s.files.saturating_sub(s.files_free);
    FilesystemSample {
        ts_ms,
        mountpoint: m.mountpoint.clone(),
        device: m.source.clone(),
        fstype: m.fstype.clone(),
        size_bytes: size,
        used_bytes: used,
        free_bytes: free,
        used_pct: pct(used, used.saturating_add(free)),
        inodes_total: s.files,
        inodes_used,
        inodes_free: s.files_free,
        inodes_used_pct: pct(inodes_used, s.files),
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 100.0 / whole as f64).clamp(0.0, 100.0)
}

/// Samples the node's filesystems; remembers statvfs calls still stuck.
pub struct FsSampler {
    proc_root: PathBuf,
    /// Where the host's `/` is mounted, when statvfs reaches mounts there.
    root_fs: Option<PathBuf>,
    timeout: Duration,
    stat: StatFn,
    /// Mount points whose statvfs timed out and has not returned yet: never
    /// asked again until it does, so a dead NFS server does not eat a
    /// blocking thread per tick.
    stuck: HashMap<String, JoinHandle<()>>,
}

impl FsSampler {
    pub fn new(proc_root: PathBuf, timeout: Duration) -> Self {
        Self::with_stat(proc_root, timeout, statvfs)
    }

    pub fn with_stat(proc_root: PathBuf, timeout: Duration, stat: StatFn) -> Self {
        Self {
            proc_root,
            root_fs: None,
            timeout,
            stat,
            stuck: HashMap::new(),
        }
    }

    /// Reach the mounts under `root_fs` (the host's `/` mounted in the pod)
    /// rather than through `<proc_root>/1/root`, which needs privileges.
    pub fn with_root_fs(mut self, root_fs: Option<PathBuf>) -> Self {
        self.root_fs = root_fs;
        self
    }

    /// Number of mounts whose statvfs is still stuck.
    pub fn stuck(&self) -> usize {
        self.stuck.len()
    }

    /// One sample per real filesystem that answered in time. A mount that
    /// vanished, or does not answer, is left out and reported in the errors.
    pub async fn tick(&mut self, ts_ms: u64) -> (Vec<FilesystemSample>, Vec<ReadError>) {
        let (proc_root, root_fs) = (self.proc_root.clone(), self.root_fs.clone());
        let read = move || read_mounts(&proc_root, root_fs.as_deref());
        let mounts = match tokio::task::spawn_blocking(read).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return (Vec::new(), vec![e]),
            Err(e) => {
                let err = ReadError::new("mountinfo", &self.proc_root, io::Error::other(e));
                return (Vec::new(), vec![err]);
            }
        };
        self.stuck.retain(|_, h| !h.is_finished());
        let calls = mounts
            .into_iter()
            .filter(|(m, _)| {
                let skip = self.stuck.contains_key(&m.mountpoint);
                if skip {
                    tracing::debug!(mountpoint = %m.mountpoint, "statvfs still stuck, not asked again");
                }
                !skip
            })
            .map(|(m, path)| self.measure(m, path));
        let results = futures::future::join_all(calls).await;
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        for (mount, result) in results {
            match result {
                Ok(stats) if stats.blocks > 0 => samples.push(to_sample(ts_ms, &mount, &stats)),
                Ok(_) => {}
                Err(Measure::Failed(e)) => errors.push(e),
                Err(Measure::Stuck(path, handle)) => {
                    errors.push(ReadError::new(
                        "statvfs",
                        &path,
                        io::Error::new(io::ErrorKind::TimedOut, "statvfs did not answer in time"),
                    ));
                    self.stuck.insert(mount.mountpoint, handle);
                }
            }
        }
        (samples, errors)
    }

    async fn measure(&self, mount: Mount, path: PathBuf) -> (Mount, Result<FsStats, Measure>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stat = self.stat;
        let p = path.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let _ = tx.send(stat(&p));
        });
        let result = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(stats))) => Ok(stats),
            Ok(Ok(Err(e))) => Err(Measure::Failed(ReadError::new("statvfs", &path, e))),
            Ok(Err(_)) => Err(Measure::Failed(ReadError::new(
                "statvfs",
                &path,
                io::Error::other("statvfs task panicked"),
            ))),
            Err(_) => Err(Measure::Stuck(path, handle)),
        };
        (mount, result)
    }
}

enum Measure {
    Failed(ReadError),
    Stuck(PathBuf, JoinHandle<()>),
}

/// The mounts of the host's init (`<proc_root>/1/mountinfo`), falling back to
/// our own (`<proc_root>/self/mountinfo`) when init's is not readable, each
/// with the path statvfs is called on: through `<proc_root>/1/root` when the
/// procfs is not our own (the host's, mounted under /host in a DaemonSet), or
/// under `root_fs` when set.
fn read_mounts(
    proc_root: &Path,
    root_fs: Option<&Path>,
) -> Result<Vec<(Mount, PathBuf)>, ReadError> {
    let init = proc_root.join("1/mountinfo");
    let mut reader = Reader::default();
    let (mounts, via) = match reader.read(&init).map(procfs::parse_mountinfo) {
        Ok(m) if root_fs.is_some() => (m, root_fs.map(Path::to_path_buf)),
        Ok(m) if proc_root == Path::new("/proc") => (m, None),
        Ok(m) => (m, Some(proc_root.join("1/root"))),
        Err(_) => {
            let own = proc_root.join("self/mountinfo");
            let text = reader
                .read(&own)
                .map_err(|e| ReadError::new("mountinfo", &own, e))?;
            (procfs::parse_mountinfo(text), None)
        }
    };
    Ok(mounts
        .into_iter()
        .map(|m| {
            let path = match &via {
                Some(root) => root.join(m.mountpoint.trim_start_matches('/')),
                None => PathBuf::from(&m.mountpoint),
            };
            (m, path)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn sample_numbers_as_df_shows_them() {
        let m = Mount {
            dev: "8:0".into(),
            mountpoint: "/".into(),
            fstype: "ext4".into(),
            source: "/dev/sda1".into(),
        };
        let s = FsStats {
            blocks: 1000,
            blocks_free: 300,
            blocks_avail: 200,
            fragment_size: 4096,
            files: 100,
            files_free: 75,
        };
        let f = to_sample(5, &m, &s);
        assert_eq!(f.size_bytes, 1000 * 4096);
        assert_eq!(f.used_bytes, 700 * 4096);
        assert_eq!(f.free_bytes, 200 * 4096);
        // Reserved blocks count as neither used nor free, as in df.
        assert!((f.used_pct - 700.0 / 9.0).abs() < 1e-9, "{}", f.used_pct);
        assert_eq!(
            (f.inodes_used, f.inodes_free, f.inodes_used_pct),
            (25, 75, 25.0)
        );
    }

    /// A procfs root whose init sees `/` and a mount that has vanished.
    fn fake_proc(mounts: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("fixture files");
        std::fs::create_dir_all(dir.path().join("1")).expect("fixture files");
        std::fs::write(dir.path().join("1/mountinfo"), mounts).expect("fixture files");
        std::os::unix::fs::symlink("/", dir.path().join("1/root")).expect("fixture files");
        dir
    }

    #[tokio::test]
    async fn a_vanished_mount_is_skipped_and_the_others_sampled() {
        let proc = fake_proc(
            "1 0 254:0 / / rw - ext4 /dev/vda rw\n\
             2 1 254:9 / /gone\\040away rw - xfs /dev/vdz rw\n",
        );
        let mut fs = FsSampler::new(proc.path().into(), Duration::from_secs(30));
        let (samples, errors) = fs.tick(7).await;
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(samples[0].mountpoint, "/");
        assert!(samples[0].size_bytes > 0);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].what, "statvfs");
        assert!(
            errors[0].path.ends_with("/1/root/gone away"),
            "{}",
            errors[0].path
        );
        assert_eq!(errors[0].source.kind(), io::ErrorKind::NotFound);
    }

    static RELEASE: AtomicBool = AtomicBool::new(false);
    static STUCK_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn stuck_on_nfs(path: &Path) -> io::Result<FsStats> {
        if path.ends_with("nfs") {
            STUCK_CALLS.fetch_add(1, Ordering::SeqCst);
            while !RELEASE.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(FsStats {
            blocks: 10,
            fragment_size: 1,
            ..FsStats::default()
        })
    }

    #[tokio::test]
    async fn a_stuck_mount_is_not_asked_again_until_it_answers() {
        let proc = fake_proc(
            "1 0 254:0 / / rw - ext4 /dev/vda rw\n\
             2 1 0:50 / /mnt/nfs rw - nfs4 srv:/x rw\n",
        );
        let mut fs =
            FsSampler::with_stat(proc.path().into(), Duration::from_millis(50), stuck_on_nfs);
        let (samples, errors) = fs.tick(1).await;
        assert_eq!(samples.len(), 1);
        assert_eq!(errors[0].source.kind(), io::ErrorKind::TimedOut);
        assert_eq!(fs.stuck(), 1);

        let (samples, errors) = fs.tick(2).await;
        assert_eq!(samples.len(), 1, "the other mounts are still sampled");
        assert!(errors.is_empty());
        assert_eq!(STUCK_CALLS.load(Ordering::SeqCst), 1, "no second statvfs");

        RELEASE.store(true, Ordering::SeqCst);
        while fs.stuck.values().any(|h| !h.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (samples, _) = fs.tick(3).await;
        assert_eq!(samples.len(), 2, "asked again once it answered");
        assert_eq!(fs.stuck(), 0);
    }
}
