// The C ABI's ways to open a port: from a spec (with or without transmit offloads, with
// several queue pairs) or from the container's discovered config; and the FpPort they build.
//! Opening ports.

use std::ffi::{c_char, c_int};

use netlib::config::{discover_mac, Config};
use netlib::pool::PoolOptions;
use netlib::{open_port, PktPool, PortSpec};

use crate::{arg_str, fail, guard, FpPort, FP_ERR_ARG, FP_ERR_CONFIG, FP_ERR_NULL, FP_ERR_OPEN, FP_OK, MAX_POOL};

/// The port spec in the C string `spec` (`func` names the call in messages).
///
/// # Safety
/// `spec` is NULL or a NUL-terminated string.
unsafe fn parse_spec(spec: *const c_char, func: &str) -> Result<PortSpec, c_int> {
    // SAFETY: the caller's contract on spec.
    let s = unsafe { arg_str(spec, "spec", func) }?;
    s.parse().map_err(|e| fail(FP_ERR_ARG, format!("{func}: {e}")))
}

/// An error unless `pool_size` is in 1..=[`MAX_POOL`].
fn check_pool_size(pool_size: u32) -> Result<(), c_int> {
    if pool_size == 0 || pool_size > MAX_POOL {
        return Err(fail(FP_ERR_ARG, format!("pool_size {pool_size} must be in 1..={MAX_POOL}")));
    }
    Ok(())
}

/// `queue_size` as a ring size (netlib checks it is a power of two in 8..=4096).
fn queue_size_of(queue_size: u32) -> Result<u16, c_int> {
    u16::try_from(queue_size)
        .map_err(|_| fail(FP_ERR_ARG, format!("queue_size {queue_size} must be a power of two in 8..=4096")))
}

impl FpPort {
    /// Opens `spec` with a pool of `pool_size` buffers (in `hugedir`, default
    /// /dev/hugepages) and rings of `queue_size` entries.
    pub(crate) fn open(
        spec: &PortSpec,
        pool_size: u32,
        queue_size: u32,
        hugedir: Option<&std::path::Path>,
    ) -> Result<Self, c_int> {
        check_pool_size(pool_size)?;
        let qs = queue_size_of(queue_size)?;
        let opts = PoolOptions {
            nbufs: pool_size,
            hugedir: Some(hugedir.map_or_else(|| "/dev/hugepages".into(), std::path::Path::to_path_buf)),
            ..Default::default()
        };
        let mut pool = PktPool::new(&opts).map_err(|e| fail(FP_ERR_OPEN, format!("{spec}: {e}")))?;
        let port = open_port(spec, &mut pool, qs).map_err(|e| fail(FP_ERR_OPEN, format!("{spec}: {e}")))?;
        Ok(Self::with(pool, port))
    }

