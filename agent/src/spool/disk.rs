//! The disk spool's directory: one file per entry, named after its queue
//! position (`00000000000000000042.batch`), so the order survives restarts
//! whatever the sequence numbers.
//!
//! Fsync policy: a file is written under a temporary name, fsynced, renamed
//! into place and the directory fsynced before its batch counts as spooled,
//! so a batch that was spooled survives a crash or power loss, and a file is
//! always either whole or absent. Replacing an entry (a split, a new sequence
//! number) goes through the same rename, so after a crash either the original
//! or its replacement is there, never both. Deletions (after the ack) are not
//! fsynced: a deleted file that comes back is resent and the collector
//! recognises it as a duplicate.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use livehead_proto::v1::PushRequest;

use super::Piece;
use super::file::{self, FormatError};

const EXT: &str = "batch";
const TMP_EXT: &str = "tmp";
/// What an unreadable file is renamed to, kept for inspection and ignored.
const CORRUPT_EXT: &str = "corrupt";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("spool file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("spool file {}: {source}", path.display())]
    Format { path: PathBuf, source: FormatError },
    #[error("spool I/O task failed: {0}")]
    Task(String),
}

impl DiskError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The file is gone (deleted after an eviction, say).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// One entry found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub pos: u64,
    pub pieces: Vec<Piece>,
    pub size: usize,
}

/// What opening the directory found.
#[derive(Debug, Default)]
pub struct Opened {
    /// Entries in queue order.
    pub entries: Vec<Loaded>,
    /// Files that could not be read back, renamed to `*.corrupt`.
    pub corrupt: Vec<DiskError>,
    /// Temporary files of writes a crash interrupted, deleted.
    pub partial_writes: usize,
}

#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// Opens (creating it if needed) the spool directory and indexes what an
    /// earlier run left there. Unreadable files are renamed aside and
    /// reported, never fatal; only a directory that cannot be created or
    /// listed is.
    pub fn open(dir: &Path) -> Result<(Self, Opened), DiskError> {
        fs::create_dir_all(dir).map_err(DiskError::io(dir))?;
        let store = Self {
            dir: dir.to_owned(),
        };
        let mut opened = Opened::default();
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(DiskError::io(dir))? {
            let path = entry.map_err(DiskError::io(dir))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some(TMP_EXT) => {
                    opened.partial_writes += 1;
                    let _ = fs::remove_file(&path);
                }
                Some(EXT) => {
                    if let Some(pos) = position(&path) {
                        found.push(pos);
                    }
                }
                // Anything else is not ours to touch.
                _ => {}
            }
        }
        found.sort_unstable();
        for pos in found {
            match store.index(pos) {
                Ok(loaded) => opened.entries.push(loaded),
                Err(error) => {
                    store.set_aside(pos);
                    opened.corrupt.push(error);
                }
            }
        }
        Ok((store, opened))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, pos: u64) -> PathBuf {
        self.dir.join(format!("{pos:020}.{EXT}"))
    }

    fn index(&self, pos: u64) -> Result<Loaded, DiskError> {
        let (batches, size) = self.read_sized(pos)?;
        Ok(Loaded {
            pos,
            pieces: batches.iter().map(Piece::of).collect(),
            size,
        })
    }

    /// Writes (or replaces) the entry at `pos`, durably; returns its size.
    pub fn write(&self, pos: u64, batches: &[PushRequest]) -> Result<usize, DiskError> {
        let bytes = file::encode(batches);
        let path = self.path(pos);
        let tmp = path.with_extension(TMP_EXT);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            DiskError::Io {
                path: path.clone(),
                source,
            }
        })?;
        Ok(bytes.len())
    }

    /// The batches of the entry at `pos`.
    pub fn read(&self, pos: u64) -> Result<Vec<PushRequest>, DiskError> {
        self.read_sized(pos).map(|(batches, _)| batches)
    }

    fn read_sized(&self, pos: u64) -> Result<(Vec<PushRequest>, usize), DiskError> {
        let path = self.path(pos);
        let bytes = fs::read(&path).map_err(DiskError::io(&path))?;
        let batches = file::decode(&bytes).map_err(|source| DiskError::Format { path, source })?;
        Ok((batches, bytes.len()))
    }

    /// Deletes the entry at `pos`; one already gone is fine.
    pub fn remove(&self, pos: u64) {
        let path = self.path(pos);
        if let Err(error) = fs::remove_file(&path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %error, "cannot delete a spool file");
        }
    }

    /// Renames an unreadable entry aside, out of the spool.
    pub fn set_aside(&self, pos: u64) {
        let path = self.path(pos);
        let aside = path.with_extension(CORRUPT_EXT);
        if let Err(error) = fs::rename(&path, &aside) {
            tracing::warn!(path = %path.display(), %error, "cannot rename a corrupt spool file aside; deleting it");
            let _ = fs::remove_file(&path);
        }
    }
}

