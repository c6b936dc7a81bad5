// vf_fault: makes a VF read memory that was never mapped for it, so the IOMMU must
// refuse the DMA (the guest test looks for the DMAR fault in dmesg), and checks the PMD refuses foreign packets.
//! Fault probe for the igbvf PMD.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use fastpath_examples::init_logging;
use netlib::igbvf::{IgbVf, IgbVfOptions};
use netlib::pool::PoolOptions;
use netlib::{PktPool, Port};

/// Posts one transmit descriptor at an address that was never DMA-mapped and
/// reports (one JSON line) what the device and the PMD did.
#[derive(Debug, Parser)]
#[command(version, about = "igbvf fault probe: a DMA from an unmapped IOVA, and a packet from an unmapped pool")]
struct Args {
    /// The VF's PCI address (bound to vfio-pci).
    #[arg(long)]
    pci: String,
    /// How long to wait for the descriptor's DD, in milliseconds.
    #[arg(long, default_value_t = 500)]
    wait_ms: u64,
    /// Packet buffers in the (mapped) pool.
    #[arg(long, default_value_t = 256)]
    nbufs: u32,
}

fn main() -> Result<()> {
    init_logging();
    let a = Args::parse();
    let mut pool = PktPool::new(&PoolOptions { nbufs: a.nbufs, hugedir: None, ..Default::default() })
        .context("creating the pool")?;
    let mut vf = IgbVf::open(&a.pci, &mut pool, IgbVfOptions { queue_size: 64, ..Default::default() })
        .with_context(|| format!("opening VF {}", a.pci))?;
    // Heap memory: ours, but never given to the IOMMU.
    let unmapped = vec![0x5au8; 8192];
    let iova = (unmapped.as_ptr() as u64 + 4095) & !4095;
    let raw = vf.post_raw_tx(&mut pool, iova, 60, Duration::from_millis(a.wait_ms));
    // A packet from a second, unmapped pool must be refused without reaching the NIC.
    let mut other = PktPool::new(&PoolOptions { nbufs: 8, hugedir: None, ..Default::default() })
        .context("creating the second pool")?;
    let mut pkts = netlib::pool::burst_vec();
    let mut p = other.alloc().context("second pool empty")?;
    other.set_len(&mut p, 60).fill(0xee);
    pkts.push(p);
    let taken = vf.tx_burst(&mut other, &mut pkts);
    other.free_all(&mut pkts);
    let c = vf.counters();
    let hw = vf.hw_stats();
    let v = serde_json::json!({
        "pci": a.pci,
        "mac": netlib::igbvf::MacFmt(vf.mac()).to_string(),
        "unmapped_iova": format!("{iova:#x}"),
        "dd": raw.dd,
        "tdh": raw.tdh,
        "tdt": raw.tdt,
        "waited_us": raw.waited.as_micros() as u64,
        "foreign_pool_taken": taken,
        "tx_dropped": c.tx_dropped,
        "wrong_pool": c.wrong_pool,
        "hw_tx_packets": hw.tx_packets,
        "note": "QEMU's igb sets DD even when the IOMMU refused the read: the fault shows in the guest's dmesg (DMAR)",
    });
    println!("{v}");
    drop(unmapped);
    Ok(())
}
