// SR-IOV: setting the number of VFs a PF has (through 0 when changing a non-zero count, as the
// kernel requires) and waiting for them to appear.
//! Creating VFs.

use super::{Error, Pci, Result};

impl Pci {
    /// Sets the number of VFs of a PF (through 0 when changing a non-zero count, as the kernel
    /// requires) and waits for them; returns their addresses.
    pub fn set_numvfs(&self, pf: &str, n: u32) -> Result<Vec<String>> {
        let d = self.existing(pf)?;
        let total_p = d.join("sriov_totalvfs");
        if !total_p.exists() {
            return Err(Error::NotPf { pci: pf.into(), path: total_p });
        }
        let total: u32 = Self::read_num(pf, &total_p)?;
        if n > total {
            return Err(Error::TooManyVfs { pci: pf.into(), path: total_p, total, wanted: n });
        }
        let num_p = d.join("sriov_numvfs");
        let cur: u32 = Self::read_num(pf, &num_p)?;
        if cur != n {
            if cur != 0 && n != 0 {
                self.write(pf, &num_p, "0")?;
            }
            self.write(pf, &num_p, &n.to_string())?;
        }
        if !self.wait(|| self.vfs_of(pf).len() == n as usize) {
            return Err(Error::Timeout {
                pci: pf.into(),
                path: d.join("virtfn*"),
                want: format!("{n} VFs"),
                got: format!("{} VFs", self.vfs_of(pf).len()),
                waited: self.timeout,
            });
        }
        Ok(self.vfs_of(pf))
    }
}