/// The queue position a spool file's name holds.
fn position(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::batch;

    fn seqs(opened: &Opened) -> Vec<Vec<u64>> {
        opened
            .entries
            .iter()
            .map(|e| e.pieces.iter().map(|p| p.seq).collect())
            .collect()
    }

    #[test]
    fn entries_come_back_in_position_order_not_seq_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, opened) = DiskStore::open(dir.path()).expect("open");
        assert!(opened.entries.is_empty());
        // Random sequence numbers: the third batch has the smallest.
        store.write(1, &[batch(900, 2)]).expect("write");
        store
            .write(2, &[batch(500, 1), batch(501, 1)])
            .expect("write");
        store.write(10, &[batch(7, 3)]).expect("write");
        let (_, opened) = DiskStore::open(dir.path()).expect("reopen");
        assert_eq!(seqs(&opened), [vec![900], vec![500, 501], vec![7]]);
        let positions: Vec<u64> = opened.entries.iter().map(|e| e.pos).collect();
        assert_eq!(positions, [1, 2, 10]);
        assert_eq!(opened.entries[0].pieces[0].records, 2);
        let on_disk = fs::metadata(store.path(1)).expect("file").len() as usize;
        assert_eq!(opened.entries[0].size, on_disk);
    }

    #[test]
    fn corrupt_truncated_and_partial_files_are_set_aside_unknown_ones_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = DiskStore::open(dir.path()).expect("open");
        for pos in 1..=4 {
            store.write(pos, &[batch(pos, 2)]).expect("write");
        }
        let bytes = fs::read(store.path(2)).expect("read");
        fs::write(store.path(2), &bytes[..bytes.len() - 3]).expect("truncate");
        let mut flipped = fs::read(store.path(3)).expect("read");
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        fs::write(store.path(3), flipped).expect("corrupt");
        fs::write(store.path(5).with_extension(TMP_EXT), b"half a write").expect("tmp");
        fs::write(dir.path().join("README.txt"), b"not ours").expect("other");
        fs::write(dir.path().join("notanumber.batch"), b"not ours").expect("other");

        let (_, opened) = DiskStore::open(dir.path()).expect("reopen");
        assert_eq!(seqs(&opened), [vec![1], vec![4]]);
        assert_eq!(opened.corrupt.len(), 2, "{:?}", opened.corrupt);
        assert!(matches!(
            opened.corrupt[0],
            DiskError::Format {
                source: FormatError::Truncated { .. },
                ..
            }
        ));
        assert!(matches!(
            opened.corrupt[1],
            DiskError::Format {
                source: FormatError::Crc { .. },
                ..
            }
        ));
        assert_eq!(opened.partial_writes, 1);
        assert!(store.path(2).with_extension(CORRUPT_EXT).exists());
        assert!(!store.path(5).with_extension(TMP_EXT).exists());
        assert!(dir.path().join("README.txt").exists());
        assert!(dir.path().join("notanumber.batch").exists());

        let (_, again) = DiskStore::open(dir.path()).expect("third open");
        assert!(
            again.corrupt.is_empty(),
            "set-aside files are not read again"
        );
        assert_eq!(seqs(&again), [vec![1], vec![4]]);
    }

    #[test]
    fn a_replacement_takes_the_original_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = DiskStore::open(dir.path()).expect("open");
        store.write(1, &[batch(10, 4)]).expect("write");
        store.write(2, &[batch(11, 1)]).expect("write");
        store
            .write(1, &[batch(20, 2), batch(21, 2)])
            .expect("replace");
        assert_eq!(
            store
                .read(1)
                .expect("read")
                .iter()
                .map(|b| b.seq)
                .collect::<Vec<_>>(),
            [20, 21]
        );
        store.remove(2);
        store.remove(2);
        assert!(store.read(2).expect_err("gone").is_not_found());
        let (_, opened) = DiskStore::open(dir.path()).expect("reopen");
        assert_eq!(seqs(&opened), [vec![20, 21]]);
    }
}
