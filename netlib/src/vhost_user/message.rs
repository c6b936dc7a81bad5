// vhost-user message layouts (QEMU docs/interop/vhost-user.rst), encoded and
// decoded by hand in little endian, each checked for size and fd count.
//! vhost-user message types: decoding validates every size and count before
//! anything acts on a message.

/// Largest payload we accept (a memory table of 8 regions is 264 bytes).
pub const MAX_PAYLOAD: u32 = 4096;
/// Most fds in one message (SET_MEM_TABLE with 8 regions).
pub const MAX_FDS: usize = 8;
/// Regions in one SET_MEM_TABLE.
pub const MAX_MEM_TABLE_REGIONS: usize = 8;
/// Header flag: protocol version 1.
pub const FLAG_VERSION: u32 = 0x1;
/// Header flag: this is a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// Header flag: the sender wants a REPLY_ACK.
pub const FLAG_NEED_REPLY: u32 = 0x8;
/// Kick/call payload bit: no fd follows (polling).
pub const VRING_NOFD_MASK: u64 = 0x100;
/// Kick/call payload: the vring index bits.
pub const VRING_IDX_MASK: u64 = 0xff;

/// Request codes (frontend → backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Request {
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    SendRarp = 19,
    NetSetMtu = 20,
    GetMaxMemSlots = 36,
    AddMemReg = 37,
    RemMemReg = 38,
    SetStatus = 39,
    GetStatus = 40,
}

impl Request {
    /// The request for a code, if we know it.
    pub fn from_code(c: u32) -> Option<Self> {
        use Request::{
            AddMemReg, GetFeatures, GetMaxMemSlots, GetProtocolFeatures, GetQueueNum, GetStatus, GetVringBase,
            NetSetMtu, RemMemReg, ResetOwner, SendRarp, SetFeatures, SetLogBase, SetLogFd, SetMemTable, SetOwner,
            SetProtocolFeatures, SetStatus, SetVringAddr, SetVringBase, SetVringCall, SetVringEnable, SetVringErr,
            SetVringKick, SetVringNum,
        };
        Some(match c {
            1 => GetFeatures,
            2 => SetFeatures,
            3 => SetOwner,
            4 => ResetOwner,
            5 => SetMemTable,
            6 => SetLogBase,
            7 => SetLogFd,
            8 => SetVringNum,
            9 => SetVringAddr,
            10 => SetVringBase,
            11 => GetVringBase,
            12 => SetVringKick,
            13 => SetVringCall,
            14 => SetVringErr,
            15 => GetProtocolFeatures,
            16 => SetProtocolFeatures,
            17 => GetQueueNum,
            18 => SetVringEnable,
            19 => SendRarp,
            20 => NetSetMtu,
            36 => GetMaxMemSlots,
            37 => AddMemReg,
            38 => RemMemReg,
            39 => SetStatus,
            40 => GetStatus,
            _ => return None,
        })
    }
}

/// The 12-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Request code.
    pub request: u32,
    /// `FLAG_*`.
    pub flags: u32,
    /// Payload bytes that follow.
    pub size: u32,
}

impl Header {
    /// Header size on the wire.
    pub const LEN: usize = 12;

