// Unit tests of the PCI sysfs module against the fake tree.
use super::fake::FakeTree;
use super::*;

fn tree(name: &str) -> FakeTree {
    let t = FakeTree::new(name, true);
    t.pf("0000:01:00.0", 7, &["0000:01:10.0", "0000:01:10.2"], 5);
    t
}

#[test]
fn create_list_bind_restore() {
    let t = tree("cycle");
    let pci = t.pci();
    let vfs = pci.set_numvfs("0000:01:00.0", 2).unwrap();
    assert_eq!(vfs, vec!["0000:01:10.0", "0000:01:10.2"]);
    let l = pci.list(false).unwrap();
    assert_eq!(l.len(), 3, "{l:?}");
    assert_eq!(l[0].role, Role::Pf { numvfs: 2, totalvfs: 7, vfs: vfs.clone() });
    assert_eq!(l[0].net, vec!["eth0"]);
    assert_eq!(l[1].id(), "8086:10ca");
    assert_eq!(l[1].role, Role::Vf { pf: "0000:01:00.0".into(), index: Some(0) });
    assert_eq!((l[1].driver.as_deref(), l[1].iommu_group), (Some("igbvf"), Some(5)));
    assert_eq!(l[2].role, Role::Vf { pf: "0000:01:00.0".into(), index: Some(1) });

    // Bind records the previous driver and the group; the override is set.
    let b = pci.bind_vfio("0000:01:10.0").unwrap();
    assert_eq!(
        b,
        Binding { pci: "0000:01:10.0".into(), previous_driver: Some("igbvf".into()), group: 5, changed: true }
    );
    assert_eq!(pci.driver("0000:01:10.0").as_deref(), Some(VFIO_PCI));
    assert_eq!(t.read("0000:01:10.0", "driver_override"), "vfio-pci");
    assert_eq!(pci.group_dev(5).unwrap(), (243, 5));
    // A second bind changes nothing.
    assert!(!pci.bind_vfio("0000:01:10.0").unwrap().changed);

    // Nodes for uid 1000 (only reported: chown needs root, so owner = ourselves).
    let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    std::fs::write(t.dir.join("dev/vfio/vfio"), "").unwrap();
    std::fs::write(t.dir.join("dev/vfio/5"), "").unwrap();
    let nodes = pci.prepare_nodes(5, Some(me)).unwrap();
    assert_eq!(nodes[1].path, t.dir.join("dev/vfio/5"));
    assert_eq!((nodes[1].dev, nodes[1].owner, nodes[1].mode), ((243, 5), me, 0o660));
    assert_eq!(nodes[0].mode, 0o666);

    // Restore clears the override and gives it back to igbvf.
    assert_eq!(pci.restore("0000:01:10.0", Some("igbvf")).unwrap().as_deref(), Some("igbvf"));
    assert_eq!(t.read("0000:01:10.0", "driver_override"), "(null)");
    assert!(!t.sys.join("class/vfio/5").exists());
    // Again: nothing to do.
    assert_eq!(pci.restore("0000:01:10.0", Some("igbvf")).unwrap().as_deref(), Some("igbvf"));
    // Without a previous driver, drivers_probe picks the native one.
    pci.bind_vfio("0000:01:10.2").unwrap();
    assert_eq!(pci.restore("0000:01:10.2", None).unwrap().as_deref(), Some("igbvf"));

    // Changing a non-zero count goes through 0; too many is refused naming the limit.
    assert_eq!(pci.set_numvfs("0000:01:00.0", 1).unwrap(), vec!["0000:01:10.0"]);
    let e = pci.set_numvfs("0000:01:00.0", 8).unwrap_err().to_string();
    assert!(e.contains("0000:01:00.0 supports at most 7 VFs") && e.contains("sriov_totalvfs"), "{e}");
    let e = pci.set_numvfs("0000:01:10.0", 1).unwrap_err().to_string();
    assert!(e.contains("0000:01:10.0 is not an SR-IOV PF"), "{e}");
    std::fs::remove_dir_all(&t.dir).unwrap();
}

#[test]
fn errors_name_device_file_and_value() {
    let t = FakeTree::new("errors", false);
    t.device("0000:02:00.0", (0x8086, 0x10ca), Some("igbvf"), None);
    t.device("0000:03:00.0", (0x8086, 0x10ca), Some("igbvf"), Some(9));
    let pci = t.pci();
    let e = pci.bind_vfio("0000:09:00.0").unwrap_err().to_string();
    assert!(e.starts_with("0000:09:00.0: no such PCI device"), "{e}");
    let e = pci.bind_vfio("0000:02:00.0").unwrap_err().to_string();
    assert!(e.starts_with("0000:02:00.0 has no IOMMU group") && e.contains("intel_iommu=on"), "{e}");
    let e = pci.bind_vfio("0000:03:00.0").unwrap_err().to_string();
    assert!(e.starts_with("VFIO is not available:") && e.contains("drivers/vfio-pci does not exist"), "{e}");
    // modprobe that fails says so.
    let e = pci.clone().with_modprobe(Some("false".into())).bind_vfio("0000:03:00.0").unwrap_err().to_string();
    assert!(e.contains("`false vfio-pci` failed"), "{e}");
    assert_eq!(pci.driver("0000:03:00.0").as_deref(), Some("igbvf"));
    // A driver that never takes the device: timeout naming the link, and the device is given back.
    t.add_driver(VFIO_PCI);
    let stuck = Pci::at(&t.sys).with_modprobe(None).with_timeout(Duration::from_millis(50));
    let e = stuck.bind_vfio("0000:03:00.0").unwrap_err().to_string();
    assert!(e.contains("0000:03:00.0/driver is igbvf") && e.contains("waiting for vfio-pci"), "{e}");
    // A write that fails names the file and the value.
    std::fs::remove_file(t.sys.join("bus/pci/devices/0000:03:00.0/driver_override")).unwrap();
    std::fs::create_dir(t.sys.join("bus/pci/devices/0000:03:00.0/driver_override")).unwrap();
    let e = pci.bind_vfio("0000:03:00.0").unwrap_err().to_string();
    assert!(e.starts_with("0000:03:00.0: writing 'vfio-pci' to ") && e.contains("driver_override"), "{e}");
    std::fs::remove_dir_all(&t.dir).unwrap();
}
