//! Reading small kernel files into one reused buffer.

use std::io::Read;
use std::path::Path;

/// Reads whole files into a buffer kept between reads, so a tick over
/// hundreds of `/proc/<pid>` files allocates once.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Only used for text that is not UTF-8 (a process or mount named in
    /// another encoding), which must not make the whole file unreadable.
    lossy: String,
}

impl Reader {
    pub fn read(&mut self, path: &Path) -> std::io::Result<&str> {
        self.buf.clear();
        std::fs::File::open(path)?.read_to_end(&mut self.buf)?;
        Ok(self.text())
    }

    fn text(&mut self) -> &str {
        if std::str::from_utf8(&self.buf).is_err() {
            self.lossy = String::from_utf8_lossy(&self.buf).into_owned();
            return &self.lossy;
        }
        // Checked just above; this form keeps the borrow checker content.
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }

    /// `Ok(None)` when the file does not exist (a kernel without it).
    pub fn read_optional(&mut self, path: &Path) -> std::io::Result<Option<&str>> {
        match self.read(path) {
            Ok(_) => Ok(Some(self.text())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_still_read() {
        let dir = tempfile::tempdir().expect("fixture files");
        let path = dir.path().join("stat");
        std::fs::write(&path, b"7 (caf\xe9) S 1\n").expect("fixture files");
        let mut r = Reader::default();
        assert_eq!(r.read(&path).expect("read"), "7 (caf\u{fffd}) S 1\n");
        std::fs::write(&path, "plain").expect("fixture files");
        assert_eq!(r.read(&path).expect("read"), "plain");
        assert_eq!(
            r.read_optional(&dir.path().join("none")).expect("read"),
            None
        );
    }
}
