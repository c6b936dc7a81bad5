// `fastpathctl vf` against a fake sysfs tree (fastpath-host's pci::fake): what a person sees from
// list, the refusals naming the value, and bind --owner preparing the group node.
//! fastpathctl vf.

use fastpath_host::pci::fake::FakeTree;
use std::process::Command;

struct T(FakeTree);
impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0.dir);
    }
}

fn ctl(t: &FakeTree, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fastpathctl"))
        .arg("vf")
        .arg("--sysfs")
        .arg(&t.sys)
        .arg("--dev")
        .arg(t.dir.join("dev"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tree(name: &str) -> T {
    let t = FakeTree::new(&format!("ctl-{name}"), true);
    t.pf("0000:01:00.0", 7, &["0000:01:10.0", "0000:01:10.2"], 5);
    t.pci().set_numvfs("0000:01:00.0", 2).unwrap();
    t.pci().bind_vfio("0000:01:10.2").unwrap();
    t.device("0000:02:00.0", (0x8086, 0x10ca), Some("igbvf"), None);
    T(t)
}

#[test]
fn list_table_and_json() {
    let t = tree("list");
    let (ok, out, err) = ctl(&t.0, &["list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("PCI") && lines[0].contains("GROUP"), "{out}");
    assert!(
        lines[1].starts_with("0000:01:00.0  8086:10c9  igb")
            && lines[1].contains("PF 2/7 VFs")
            && lines[1].ends_with("eth0"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("0000:01:10.0  8086:10ca  igbvf") && lines[2].contains("VF 0 of 0000:01:00.0"),
        "{out}"
    );
    assert!(lines[3].starts_with("0000:01:10.2  8086:10ca  vfio-pci") && lines[3].contains("    6  VF 1 of"), "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    let (ok, out, _) = ctl(&t.0, &["list", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["role"]["kind"], "pf");
    assert_eq!(v[0]["role"]["vfs"][1], "0000:01:10.2");
    assert_eq!(v[2]["driver"], "vfio-pci");
    assert_eq!(v[2]["iommu_group"], 6);
    let (ok, out, _) = ctl(&t.0, &["list", "--all"]);
    assert!(ok && out.contains("0000:02:00.0"), "{out}");
}

#[test]
fn refusals_name_the_value() {
    let t = tree("refuse");
    let (ok, _, err) = ctl(&t.0, &["bind", "01:10"]);
    assert!(!ok);
    assert!(err.contains("'01:10' is not a PCI address"), "{err}");
    let (ok, _, err) = ctl(&t.0, &["bind", "0000:02:00.0"]);
    assert!(!ok && err.contains("0000:02:00.0 has no IOMMU group"), "{err}");
    let (ok, _, err) = ctl(&t.0, &["bind", "0000:09:00.0"]);
    assert!(!ok && err.contains("0000:09:00.0: no such PCI device"), "{err}");
    let (ok, _, err) = ctl(&t.0, &["create", "0000:01:10.0", "1"]);
    assert!(!ok && err.contains("0000:01:10.0 is not an SR-IOV PF"), "{err}");
    let (ok, _, err) = ctl(&t.0, &["create", "0000:01:00.0", "9"]);
    assert!(!ok && err.contains("supports at most 7 VFs"), "{err}");
    let (ok, _, err) = ctl(&t.0, &["bind", "0000:01:10.2", "--owner", "me"]);
    assert!(!ok && err.contains("--owner 'me' is not UID:GID"), "{err}");
    let (ok, out, _) = ctl(&t.0, &["unbind", "0000:01:10.0"]);
    assert!(ok && out.contains("0000:01:10.0: on igbvf, not vfio-pci: left alone"), "{out}");
}

#[test]
fn bind_owner_prepares_the_group_node() {
    let t = tree("owner");
    // Node files stand in for the char devices (mknod needs CAP_MKNOD in a real /dev).
    std::fs::write(t.0.dir.join("dev/vfio/vfio"), "").unwrap();
    std::fs::write(t.0.dir.join("dev/vfio/6"), "").unwrap();
    let me = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    let (ok, out, err) = ctl(&t.0, &["bind", "01:10.2", "--owner", &me]);
    assert!(ok, "{err}");
    assert!(out.contains("0000:01:10.2: already on vfio-pci; IOMMU group 6"), "{out}");
    assert!(out.contains(&format!("dev/vfio/6: c 243:6, owner {me}, mode 0660 (chmod 0660)")), "{out}");
    assert!(out.contains("dev/vfio/vfio: c 10:196") && out.contains("mode 0666"), "{out}");
}