    /// Decodes a header.
    pub fn decode(b: &[u8; 12]) -> Self {
        Self {
            request: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            flags: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            size: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    /// Encodes a header.
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Whether the sender asked for a REPLY_ACK.
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
}

/// A memory region as sent in SET_MEM_TABLE / ADD_MEM_REG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemRegion {
    /// Address descriptors use (for virtio-user: the frontend's VA).
    pub guest_phys_addr: u64,
    /// Size in bytes.
    pub memory_size: u64,
    /// Frontend virtual address (ring addresses use this).
    pub userspace_addr: u64,
    /// Offset of the region in its fd.
    pub mmap_offset: u64,
}

impl MemRegion {
    /// Bytes on the wire.
    pub const LEN: usize = 32;
    fn decode(b: &[u8]) -> Self {
        Self {
            guest_phys_addr: le64(b, 0),
            memory_size: le64(b, 8),
            userspace_addr: le64(b, 16),
            mmap_offset: le64(b, 24),
        }
    }
    fn encode_into(&self, v: &mut Vec<u8>) {
        for x in [self.guest_phys_addr, self.memory_size, self.userspace_addr, self.mmap_offset] {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// SET_VRING_NUM/BASE/ENABLE and GET_VRING_BASE payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VringState {
    /// Vring index.
    pub index: u32,
    /// Number (size, base index, or enable flag).
    pub num: u32,
}

/// SET_VRING_ADDR payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VringAddr {
    /// Vring index.
    pub index: u32,
    /// Flags (logging; ignored).
    pub flags: u32,
    /// Descriptor table (frontend VA).
    pub desc: u64,
    /// Used ring (frontend VA).
    pub used: u64,
    /// Avail ring (frontend VA).
    pub avail: u64,
    /// Log address (ignored).
    pub log: u64,
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
fn le32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// Request code we don't know.
    #[error("unknown request code {0}")]
    UnknownRequest(u32),
    /// Payload size wrong for the request.
    #[error("{req:?}: payload of {got} bytes, expected {want}")]
    BadSize {
        /// The request.
        req: Request,
        /// Size received.
        got: usize,
        /// Size expected.
        want: usize,
    },
    /// Payload larger than we ever accept.
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(u32),
    /// Wrong number of fds for the request.
    #[error("{req:?}: {got} fds attached, expected {want}")]
    BadFdCount {
        /// The request.
        req: Request,
        /// Count received.
        got: usize,
        /// Count expected.
        want: usize,
    },
    /// A memory table with too many or zero regions.
    #[error("memory table of {0} regions (1..=8 allowed)")]
    BadRegionCount(u32),
    /// Header flags lack version 1.
    #[error("header flags {0:#x} lack protocol version 1")]
    BadVersion(u32),
}

/// A decoded, size-checked frontend request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Msg {
    GetFeatures,
    SetFeatures(u64),
    SetOwner,
    ResetOwner,
    SetMemTable(Vec<MemRegion>),
    SetVringNum(VringState),
    SetVringAddr(VringAddr),
    SetVringBase(VringState),
    GetVringBase(VringState),
    /// Index and whether an fd is attached.
    SetVringKick {
        index: u32,
        has_fd: bool,
    },
    SetVringCall {
        index: u32,
        has_fd: bool,
    },
    SetVringErr {
        index: u32,
        has_fd: bool,
    },
    GetProtocolFeatures,
    SetProtocolFeatures(u64),
    GetQueueNum,
    SetVringEnable(VringState),
    GetMaxMemSlots,
    AddMemReg(MemRegion),
    RemMemReg(MemRegion),
    SetStatus(u64),
    GetStatus,
    /// The MTU the driver set (VHOST_USER_NET_SET_MTU, with PROTOCOL_F_NET_MTU).
    NetSetMtu(u64),
    /// Requests we accept and ignore (RARP, log base/fd).
    Ignored(Request),
}

fn want_size(req: Request, got: usize, want: usize) -> Result<(), MsgError> {
    if got == want {
        Ok(())
    } else {
        Err(MsgError::BadSize { req, got, want })
    }
}

fn want_fds(req: Request, got: usize, want: usize) -> Result<(), MsgError> {
    if got == want {
        Ok(())
    } else {
        Err(MsgError::BadFdCount { req, got, want })
    }
}

impl Msg {
    /// Decodes a request from its header, payload and the number of fds that came
    /// with it; checks every size and count first.
    pub fn decode(h: &Header, payload: &[u8], nfds: usize) -> Result<Self, MsgError> {
        use Request as R;
        if h.flags & 0x3 != FLAG_VERSION {
            return Err(MsgError::BadVersion(h.flags));
        }
        if h.size > MAX_PAYLOAD {
            return Err(MsgError::TooLarge(h.size));
        }
        let req = Request::from_code(h.request).ok_or(MsgError::UnknownRequest(h.request))?;
        let n = payload.len();
        let u64_payload = |req| -> Result<u64, MsgError> {
            want_size(req, n, 8)?;
            Ok(le64(payload, 0))
        };
        let state = |req| -> Result<VringState, MsgError> {
            want_size(req, n, 8)?;
            Ok(VringState { index: le32(payload, 0), num: le32(payload, 4) })
        };
        let fd_msg = |req| -> Result<(u32, bool), MsgError> {
            let v = u64_payload(req)?;
            let has_fd = v & VRING_NOFD_MASK == 0;
            want_fds(req, nfds, usize::from(has_fd))?;
            Ok(((v & VRING_IDX_MASK) as u32, has_fd))
        };
        let no_payload = |req, m: Msg| -> Result<Msg, MsgError> {
            // QEMU sends some of these with an 8-byte zero payload; accept 0 or 8.
            if n != 0 && n != 8 {
                return Err(MsgError::BadSize { req, got: n, want: 0 });
            }
            Ok(m)
        };
        let msg = match req {
            R::GetFeatures => no_payload(req, Msg::GetFeatures)?,
            R::SetOwner => no_payload(req, Msg::SetOwner)?,
            R::ResetOwner => no_payload(req, Msg::ResetOwner)?,
            R::GetProtocolFeatures => no_payload(req, Msg::GetProtocolFeatures)?,
            R::GetQueueNum => no_payload(req, Msg::GetQueueNum)?,
            R::GetMaxMemSlots => no_payload(req, Msg::GetMaxMemSlots)?,
            R::GetStatus => no_payload(req, Msg::GetStatus)?,
            R::SetFeatures => Msg::SetFeatures(u64_payload(req)?),
            R::SetProtocolFeatures => Msg::SetProtocolFeatures(u64_payload(req)?),
            R::SetStatus => Msg::SetStatus(u64_payload(req)?),
            R::NetSetMtu => Msg::NetSetMtu(u64_payload(req)?),
            R::SetVringNum => Msg::SetVringNum(state(req)?),
            R::SetVringBase => Msg::SetVringBase(state(req)?),
            R::GetVringBase => Msg::GetVringBase(state(req)?),
            R::SetVringEnable => Msg::SetVringEnable(state(req)?),
            R::SetVringAddr => {
                want_size(req, n, 40)?;
                Msg::SetVringAddr(VringAddr {
                    index: le32(payload, 0),
                    flags: le32(payload, 4),
                    desc: le64(payload, 8),
                    used: le64(payload, 16),
                    avail: le64(payload, 24),
                    log: le64(payload, 32),
                })
            }
            R::SetVringKick => {
                let (index, has_fd) = fd_msg(req)?;
                Msg::SetVringKick { index, has_fd }
            }
            R::SetVringCall => {
                let (index, has_fd) = fd_msg(req)?;
                Msg::SetVringCall { index, has_fd }
            }
            R::SetVringErr => {
                let (index, has_fd) = fd_msg(req)?;
                Msg::SetVringErr { index, has_fd }
            }
            R::SetMemTable => {
                if n < 8 {
                    return Err(MsgError::BadSize { req, got: n, want: 8 });
                }
                let count = le32(payload, 0);
                if count == 0 || count as usize > MAX_MEM_TABLE_REGIONS {
                    return Err(MsgError::BadRegionCount(count));
                }
                // Senders pad the table to 8 regions (QEMU) or send exactly `count`.
                let exact = 8 + count as usize * MemRegion::LEN;
                let padded = 8 + MAX_MEM_TABLE_REGIONS * MemRegion::LEN;
                if n != exact && n != padded {
                    return Err(MsgError::BadSize { req, got: n, want: exact });
                }
                want_fds(req, nfds, count as usize)?;
                let regions =
                    (0..count as usize).map(|i| MemRegion::decode(&payload[8 + i * MemRegion::LEN..])).collect();
                Msg::SetMemTable(regions)
            }
            R::AddMemReg | R::RemMemReg => {
                want_size(req, n, 8 + MemRegion::LEN)?;
                let r = MemRegion::decode(&payload[8..]);
                if req == R::AddMemReg {
                    want_fds(req, nfds, 1)?;
                    Msg::AddMemReg(r)
                } else {
                    // Some frontends send the region's fd with REM_MEM_REG too.
                    if nfds > 1 {
                        return Err(MsgError::BadFdCount { req, got: nfds, want: 0 });
                    }
                    Msg::RemMemReg(r)
                }
            }
            R::SetLogBase | R::SetLogFd | R::SendRarp => Msg::Ignored(req),
        };
        // Only these requests carry fds; any fd on another is a protocol error.
        let fd_ok = matches!(
            req,
            R::SetMemTable
                | R::SetVringKick
                | R::SetVringCall
                | R::SetVringErr
                | R::AddMemReg
                | R::RemMemReg
                | R::SetLogBase
                | R::SetLogFd
        );
        if !fd_ok && nfds != 0 {
            return Err(MsgError::BadFdCount { req, got: nfds, want: 0 });
        }
        Ok(msg)
    }
}

/// Encoders for the frontend's requests and the backend's replies.
pub mod encode {
    use super::{MemRegion, VringAddr, VringState, MAX_MEM_TABLE_REGIONS};

