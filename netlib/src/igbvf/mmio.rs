// Volatile 32-bit access to the VF's BAR0 registers, mapped through VFIO.
// One of netlib's few `unsafe` modules: every access is bounds- and alignment-checked.
//! BAR0 register access.
#![allow(unsafe_code)]

use crate::vfio::BarMap;

/// BAR0 of the VF, mapped.
#[derive(Debug)]
pub struct Mmio {
    bar: BarMap,
}

impl Mmio {
    /// Wraps a mapped BAR0.
    pub fn new(bar: BarMap) -> Self {
        Self { bar }
    }

    #[inline]
    fn at(&self, off: u32) -> *mut u32 {
        let off = off as usize;
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.bar.len(),
            "register {off:#x} outside BAR0 ({:#x})",
            self.bar.len()
        );
        // SAFETY: in bounds and 4-byte aligned (checked above; the mapping is page aligned).
        unsafe { self.bar.ptr().as_ptr().add(off).cast() }
    }

    /// Reads register `off`.
    #[inline]
    pub fn read(&self, off: u32) -> u32 {
        let p = self.at(off);
        // SAFETY: p is an aligned register inside our live BAR mapping; device memory
        // must be read with exactly one 32-bit volatile load.
        u32::from_le(unsafe { std::ptr::read_volatile(p) })
    }

    /// Writes register `off`.
    #[inline]
    pub fn write(&self, off: u32, v: u32) {
        let p = self.at(off);
        // SAFETY: as in read(): an aligned register inside our live BAR mapping.
        unsafe { std::ptr::write_volatile(p, v.to_le()) }
    }
}
