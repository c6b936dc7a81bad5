// Our own regions (create, bounds) and a peer's memory (translation that stays
// inside one region, writes that skip equal bytes, refused overlapping regions).
//! Memory tests.

use std::os::fd::AsFd;

use super::*;

#[test]
fn memfd_region_roundtrip_and_bounds() {
    let mut r = Region::create(None, 10_000).unwrap();
    assert!(r.map().len() >= 10_000);
    r.map_mut().slice_mut(0, 4).unwrap().copy_from_slice(b"abcd");
    assert_eq!(r.map().slice(0, 4).unwrap(), b"abcd");
    assert!(r.map().slice(r.map().len() - 1, 2).is_err());
    assert!(r.map().slice(usize::MAX, 2).is_err());
}

#[test]
fn guest_memory_translates_only_inside_regions() {
    let mut r = Region::create(None, 8192).unwrap();
    r.map_mut().slice_mut(100, 3).unwrap().copy_from_slice(b"xyz");
    let len = r.map().len() as u64;
    let mut g = GuestMemory::default();
    g.add_region(r.fd(), 0x1000_0000, 0x7000_0000, len, 0).unwrap();
    let s = g.translate(0x1000_0000 + 100, 3).unwrap();
    let mut out = [0u8; 3];
    assert!(g.read(s, 0, &mut out));
    assert_eq!(&out, b"xyz");
    assert!(!g.read(s, 1, &mut out), "read past the span");
    assert!(g.translate(0x1000_0000 + len - 1, 2).is_none(), "straddles the end");
    assert!(g.translate(0x0fff_ffff, 2).is_none(), "starts before");
    assert!(g.translate(u64::MAX, 2).is_none(), "wraps");
    assert!(g.translate_uva(0x7000_0000, len).is_some());
    assert!(g.translate_uva(0x7000_0000, len + 1).is_none());
    // write_unless_equal: bounded like write, and stores only what differs
    assert!(g.write_unless_equal(s, 0, b"xyz"));
    assert!(g.write_unless_equal(s, 1, b"ab"));
    assert!(g.read(s, 0, &mut out));
    assert_eq!(&out, b"xab");
    assert!(!g.write_unless_equal(s, 2, b"ab"), "write past the span");
    assert!(!g.write_unless_equal(s, u32::MAX, b"a"), "offset overflow");
    // overlapping second region is refused
    assert!(g.add_region(r.fd(), 0x1000_0000 + 4096, 0x9000_0000, 4096, 0).is_err());
    // a region past the end of the file is refused
    assert!(g.add_region(r.fd(), 0x2000_0000, 0x9000_0000, len, 4096).is_err());
}

#[test]
fn a_peer_truncating_its_memory_poisons_the_region_instead_of_killing_us() {
    // A peer's file that is not sealed (ours are): a tmpfs file, as a memfd is.
    let path = format!("/dev/shm/fastpath-sigbus-test-{}", std::process::id());
    let f = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let len = 1u64 << 20;
    f.set_len(len).unwrap();
    let mut g = GuestMemory::default();
    g.add_region(f.as_fd(), 0x1000_0000, 0x7000_0000, len, 0).unwrap();
    assert_eq!(g.unsealed(), 1);
    let s = g.translate(0x1000_0000 + 8192, 4).unwrap();
    assert!(g.write(s, 0, b"live"));
    assert!(!g.poisoned());
    let before = sigbus::epoch();
    // The peer shrinks the file under our mapping.
    f.set_len(0).unwrap();
    let mut out = [9u8; 4];
    assert!(g.read(s, 0, &mut out), "the read completes");
    assert_eq!(out, [0; 4], "on zeroed memory");
    assert!(g.poisoned());
    assert!(sigbus::epoch() > before);
    // Writes land in the replacement too, and the table unmaps cleanly.
    assert!(g.write(s, 0, b"dead"));
    drop(g);
}

#[test]
fn our_memfd_regions_are_sealed_against_shrinking() {
    let r = Region::create(None, 1 << 16).unwrap();
    if *r.backing() == Backing::Memfd || *r.backing() == Backing::MemfdHuge {
        assert!(nix::unistd::ftruncate(r.fd(), 0).is_err(), "a sealed memfd can't shrink");
        let mut g = GuestMemory::default();
        g.add_region(r.fd(), 0x1000_0000, 0x7000_0000, r.map().len() as u64, 0).unwrap();
        assert_eq!(g.unsealed(), 0);
    }
}

#[test]
fn a_given_file_is_mapped_unsealed() {
    let fd = nix::sys::memfd::memfd_create(c"given", nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING).unwrap();
    let mut r = Region::from_fd(fd, 3 * 4096).unwrap();
    assert_eq!((r.map().len(), r.backing()), (3 * 4096, &Backing::Given));
    r.map_mut().slice_mut(8191, 2).unwrap().copy_from_slice(b"ok");
    // Its creator may still shrink it: nothing was sealed.
    nix::unistd::ftruncate(r.fd(), 4096).unwrap();
    assert!(matches!(
        Region::from_fd(nix::sys::memfd::memfd_create(c"empty", nix::sys::memfd::MemFdCreateFlag::empty()).unwrap(), 0),
        Err(MemError::BadSize(0))
    ));
}
