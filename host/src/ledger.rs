// The hook's ledger as the host-side programs share it: what each container holds (the types
// the hook writes), reading it as a bystander, whether a container still lives, and the plan
// that reconciles a switch's ports with it.
//! The hook's ledger, shared by the hook (which writes it) and fastpathd (which reads it).
//!
//! The hook records, per container, what it gave: cores, hugepages, switch ports, VFs. It
//! changes the file only under its lock and replaces it atomically (a new file renamed over
//! the old one), so a reader that only reads needs no lock: it sees one version or the next.
//!
//! [`plan`] is the one rule both sides reconcile a switch's ports by: `fastpath-hook gc` and
//! fastpathd at start. A port is the hook's when it names a container or carries the hook's
//! name prefix; it stays while a live container holds it, and every port of a live, ready
//! container that the switch lacks is added back.

mod entry;
mod read;
mod reconcile;

pub use entry::{
    CniAttachment, ContainerLabels, Entry, HugeAlloc, LedgerData, Owner, PortAlloc, Status, VfAlloc, PORT_MEMORY_SLACK,
    PORT_PREFIX,
};
pub use read::{process_start_time, read, LedgerError, LEDGER_FILE};
pub use reconcile::{plan, HeldPort, Plan};