    /// Opens `spec`, a virtio-user port, with `pairs` queue pairs: a handle per pair, each
    /// with a pool of its own.
    pub(crate) fn open_pairs(spec: &PortSpec, pairs: u32, pool_size: u32, queue_size: u32) -> Result<Vec<Self>, c_int> {
        use netlib::virtio_user::{VirtioUser, VirtioUserOptions, MAX_PAIRS};
        let (path, server, packed) = match spec {
            PortSpec::VirtioUser(p) => (p, false, false),
            PortSpec::VirtioUserServer(p) => (p, true, false),
            PortSpec::VirtioUserPacked(p) => (p, false, true),
            other => {
                return Err(fail(
                    FP_ERR_ARG,
                    format!("spec {other}: queue pairs need a vu:, vu-server: or vu-packed: port"),
                ))
            }
        };
        let n = pairs as usize;
        if !(1..=MAX_PAIRS).contains(&n) {
            return Err(fail(FP_ERR_ARG, format!("pairs {pairs} must be in 1..={MAX_PAIRS}")));
        }
        check_pool_size(pool_size)?;
        let queue_size = queue_size_of(queue_size)?;
        let opts = PoolOptions { nbufs: pool_size, hugedir: Some("/dev/hugepages".into()), ..Default::default() };
        let mut pools = (0..n)
            .map(|_| PktPool::new(&opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(FP_ERR_OPEN, format!("{spec}: {e}")))?;
        let vu_opts = VirtioUserOptions { queue_size, server, packed, ..VirtioUserOptions::default() };
        let handles =
            VirtioUser::open_pairs(path, &mut pools, vu_opts).map_err(|e| fail(FP_ERR_OPEN, format!("{spec}: {e}")))?;
        Ok(handles
            .into_iter()
            .zip(pools)
            .map(|(h, pool)| {
                let mut me = Self::with(pool, Box::new(h));
                me.pairs = n;
                me
            })
            .collect())
    }

    /// Opens `spec`, a virtio-user port, with transmit offloads and buffers of
    /// `data_room` bytes.
    pub(crate) fn open_offloads(
        spec: &PortSpec,
        pool_size: u32,
        queue_size: u32,
        data_room: u32,
    ) -> Result<Self, c_int> {
        use netlib::virtio_user::{VirtioUser, VirtioUserOptions};
        let (path, packed) = match spec {
            PortSpec::VirtioUser(p) => (p, false),
            PortSpec::VirtioUserPacked(p) => (p, true),
            other => return Err(fail(FP_ERR_ARG, format!("spec {other}: offloads need a vu: or vu-packed: port"))),
        };
        check_pool_size(pool_size)?;
        let queue_size = queue_size_of(queue_size)?;
        let max = netlib::pool::MAX_DATA_ROOM;
        let Some(data_room) = u16::try_from(data_room).ok().filter(|r| (64..=max).contains(r)) else {
            return Err(fail(FP_ERR_ARG, format!("data_room {data_room} must be in 64..={max}")));
        };
        let opts = PoolOptions { nbufs: pool_size, hugedir: Some("/dev/hugepages".into()), data_room };
        let mut pool = PktPool::new(&opts).map_err(|e| fail(FP_ERR_OPEN, format!("{spec}: {e}")))?;
        let vu_opts = VirtioUserOptions { queue_size, packed, tx_offloads: true, ..VirtioUserOptions::default() };
        let port = VirtioUser::open(path, &mut pool, vu_opts).map_err(|e| fail(FP_ERR_OPEN, format!("{spec}: {e}")))?;
        let tx_features = port.tx_features();
        let mut me = Self::with(pool, Box::new(port));
        me.tx_features = tx_features;
        Ok(me)
    }
}

/// Boxes an opened port into `*out`.
///
/// # Safety
/// `out` is NULL or writable.
unsafe fn give(out: *mut *mut FpPort, r: Result<FpPort, c_int>) -> c_int {
    match r {
        Ok(p) => {
            let b = Box::into_raw(Box::new(p));
            // SAFETY: checked non-NULL by the callers before opening; writable per the contract.
            unsafe { out.write(b) };
            FP_OK
        }
        Err(c) => c,
    }
}

/// Opens the port `spec` (`vu:PATH`, `vu-server:PATH`, `vhost:PATH`, `vhost-client:PATH`)
/// with a pool of `pool_size` buffers and rings of `queue_size` entries; `*out` gets it.
///
/// # Safety
/// `spec` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fp_open(spec: *const c_char, pool_size: u32, queue_size: u32, out: *mut *mut FpPort) -> c_int {
    // SAFETY: the caller's contract on spec and out.
    unsafe { open_spec("fp_open", spec, out, |spec| FpPort::open(spec, pool_size, queue_size, None)) }
}

/// Opens `spec` (`vu:PATH` or `vu-packed:PATH`) as [`fp_open`] does, taking the transmit
/// offloads its backend offers (checksum, TSO), with buffers of `data_room` bytes (up
/// to 65408: a 64 KB GSO frame); every packet sent then carries the header set with
/// [`fp_pkt_set_net_hdr`] (all zero, asking nothing, unless set since the buffer was
/// last sent). [`fp_tx_offloads`] says what the backend took.
///
/// # Safety
/// `spec` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fp_open_offloads(
    spec: *const c_char,
    pool_size: u32,
    queue_size: u32,
    data_room: u32,
    out: *mut *mut FpPort,
) -> c_int {
    // SAFETY: the caller's contract on spec and out.
    unsafe {
        open_spec("fp_open_offloads", spec, out, |spec| FpPort::open_offloads(spec, pool_size, queue_size, data_room))
    }
}

