//! Reading small kernel files into one reused buffer.

use std::io::Read;
use std::path::Path;

/// Reads whole files into a buffer kept between reads, so a tick over
/// hundreds of `/proc/<pid>` files allocates once.
#[derive(Debug, Default)]
pub struct Reader {
    buf: String,
}

impl Reader {
    pub fn read(&mut self, path: &Path) -> std::io::Result<&str> {
        self.buf.clear();
        std::fs::File::open(path)?.read_to_string(&mut self.buf)?;
        Ok(&self.buf)
    }

    /// `Ok(None)` when the file does not exist (a kernel without it).
    pub fn read_optional(&mut self, path: &Path) -> std::io::Result<Option<&str>> {
        match self.read(path) {
            Ok(_) => Ok(Some(&self.buf)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An error reading one source, named for logs and the error counter.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    /// Short name of what was being read ("stat", "meminfo", "cgroup", ...).
    pub what: &'static str,
    pub path: String,
    pub source: std::io::Error,
}

impl ReadError {
    pub fn new(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            what,
            path: path.display().to_string(),
            source,
        }
    }

    pub fn unparsable(what: &'static str, path: &Path) -> Self {
        Self::new(
            what,
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
        )
    }
}
