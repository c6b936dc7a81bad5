// The VF's receive interrupt in user space: MSI-X vector 0 signals an eventfd through
// VFIO, the receive queue's cause is routed to it (IVAR0), and it is unmasked only while
// the owner sleeps, so that polling never takes an interrupt.
//! igbvf receive interrupts.
//!
//! Set up on first use ([`IgbVf::arm_rx_interrupt`], or [`crate::Port::wait_rx`]):
//! `VFIO_DEVICE_SET_IRQS` gives MSI-X vector [`RX_VECTOR`] an eventfd, and the VF routes
//! receive queue 0's cause to that vector (`VTIVAR0`) with auto-clear (`VTEIAC`), as
//! Linux's igbvf does for its receive vector. The vector stays masked (`VTEIMC`) while
//! the owner polls; arming clears a stale cause (`VTEICR`), unmasks it (`VTEIMS`) and
//! looks at the next receive descriptor once more, so a frame that came in meanwhile is
//! never slept through. Where VFIO gives no interrupt (no interrupt remapping, an old
//! kernel), the port logs it once and naps instead.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::desc::{RxWb, Which};
use super::{regs, IgbVf, State};
use crate::pool::PktPool;
use crate::vfio::VfioError;

/// The MSI-X vector the receive queue interrupts on.
pub const RX_VECTOR: u32 = 0;
/// That vector's bit in the VF's interrupt registers.
const RX_BIT: u32 = 1 << RX_VECTOR;

/// The receive interrupt: not tried yet, working, or unavailable.
#[derive(Debug, Default)]
pub(super) enum RxIrq {
    /// Set up on first use.
    #[default]
    Untried,
    /// MSI-X vector [`RX_VECTOR`] signals this eventfd.
    On(EventFd),
    /// VFIO refused (logged once): the port naps instead.
    Off,
}

impl IgbVf {
    /// Interrupt mode: unmasks the receive interrupt (setting it up on first use) and
    /// returns whether a frame is already waiting (looked at after unmasking, so none
    /// is missed). Without a usable interrupt it returns `false` and
    /// [`Self::rx_interrupt_fd`] is `None`.
    pub fn arm_rx_interrupt(&mut self) -> bool {
        if matches!(self.irq, RxIrq::Untried) {
            self.irq = match self.enable_rx_irq() {
                Ok(fd) => {
                    tracing::info!(
                        "{}: receive interrupt on MSI-X vector {RX_VECTOR} (eventfd through VFIO)",
                        self.name
                    );
                    RxIrq::On(fd)
                }
                Err(e) => {
                    tracing::warn!("{}: no receive interrupt ({e}): interrupt mode naps instead", self.name);
                    RxIrq::Off
                }
            };
        }
        if !matches!(self.irq, RxIrq::On(_)) || self.state != State::Up {
            return false;
        }
        self.mmio.write(regs::EICR, RX_BIT);
        self.mmio.write(regs::EIMS, RX_BIT);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.rx_waiting()
    }

    /// The eventfd the receive interrupt signals (once armed at least once).
    pub fn rx_interrupt_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.irq {
            RxIrq::On(fd) => Some(fd.as_fd()),
            _ => None,
        }
    }

    /// Back to polling: masks the receive interrupt; `woken` says whether its eventfd was
    /// readable (it is read, so it does not stay readable).
    pub fn disarm_rx_interrupt(&mut self, woken: bool) {
        if let RxIrq::On(fd) = &self.irq {
            self.mmio.write(regs::EIMC, RX_BIT);
            if woken {
                let _ = fd.read();
            }
        }
    }

    /// Sleeps until a frame arrives or `timeout` passes, on the receive interrupt where
    /// there is one; returns whether it was woken.
    pub(super) fn sleep_rx(&mut self, pool: &mut PktPool, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        if self.state != State::Up {
            self.control(pool);
        }
        if self.arm_rx_interrupt() {
            self.disarm_rx_interrupt(false);
            return true;
        }
        let RxIrq::On(fd) = &self.irq else {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            return false;
        };
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let woke = poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0;
        self.disarm_rx_interrupt(woke);
        woke
    }

    /// Whether the next receive descriptor holds a frame.
    fn rx_waiting(&self) -> bool {
        self.rx_posted > 0 && RxWb::from_hi(self.rings.read_hi(Which::Rx, self.rx_next)).done()
    }

    /// Gives MSI-X vector [`RX_VECTOR`] a fresh eventfd and routes the receive queue to it.
    fn enable_rx_irq(&mut self) -> Result<EventFd, VfioError> {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| VfioError::Irq { pci: self.pci.clone(), why: format!("eventfd: {e}") })?;
        self.vfio.device.enable_msix(RX_VECTOR, fd.as_fd())?;
        self.route_rx_irq();
        Ok(fd)
    }

    /// Routes receive queue 0 to [`RX_VECTOR`], auto-cleared, masked (when the interrupt
    /// is on: again after every reset of the VF).
    pub(super) fn route_rx_irq(&self) {
        self.mmio.write(regs::EIMC, RX_BIT);
        self.mmio.write(regs::IVAR0, regs::IVAR_VALID | RX_VECTOR);
        self.mmio.write(regs::EIAC, RX_BIT);
    }

    /// Turns the interrupt off before the device goes (Drop).
    pub(super) fn release_rx_irq(&mut self) {
        if let RxIrq::On(_) = self.irq {
            self.mmio.write(regs::EIMC, RX_BIT);
            if let Err(e) = self.vfio.device.disable_msix() {
                tracing::warn!("{}: {e}", self.name);
            }
            self.irq = RxIrq::Off;
        }
    }
}