/// Parses the spec string `spec`, opens it with `open`, learns the port's MAC from the
/// container's config and gives the port to `*out`: the body of the `fp_open*` calls
/// that take a spec (`func` names the call in messages).
///
/// # Safety
/// `spec` is NULL or a NUL-terminated string; `out` is NULL or writable.
unsafe fn open_spec(
    func: &str,
    spec: *const c_char,
    out: *mut *mut FpPort,
    open: impl FnOnce(&PortSpec) -> Result<FpPort, c_int>,
) -> c_int {
    guard(func, || {
        if out.is_null() {
            return fail(FP_ERR_NULL, format!("{func}: out is NULL"));
        }
        // SAFETY: the caller's contract on spec.
        let spec = match unsafe { parse_spec(spec, func) } {
            Ok(s) => s,
            Err(c) => return c,
        };
        let port = open(&spec).and_then(|mut p| {
            p.mac = discover_mac(&spec).map_err(|e| fail(FP_ERR_CONFIG, format!("{func}: {e}")))?;
            Ok(p)
        });
        // SAFETY: out checked non-NULL above; writable per the contract.
        unsafe { give(out, port) }
    })
}

/// Opens the port the fastpath hook gave this container on `bridge` (NULL: the first
/// port), read from `$FASTPATH_CONFIG` or /run/fastpath/config.json; the pool lives in
/// the container's hugetlbfs when it has one.
///
/// # Safety
/// `bridge` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fp_open_discovered(
    bridge: *const c_char,
    pool_size: u32,
    queue_size: u32,
    out: *mut *mut FpPort,
) -> c_int {
    guard("fp_open_discovered", || {
        if out.is_null() {
            return fail(FP_ERR_NULL, "fp_open_discovered: out is NULL");
        }
        let bridge = if bridge.is_null() {
            None
        } else {
            // SAFETY: the caller's contract on bridge.
            match unsafe { arg_str(bridge, "bridge", "fp_open_discovered") } {
                Ok(b) => Some(b),
                Err(c) => return c,
            }
        };
        let cfg = match Config::discover() {
            Ok(c) => c,
            Err(e) => return fail(FP_ERR_CONFIG, format!("fp_open_discovered: {e}")),
        };
        let info = match &bridge {
            Some(b) => cfg.port(b),
            None => cfg.ports.first(),
        };
        let Some(info) = info else {
            let have: Vec<&str> = cfg.ports.iter().map(|p| p.bridge.as_str()).collect();
            return fail(
                FP_ERR_CONFIG,
                format!(
                    "fp_open_discovered: no port on bridge {} (the container has: {})",
                    bridge.as_deref().unwrap_or("(any)"),
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                ),
            );
        };
        let mac = match info.mac_bytes() {
            Ok(m) => m,
            Err(e) => return fail(FP_ERR_CONFIG, format!("fp_open_discovered: {e}")),
        };
        let port = FpPort::open(&info.spec(), pool_size, queue_size, cfg.hugedir()).map(|mut p| {
            p.mac = mac;
            p
        });
        // SAFETY: out checked non-NULL above; writable per the contract.
        unsafe { give(out, port) }
    })
}

/// Opens `spec` (`vu:PATH`, `vu-server:PATH` or `vu-packed:PATH`) with `pairs` queue
/// pairs (1 to 16): `out[0..pairs]` get a handle per pair, each an `fp_port` with its own
/// pool of `pool_size` buffers, to be used from a thread of its own and closed with
/// [`fp_close`]. [`fp_pair_of`] says which pair a flow goes out on.
///
/// # Safety
/// `spec` is NULL or a NUL-terminated string; `out` is NULL or an array of `pairs`
/// writable pointers.
#[no_mangle]
pub unsafe extern "C" fn fp_open_pairs(
    spec: *const c_char,
    pairs: u32,
    pool_size: u32,
    queue_size: u32,
    out: *mut *mut FpPort,
) -> c_int {
    const FUNC: &str = "fp_open_pairs";
    guard(FUNC, || {
        if out.is_null() {
            return fail(FP_ERR_NULL, format!("{FUNC}: out is NULL"));
        }
        // SAFETY: the caller's contract on spec.
        let spec = match unsafe { parse_spec(spec, FUNC) } {
            Ok(s) => s,
            Err(c) => return c,
        };
        let handles = match FpPort::open_pairs(&spec, pairs, pool_size, queue_size) {
            Ok(h) => h,
            Err(c) => return c,
        };
        let mac = match discover_mac(&spec) {
            Ok(m) => m,
            Err(e) => return fail(FP_ERR_CONFIG, format!("{FUNC}: {e}")),
        };
        for (i, mut h) in handles.into_iter().enumerate() {
            h.mac = mac;
            // SAFETY: out is not NULL and, per the contract, has `pairs` writable slots;
            // there are exactly `pairs` handles.
            unsafe { out.add(i).write(Box::into_raw(Box::new(h))) };
        }
        FP_OK
    })
}
