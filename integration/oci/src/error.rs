// What can go wrong building a rootfs or writing a bundle or hook.toml: a file that cannot be
// read or written, a missing file, a program that is not statically linked.
//! The crate's error type.

use std::path::PathBuf;

/// An error of this crate, naming the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing, copying or linking `path` failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("writing", "copying busybox into", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A file the container needs is not there.
    #[error("{} is missing ({how})", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// How to get it.
        how: &'static str,
    },
    /// A program for the busybox rootfs is dynamically linked (the rootfs has no loader).
    #[error("{} is not statically linked: it cannot run in the busybox rootfs ({how})", path.display())]
    NotStatic {
        /// The program.
        path: PathBuf,
        /// How to get a static one.
        how: &'static str,
    },
    /// A file that should be an executable is not a 64-bit ELF file.
    #[error("{} is not a 64-bit ELF file", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
    },
}

impl Error {
    /// An [`Error::Io`] for `what` on `path`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}
