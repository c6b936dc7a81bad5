// fastpathd's durable state: the ports it holds, kept in one file under its state directory
// (written by the control thread after every change, never by the worker) and restored at start.
//! Durable ports.
//!
//! [`file`]: the state file (`fastpathd-state.json`: a format version and every port, each
//! marked as coming from the config file or added at runtime), written atomically (a
//! temporary file, fsync, rename, fsync of the directory); one that cannot be read is kept
//! aside as `*.bad` and reported. [`ports`]: the ports the running switch holds, saved on
//! every change. [`restore`]: what a starting switch opens: its config file's ports always,
//! the saved runtime ports, reconciled with the hook's ledger
//! ([`fastpath_host::ledger::plan`]): ports of containers that are gone are dropped, and the
//! ports of live containers that are missing are added back.

pub mod file;
pub mod ports;
pub mod restore;

pub use file::{Origin, SavedPort, SavedPorts, StateError, StateFile, FORMAT, STATE_FILE};
pub use ports::Durable;
