// Register map of the 82576 virtual function as its BAR0 shows it (offsets as in
// Linux igbvf's regs.h/defines.h and the 82576 datasheet, chapter 8.x "VF registers").
//! igbvf register offsets and bits.

/// Size of BAR0 (16 KiB).
pub const BAR0_SIZE: usize = 0x4000;

/// Device control; `CTRL_RST` resets the VF.
pub const CTRL: u32 = 0x0000;
/// Device status (the PF's, read-only for the VF).
pub const STATUS: u32 = 0x0008;
/// Extended interrupt mask set (VTEIMS): a 1 enables that MSI-X vector's causes.
pub const EIMS: u32 = 0x1524;
/// Extended interrupt mask clear.
pub const EIMC: u32 = 0x1528;
/// Extended interrupt auto clear: causes cleared when their MSI-X message is sent.
pub const EIAC: u32 = 0x152C;
/// Extended interrupt cause (VTEICR): write 1 to clear.
pub const EICR: u32 = 0x1580;
/// Interrupt vector allocation for queue 0 (VTIVAR0): byte 0 the receive queue's
/// MSI-X vector, byte 1 the transmit queue's, each valid with [`IVAR_VALID`].
pub const IVAR0: u32 = 0x1700;
/// `IVAR0`: the entry is valid.
pub const IVAR_VALID: u32 = 0x80;

/// `CTRL`: VF reset.
pub const CTRL_RST: u32 = 1 << 26;
/// `STATUS`: link up.
pub const STATUS_LU: u32 = 1 << 1;

/// Receive queue 0 registers.
pub const RDBAL: u32 = 0x2800;
/// Receive descriptor base high.
pub const RDBAH: u32 = 0x2804;
/// Receive ring length in bytes.
pub const RDLEN: u32 = 0x2808;
/// Split and replication receive control.
pub const SRRCTL: u32 = 0x280C;
/// Receive head.
pub const RDH: u32 = 0x2810;
/// Receive tail.
pub const RDT: u32 = 0x2818;
/// Receive descriptor control.
pub const RXDCTL: u32 = 0x2828;

/// Transmit queue 0 registers.
pub const TDBAL: u32 = 0x3800;
/// Transmit descriptor base high.
pub const TDBAH: u32 = 0x3804;
/// Transmit ring length in bytes.
pub const TDLEN: u32 = 0x3808;
/// Transmit head.
pub const TDH: u32 = 0x3810;
/// Transmit tail.
pub const TDT: u32 = 0x3818;
/// Transmit descriptor control.
pub const TXDCTL: u32 = 0x3828;
/// Head write-back address low (0: descriptor write-back).
pub const TDWBAL: u32 = 0x3838;
/// Head write-back address high.
pub const TDWBAH: u32 = 0x383C;

/// `SRRCTL`: packet buffer size in KiB units, bits 6:0.
pub const SRRCTL_BSIZEPKT_SHIFT: u32 = 10;
/// `SRRCTL`: advanced descriptors, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 0x0200_0000;
/// `SRRCTL`: drop packets when no descriptor is free (instead of stalling the pool).
pub const SRRCTL_DROP_EN: u32 = 0x8000_0000;
/// `RXDCTL`/`TXDCTL`: queue enable.
pub const DCTL_QUEUE_ENABLE: u32 = 0x0200_0000;

/// Statistics: good packets received.
pub const VFGPRC: u32 = 0x0F10;
/// Statistics: good packets transmitted.
pub const VFGPTC: u32 = 0x0F14;
/// Statistics: good octets received.
pub const VFGORC: u32 = 0x0F18;
/// Statistics: good octets transmitted.
pub const VFGOTC: u32 = 0x0F34;
/// Statistics: multicast packets received.
pub const VFMPRC: u32 = 0x0F3C;

/// The VF's mailbox control register.
pub const V2PMAILBOX: u32 = 0x0C40;
/// The mailbox memory: 16 words.
pub const VMBMEM: u32 = 0x0800;
/// Words in the mailbox memory.
pub const VMBMEM_WORDS: usize = 16;

/// `V2PMAILBOX`: request for PF ready (VF wrote a message).
pub const MB_REQ: u32 = 0x01;
/// `V2PMAILBOX`: VF acknowledges a PF message.
pub const MB_ACK: u32 = 0x02;
/// `V2PMAILBOX`: buffer taken by the VF.
pub const MB_VFU: u32 = 0x04;
/// `V2PMAILBOX`: buffer taken by the PF.
pub const MB_PFU: u32 = 0x08;
/// `V2PMAILBOX`: PF wrote a message (read to clear).
pub const MB_PFSTS: u32 = 0x10;
/// `V2PMAILBOX`: PF acknowledged our message (read to clear).
pub const MB_PFACK: u32 = 0x20;
/// `V2PMAILBOX`: PF reset in progress.
pub const MB_RSTI: u32 = 0x40;
/// `V2PMAILBOX`: VF reset done (read to clear).
pub const MB_RSTD: u32 = 0x80;
/// The read-to-clear bits, which the driver keeps sticky in software.
pub const MB_R2C_BITS: u32 = MB_RSTD | MB_PFSTS | MB_PFACK;

/// Every register offset the driver uses, for tests that they fit in BAR0.
pub const ALL: &[u32] = &[
    CTRL, STATUS, EIMS, EIMC, EIAC, EICR, IVAR0, RDBAL, RDBAH, RDLEN, SRRCTL, RDH, RDT, RXDCTL, TDBAL, TDBAH, TDLEN,
    TDH, TDT, TXDCTL, TDWBAL, TDWBAH, VFGPRC, VFGPTC, VFGORC, VFGOTC, VFMPRC, V2PMAILBOX, VMBMEM,
];