    /// A u64 payload.
    pub fn u64(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }
    /// A vring state payload.
    pub fn state(s: VringState) -> Vec<u8> {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(&s.index.to_le_bytes());
        v.extend_from_slice(&s.num.to_le_bytes());
        v
    }
    /// A vring address payload.
    pub fn addr(a: VringAddr) -> Vec<u8> {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&a.index.to_le_bytes());
        v.extend_from_slice(&a.flags.to_le_bytes());
        for x in [a.desc, a.used, a.avail, a.log] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }
    /// A memory table payload (padded to 8 regions as QEMU does).
    pub fn mem_table(regions: &[MemRegion]) -> Vec<u8> {
        assert!(regions.len() <= MAX_MEM_TABLE_REGIONS);
        let mut v = Vec::with_capacity(8 + 32 * MAX_MEM_TABLE_REGIONS);
        v.extend_from_slice(&(regions.len() as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        for r in regions {
            r.encode_into(&mut v);
        }
        v.resize(8 + 32 * MAX_MEM_TABLE_REGIONS, 0);
        v
    }
    /// A single-region payload (ADD_MEM_REG / REM_MEM_REG).
    pub fn one_region(r: &MemRegion) -> Vec<u8> {
        let mut v = vec![0u8; 8];
        r.encode_into(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(req: Request, size: usize) -> Header {
        Header { request: req as u32, flags: FLAG_VERSION, size: size as u32 }
    }

    #[test]
    fn roundtrips() {
        let a = VringAddr { index: 1, flags: 0, desc: 0x1000, used: 0x3000, avail: 0x2000, log: 0 };
        let p = encode::addr(a);
        assert_eq!(Msg::decode(&h(Request::SetVringAddr, p.len()), &p, 0), Ok(Msg::SetVringAddr(a)));
        let r = MemRegion { guest_phys_addr: 1, memory_size: 2, userspace_addr: 3, mmap_offset: 4 };
        let p = encode::mem_table(&[r, r]);
        assert_eq!(Msg::decode(&h(Request::SetMemTable, p.len()), &p, 2), Ok(Msg::SetMemTable(vec![r, r])));
        let hd = h(Request::GetFeatures, 0);
        assert_eq!(Header::decode(&hd.encode()), hd);
    }

    #[test]
    fn refuses_bad_sizes_and_counts() {
        // truncated
        assert!(matches!(Msg::decode(&h(Request::SetVringAddr, 39), &[0; 39], 0), Err(MsgError::BadSize { .. })));
        // u64 with 4 bytes
        assert!(matches!(Msg::decode(&h(Request::SetFeatures, 4), &[0; 4], 0), Err(MsgError::BadSize { .. })));
        // mem table: 9 regions
        let mut p = vec![0u8; 8 + 9 * 32];
        p[0] = 9;
        assert_eq!(Msg::decode(&h(Request::SetMemTable, p.len()), &p, 9), Err(MsgError::BadRegionCount(9)));
        // mem table: 2 regions, 1 fd
        let r = MemRegion::default();
        let p = encode::mem_table(&[r, r]);
        assert!(matches!(Msg::decode(&h(Request::SetMemTable, p.len()), &p, 1), Err(MsgError::BadFdCount { .. })));
        // kick with NOFD but an fd attached
        let p = encode::u64(VRING_NOFD_MASK);
        assert!(matches!(Msg::decode(&h(Request::SetVringKick, 8), &p, 1), Err(MsgError::BadFdCount { .. })));
        // kick with an fd expected, none attached
        let p = encode::u64(0);
        assert!(matches!(Msg::decode(&h(Request::SetVringKick, 8), &p, 0), Err(MsgError::BadFdCount { .. })));
        // an fd on a message that carries none
        assert!(matches!(Msg::decode(&h(Request::GetFeatures, 0), &[], 1), Err(MsgError::BadFdCount { .. })));
        assert_eq!(Msg::decode(&h(Request::GetFeatures, 0), &[], 0).map(|_| ()), Ok(()));
        assert_eq!(
            Msg::decode(&Header { request: 999, flags: 1, size: 0 }, &[], 0),
            Err(MsgError::UnknownRequest(999))
        );
        assert!(matches!(Msg::decode(&Header { request: 1, flags: 0, size: 0 }, &[], 0), Err(MsgError::BadVersion(0))));
    }
}
