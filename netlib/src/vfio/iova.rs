// The usable IOVA ranges the type1 IOMMU reports (VFIO_IOMMU_GET_INFO's capability chain),
// and the check that memory mapped at IOVA == VA lies inside one of them.
//! IOMMU information and IOVA ranges.

use super::error::VfioError;
use super::sys;

/// The x86 MSI window: never usable as IOVA.
pub const MSI_WINDOW: IovaRange = IovaRange { start: 0xfee0_0000, end: 0xfeef_ffff };

/// One usable IOVA range, both ends inclusive (as VFIO reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA.
    pub end: u64,
}

impl std::fmt::Display for IovaRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end)
    }
}

/// What the type1 IOMMU told us: page sizes, usable IOVA ranges and how many
/// more mappings it takes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IommuInfo {
    /// Bitmap of page sizes the IOMMU supports.
    pub pgsizes: u64,
    /// Usable IOVA ranges (empty: the kernel did not say, and every address is tried).
    pub ranges: Vec<IovaRange>,
    /// DMA mappings still available, when the kernel says.
    pub dma_avail: Option<u32>,
}

fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
pub(super) fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

impl IommuInfo {
    /// Parses a `vfio_iommu_type1_info` buffer with its capability chain. Bad
    /// chains (offsets out of the buffer, loops) end the walk; what was read stays.
    pub fn parse(buf: &[u8]) -> Self {
        let mut info = IommuInfo::default();
        let flags = rd_u32(buf, 4).unwrap_or(0);
        if flags & sys::IOMMU_INFO_PGSIZES != 0 {
            info.pgsizes = rd_u64(buf, 8).unwrap_or(0);
        }
        if flags & sys::IOMMU_INFO_CAPS == 0 {
            return info;
        }
        let mut off = rd_u32(buf, 16).unwrap_or(0) as usize;
        let mut hops = 0;
        while off != 0 && hops < 16 {
            hops += 1;
            let (Some(id), Some(next)) = (rd_u16(buf, off), rd_u32(buf, off + 4)) else { break };
            match id {
                sys::CAP_IOVA_RANGE => {
                    let n = rd_u32(buf, off + 8).unwrap_or(0) as usize;
                    for i in 0..n.min(256) {
                        let at = off + 16 + i * 16;
                        match (rd_u64(buf, at), rd_u64(buf, at + 8)) {
                            (Some(start), Some(end)) if start <= end => info.ranges.push(IovaRange { start, end }),
                            _ => break,
                        }
                    }
                }
                sys::CAP_DMA_AVAIL => info.dma_avail = rd_u32(buf, off + 8),
                _ => {}
            }
            if next as usize <= off {
                break;
            }
            off = next as usize;
        }
        info
    }

    /// Checks that `[start, start+len)` lies inside one usable range.
    pub fn check(&self, start: u64, len: u64) -> Result<(), VfioError> {
        let bad = || VfioError::NotInIovaWindow { start, len, usable: self.describe() };
        if len == 0 {
            return Err(bad());
        }
        let last = start.checked_add(len - 1).ok_or_else(bad)?;
        let in_msi = start <= MSI_WINDOW.end && last >= MSI_WINDOW.start;
        if in_msi {
            return Err(bad());
        }
        if self.ranges.is_empty() || self.ranges.iter().any(|r| r.start <= start && last <= r.end) {
            Ok(())
        } else {
            Err(bad())
        }
    }

    pub(super) fn describe(&self) -> String {
        if self.ranges.is_empty() {
            return "not reported".into();
        }
        self.ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> IommuInfo {
        IommuInfo {
            pgsizes: 0x4020_1000,
            ranges: vec![
                IovaRange { start: 0, end: 0xfedf_ffff },
                IovaRange { start: 0xfef0_0000, end: 0xffff_ffff_ffff },
            ],
            dma_avail: Some(65535),
        }
    }

    #[test]
    fn iova_check_accepts_usable_and_refuses_holes() {
        let i = ranges();
        i.check(0x7f00_0000_0000, 1 << 21).unwrap();
        i.check(0x4c_9000, 4096).unwrap();
        // Ends exactly at the last usable byte.
        i.check(0xffff_ffff_f000, 0x1000).unwrap();
        // One byte too far.
        assert!(i.check(0xffff_ffff_f000, 0x1001).is_err());
        // Inside, straddling and touching the MSI window.
        assert!(i.check(0xfee0_1000, 4096).is_err());
        assert!(i.check(0xfedf_f000, 0x2000).is_err());
        assert!(i.check(0xfeef_f000, 0x1000).is_err());
        i.check(0xfef0_0000, 0x1000).unwrap();
        assert!(i.check(0x1000, 0).is_err());
        assert!(i.check(u64::MAX - 10, 100).is_err());
        // Nothing reported: everything but the MSI window is tried.
        let none = IommuInfo::default();
        none.check(0x1000, 0x1000).unwrap();
        assert!(none.check(0xfee0_0000, 4).is_err());
    }

    #[test]
    fn iova_error_names_range_and_windows() {
        let e = ranges().check(0xfee0_0000, 0x2000).unwrap_err().to_string();
        assert!(e.contains("0xfee00000-0xfee01fff"), "{e}");
        assert!(e.contains("0x0-0xfedfffff, 0xfef00000-0xffffffffffff"), "{e}");
        assert!(e.contains("MSI window 0xfee00000-0xfeefffff"), "{e}");
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(b: &mut [u8], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn parses_iommu_info_caps() {
        let mut b = vec![0u8; 96];
        put32(&mut b, 0, 96);
        put32(&mut b, 4, sys::IOMMU_INFO_PGSIZES | sys::IOMMU_INFO_CAPS);
        put64(&mut b, 8, 0x4020_1000);
        put32(&mut b, 16, 24);
        // IOVA range cap at 24: header (id 1, version 1, next 72), nr 2, reserved, 2 ranges.
        b[24..26].copy_from_slice(&sys::CAP_IOVA_RANGE.to_le_bytes());
        put32(&mut b, 28, 72);
        put32(&mut b, 32, 2);
        put64(&mut b, 40, 0);
        put64(&mut b, 48, 0xfedf_ffff);
        put64(&mut b, 56, 0xfef0_0000);
        put64(&mut b, 64, 0xffff_ffff_ffff);
        // DMA avail cap at 72, last.
        b[72..74].copy_from_slice(&sys::CAP_DMA_AVAIL.to_le_bytes());
        put32(&mut b, 76, 0);
        put32(&mut b, 80, 65535);
        assert_eq!(IommuInfo::parse(&b), ranges());
        // A chain pointing outside the buffer or backwards stops the walk.
        put32(&mut b, 28, 10_000);
        assert_eq!(IommuInfo::parse(&b).ranges.len(), 2);
        put32(&mut b, 28, 8);
        assert_eq!(IommuInfo::parse(&b).dma_avail, None);
    }
}
