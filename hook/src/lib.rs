//! fastpath-hook: the OCI hook (not yet written; see issue 3).
