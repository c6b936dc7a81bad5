// The XDP program that sends an interface queue's frames to our AF_XDP socket: an
// XSKMAP, a six-instruction program (redirect by queue index, else pass to the
// stack) loaded with bpf(2), and a BPF link attaching it (gone when the link's fd
// closes, so a dead switch leaves nothing attached). No libbpf: these are the few
// calls we need, written out.
//! The redirect program.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
/// `XDP_FLAGS_SKB_MODE`: the generic hook, on any driver.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: in the driver, where it has native XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `union bpf_attr`, as large as any command we use needs (the kernel checks that
/// bytes past what it knows are zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32(mut self, off: usize, v: u32) -> Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, off: usize, v: u64) -> Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn bytes(mut self, off: usize, v: &[u8]) -> Self {
        self.0[off..off + v.len()].copy_from_slice(v);
        self
    }
}

fn bpf(cmd: libc::c_int, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads (and for some commands writes) the attr we pass, of the size
    // we pass, which lives across the call; pointers inside it point to live memory.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), std::mem::size_of::<Attr>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn fd_of(rc: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a fresh fd that we own from now on.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

/// One instruction: opcode, dst and src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// `r2 = ctx->rx_queue_index; r1 = &map; r3 = XDP_PASS; return bpf_redirect_map(r1, r2, r3)`:
/// a frame of a queue with a socket in the map goes to it, any other to the stack.
fn program(map: RawFd) -> Vec<u8> {
    const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_DW_IMM: u8 = 0x18; // BPF_LD | BPF_DW | BPF_IMM
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const PSEUDO_MAP_FD: u8 = 1;
    const RX_QUEUE_INDEX: i16 = 16; // offsetof(struct xdp_md, rx_queue_index)
    [
        insn(LDX_W, 2, 1, RX_QUEUE_INDEX, 0),
        insn(LD_DW_IMM, 1, PSEUDO_MAP_FD, 0, map),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_K, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ]
    .concat()
}

/// The redirect program attached to an interface, with its map.
#[derive(Debug)]
pub struct Redirect {
    // The link first: dropping it detaches the program before the map goes.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    /// Whether it runs in the driver (else in the generic hook).
    pub native: bool,
}

/// Why the program could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Another XDP program holds the interface.
    #[error("interface {ifname} already has an XDP program attached ({holder}): detach it (ip link set dev {ifname} xdp off) or use another interface")]
    Busy {
        /// The interface.
        ifname: String,
        /// The program there, as far as it could be told.
        holder: String,
    },
    /// A bpf(2) call failed.
    #[error("{what}: {source}")]
    Bpf {
        /// What we were doing.
        what: &'static str,
        /// Cause.
        source: io::Error,
    },
}

impl Redirect {
    /// Loads the program with a map for `queues` queues and attaches it to `ifindex`,
    /// in the driver where it can, else in the generic hook.
    pub fn attach(ifindex: u32, ifname: &str, queues: u32) -> Result<Self, AttachError> {
        let bpf_err = |what| move |source| AttachError::Bpf { what, source };
        let mut a = Attr::new()
            .u32(0, BPF_MAP_TYPE_XSKMAP)
            .u32(4, 4)
            .u32(8, 4)
            .u32(12, queues.max(1))
            .bytes(28, b"fastpath_xsks");
        let map = fd_of(bpf(BPF_MAP_CREATE, &mut a).map_err(bpf_err("creating the XSKMAP"))?);
        let prog_text = program(map.as_raw_fd());
        let license = b"Dual BSD/GPL\0";
        let mut log = vec![0u8; 4096];
        let mut a = Attr::new()
            .u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, (prog_text.len() / 8) as u32)
            .u64(8, prog_text.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, 1)
            .u32(28, log.len() as u32)
            .u64(32, log.as_mut_ptr() as u64)
            .bytes(48, b"fastpath_xsk")
            .u32(68, BPF_XDP);
        let prog = match bpf(BPF_PROG_LOAD, &mut a) {
            Ok(fd) => fd_of(fd),
            Err(source) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let verifier = String::from_utf8_lossy(&log[..end]).trim().to_string();
                tracing::warn!("XDP program refused by the verifier: {verifier}");
                return Err(AttachError::Bpf { what: "loading the XDP program", source });
            }
        };
        let mut last = None;
        for (flags, native) in [(XDP_FLAGS_DRV_MODE, true), (XDP_FLAGS_SKB_MODE, false)] {
            let mut a = Attr::new().u32(0, prog.as_raw_fd() as u32).u32(4, ifindex).u32(8, BPF_XDP).u32(12, flags);
            match bpf(BPF_LINK_CREATE, &mut a) {
                Ok(fd) => return Ok(Self { _link: fd_of(fd), _prog: prog, map, native }),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(AttachError::Busy { ifname: ifname.into(), holder: attached_program(ifindex) });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(AttachError::Bpf {
            what: "attaching the XDP program",
            source: last.unwrap_or_else(|| io::Error::other("no attach mode worked")),
        })
    }

    /// Sends queue `queue`'s frames to the socket `xsk`.
    pub fn insert(&self, queue: u32, xsk: RawFd) -> io::Result<()> {
        let (key, value) = (queue, xsk as u32);
        let mut a = Attr::new()
            .u32(0, self.map.as_raw_fd() as u32)
            .u64(8, std::ptr::addr_of!(key) as u64)
            .u64(16, std::ptr::addr_of!(value) as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
    }
}

/// Says which XDP program holds `ifindex` ("id N, name NAME"), as far as the kernel
/// tells (netlink's IFLA_XDP, then the program's info).
fn attached_program(ifindex: u32) -> String {
    let Some(id) = xdp_prog_id(ifindex) else { return "an unknown program".into() };
    let mut a = Attr::new().u32(0, id);
    let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut a).map(fd_of) else { return format!("program id {id}") };
    let mut info = [0u8; 128];
    let mut a = Attr::new().u32(0, fd.as_raw_fd() as u32).u32(4, info.len() as u32).u64(8, info.as_mut_ptr() as u64);
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a).is_err() {
        return format!("program id {id}");
    }
    // struct bpf_prog_info: name[16] at offset 64.
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    format!("program id {id}, name '{}'", String::from_utf8_lossy(&name[..end]))
}

/// The id of the XDP program on `ifindex`, from an RTM_GETLINK reply.
fn xdp_prog_id(ifindex: u32) -> Option<u32> {
    const RTM_GETLINK: u16 = 18;
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_PROG_ID: u16 = 4;
    // SAFETY: socket(2); the fd is owned at once.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return None;
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // nlmsghdr (16) + ifinfomsg (16).
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: send(2) of our own buffer.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return None;
    }
    let mut buf = vec![0u8; 16384];
    // SAFETY: recv(2) into our own buffer, of its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let buf = buf.get(..usize::try_from(n).ok()?)?;
    // Attributes start after nlmsghdr (16) and ifinfomsg (16).
    let attrs = |mut b: &[u8], want: u16| -> Option<Vec<u8>> {
        while b.len() >= 4 {
            let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
            let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
            if len < 4 || len > b.len() {
                return None;
            }
            if ty == want {
                return Some(b[4..len].to_vec());
            }
            b = &b[(len + 3) & !3..];
        }
        None
    };
    let xdp = attrs(buf.get(32..)?, IFLA_XDP)?;
    let id = attrs(&xdp, IFLA_XDP_PROG_ID)?;
    Some(u32::from_ne_bytes(id.get(..4)?.try_into().ok()?))
}
