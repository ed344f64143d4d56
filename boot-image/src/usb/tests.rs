//! Every refusal, the test override's limits and the confirmation, on a
//! faked sysfs/procfs (see `fake.rs`).

use std::path::{Path, PathBuf};

use super::checks::{Policy, Refusal, check};
use super::fake::{Bus, DiskSpec, FakeSystem, NODE_FILL, NODE_LEN};
use super::{Error, Request, flash};

const IMAGE_LEN: u64 = 48 << 20;
const TEST_LOOP: Policy = Policy {
    allow_test_loop: true,
};

fn refusals(system: &FakeSystem, policy: Policy, device: &Path) -> Vec<Refusal> {
    match check(&system.view(), policy, device, IMAGE_LEN) {
        Ok(checked) => panic!("{} passed: {checked:?}", device.display()),
        Err(refusals) => refusals,
    }
}

fn with_stick(test: &str) -> (FakeSystem, PathBuf) {
    let mut system = FakeSystem::new(test);
    let stick = system.disk("sdb", "8:16", DiskSpec::usb_stick());
    system.partition("sdb", "sdb1", "8:17");
    (system, stick)
}

#[test]
fn a_usb_stick_passes_and_is_described() {
    let (system, stick) = with_stick("stick");
    let checked = check(&system.view(), Policy::default(), &stick, IMAGE_LEN).unwrap();
    assert_eq!(checked.disk.name, "sdb");
    assert!(checked.notes.is_empty());
    assert_eq!(
        super::confirm::describe(&checked.disk),
        "sdb: SanDisk Cruzer Blade, 14.9 GiB, USB, removable"
    );
}

#[test]
fn usb_attached_or_removable_is_enough() {
    let mut system = FakeSystem::new("either");
    let usb_ssd = system.disk(
        "sdc",
        "8:32",
        DiskSpec {
            bus: Bus::Usb,
            ..DiskSpec::internal()
        },
    );
    let card_reader = system.disk(
        "sdd",
        "8:48",
        DiskSpec {
            removable: true,
            ..DiskSpec::internal()
        },
    );
    for device in [usb_ssd, card_reader] {
        assert!(check(&system.view(), Policy::default(), &device, IMAGE_LEN).is_ok());
    }
}

#[test]
fn an_internal_disk_is_refused() {
    let mut system = FakeSystem::new("internal");
    let disk = system.disk("sda", "8:0", DiskSpec::internal());
    assert_eq!(
        refusals(&system, Policy::default(), &disk),
        [Refusal::NotRemovable { disk: "sda".into() }]
    );
    // The loop override is for loop devices only.
    assert_eq!(
        refusals(&system, TEST_LOOP, &disk),
        [Refusal::NotRemovable { disk: "sda".into() }]
    );
}

#[test]
fn a_partition_is_refused_with_its_disk_named() {
    let (system, _) = with_stick("partition");
    let partition = system.dev("sdb1");
    assert_eq!(
        refusals(&system, Policy::default(), &partition),
        [Refusal::Partition {
            path: partition.clone(),
            name: "sdb1".into(),
            disk: "sdb".into()
        }]
    );
}

#[test]
fn a_mounted_partition_is_refused_by_number_or_by_source() {
    let (mut system, stick) = with_stick("mounted");
    system.mount("8:17", "/dev/sdb1", "/media/my stick");
    // btrfs reports an anonymous device number; the source still names it.
    system.mount("0:45", "/dev/sdb1", "/media/again");
    assert_eq!(
        refusals(&system, Policy::default(), &stick),
        [
            Refusal::Mounted {
                device: "sdb1".into(),
                point: "/media/my stick".into()
            },
            Refusal::Mounted {
                device: "sdb1".into(),
                point: "/media/again".into()
            }
        ]
    );
}

#[test]
fn swap_and_device_mapper_on_the_stick_are_refused() {
    let (mut system, stick) = with_stick("in-use");
    system.partition("sdb", "sdb2", "8:18");
    system.swap("/dev/sdb2");
    system.mapper("dm-0", "253:0", &["sdb1"]);
    assert_eq!(
        refusals(&system, Policy::default(), &stick),
        [
            // Active swap is part of the running system as well.
            Refusal::SystemDisk {
                disk: "sdb".into(),
                role: "swap (/dev/sdb2)".into()
            },
            Refusal::Swap {
                device: "sdb2".into(),
                path: "/dev/sdb2".into()
            },
            Refusal::Held {
                holder: "dm-0 (on sdb1)".into()
            }
        ]
    );
}

#[test]
fn the_running_systems_disk_is_refused() {
    let system = FakeSystem::new("system");
    let refused = refusals(&system, Policy::default(), &system.dev("vda"));
    assert!(refused.contains(&Refusal::SystemDisk {
        disk: "vda".into(),
        role: "/ (on /dev/vda1)".into()
    }));
    assert!(refused.contains(&Refusal::NotRemovable { disk: "vda".into() }));
}

#[test]
fn a_system_on_a_usb_disk_is_found_through_device_mapper_and_swap() {
    let mut system = FakeSystem::new("system-usb");
    // A machine that runs from a USB disk: / on LUKS (dm-0) over sde2, swap
    // on sdf1. Neither partition is mounted directly.
    let root_disk = system.disk("sde", "8:64", DiskSpec::usb_stick());
    system.partition("sde", "sde2", "8:66");
    system.mapper("dm-0", "253:0", &["sde2"]);
    system.mount("253:0", "/dev/mapper/root", "/");
    let swap_disk = system.disk("sdf", "8:80", DiskSpec::usb_stick());
    system.partition("sdf", "sdf1", "8:81");
    system.swap("/dev/sdf1");
    let refused = refusals(&system, Policy::default(), &root_disk);
    assert!(refused.contains(&Refusal::SystemDisk {
        disk: "sde".into(),
        role: "/ (on /dev/mapper/root)".into()
    }));
    let refused = refusals(&system, Policy::default(), &swap_disk);
    assert!(refused.contains(&Refusal::SystemDisk {
        disk: "sdf".into(),
        role: "swap (/dev/sdf1)".into()
    }));
}

#[test]
fn a_regular_file_a_directory_and_a_missing_path_are_refused() {
    let system = FakeSystem::new("not-a-device");
    let file = system.root().join("dev/disk.img");
    std::fs::write(&file, b"image").unwrap();
    assert_eq!(
        refusals(&system, Policy::default(), &file),
        [Refusal::NotBlockDevice {
            path: file.clone(),
            kind: "a regular file"
        }]
    );
    let directory = system.root().join("dev");
    assert!(matches!(
        refusals(&system, Policy::default(), &directory)[..],
        [Refusal::NotBlockDevice {
            kind: "a directory",
            ..
        }]
    ));
    let missing = system.dev("sdz");
    assert!(matches!(
        &refusals(&system, Policy::default(), &missing)[..],
        [Refusal::Missing { path }] if *path == missing
    ));
}

#[test]
fn loop_devices_pass_only_under_the_test_override_and_only_that_check() {
    let mut system = FakeSystem::new("loop");
    let spec = DiskSpec {
        bus: Bus::Virtual,
        removable: false,
        vendor: "",
        model: "",
        sectors: 1 << 17,
        ..DiskSpec::usb_stick()
    };
    let loop_device = system.disk("loop7", "7:7", spec.clone());
    assert_eq!(
        refusals(&system, Policy::default(), &loop_device),
        [Refusal::NotRemovable {
            disk: "loop7".into()
        }]
    );
    let checked = check(&system.view(), TEST_LOOP, &loop_device, IMAGE_LEN).unwrap();
    assert_eq!(checked.notes.len(), 1, "the override is announced");
    // Mounted, it is refused even under the override.
    system.mount("7:7", "/dev/loop7", "/mnt");
    assert_eq!(
        refusals(&system, TEST_LOOP, &loop_device),
        [Refusal::Mounted {
            device: "loop7".into(),
            point: "/mnt".into()
        }]
    );
    // A disk merely named like a loop device is not one.
    let impostor = system.disk(
        "loop8",
        "7:8",
        DiskSpec {
            bus: Bus::Internal,
            ..spec
        },
    );
    assert_eq!(
        refusals(&system, TEST_LOOP, &impostor),
        [Refusal::NotRemovable {
            disk: "loop8".into()
        }]
    );
}

#[test]
fn read_only_empty_and_small_devices_are_refused() {
    let mut system = FakeSystem::new("media");
    let locked = system.disk(
        "sdb",
        "8:16",
        DiskSpec {
            read_only: true,
            ..DiskSpec::usb_stick()
        },
    );
    let empty_reader = system.disk(
        "sdc",
        "8:32",
        DiskSpec {
            sectors: 0,
            ..DiskSpec::usb_stick()
        },
    );
    let small = system.disk(
        "sdd",
        "8:48",
        DiskSpec {
            sectors: 2048,
            ..DiskSpec::usb_stick()
        },
    );
    assert_eq!(
        refusals(&system, Policy::default(), &locked),
        [Refusal::ReadOnly { disk: "sdb".into() }]
    );
    assert_eq!(
        refusals(&system, Policy::default(), &empty_reader),
        [Refusal::NoMedium { disk: "sdc".into() }]
    );
    assert_eq!(
        refusals(&system, Policy::default(), &small),
        [Refusal::TooSmall {
            disk: "sdd".into(),
            device: 1 << 20,
            image: IMAGE_LEN
        }]
    );
}

#[test]
fn a_stale_node_and_a_missing_mount_table_are_refused() {
    let (system, stick) = with_stick("stale");
    let view = system.view();
    system.lose_mount_table();
    assert!(matches!(
        check(&view, Policy::default(), &stick, IMAGE_LEN).unwrap_err()[..],
        [Refusal::NoMountTable { .. }]
    ));
    std::fs::remove_file(system.root().join("sys/dev/block/8:16")).unwrap();
    assert!(matches!(
        check(&view, Policy::default(), &stick, IMAGE_LEN).unwrap_err()[..],
        [Refusal::UnknownToSysfs { .. }]
    ));
}

/// A small image with a recognisable, position-dependent pattern.
fn image(system: &FakeSystem) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    let path = system.root().join("disk.img");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn untouched(device: &Path) -> bool {
    std::fs::read(device).unwrap() == vec![NODE_FILL; NODE_LEN]
}

#[test]
fn a_wrongly_typed_name_writes_nothing() {
    let (system, stick) = with_stick("wrong-name");
    let (image, _) = image(&system);
    let request = Request {
        device: &stick,
        image: &image,
        yes: false,
    };
    for answer in ["sdc\n", "/dev/sda\n", "yes\n", ""] {
        let mut out = Vec::new();
        let result = flash(
            &system.view(),
            Policy::default(),
            request,
            &mut answer.as_bytes(),
            &mut out,
        );
        assert!(
            matches!(result, Err(Error::NotConfirmed(_))),
            "{answer:?}: {result:?}"
        );
        assert!(untouched(&stick), "{answer:?} wrote to the device");
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("SanDisk Cruzer Blade, 14.9 GiB"), "{shown}");
        assert!(shown.contains("Type the device name (sdb)"), "{shown}");
    }
}

#[test]
fn a_refused_device_is_not_asked_about_nor_written() {
    let (mut system, stick) = with_stick("refused");
    system.mount("8:17", "/dev/sdb1", "/media/stick");
    let (image, _) = image(&system);
    let mut out = Vec::new();
    let request = Request {
        device: &stick,
        image: &image,
        yes: true,
    };
    let result = flash(
        &system.view(),
        Policy::default(),
        request,
        &mut "sdb\n".as_bytes(),
        &mut out,
    );
    assert!(matches!(result, Err(Error::Refused(_))), "{result:?}");
    assert!(out.is_empty());
    assert!(untouched(&stick));
}

#[test]
fn the_typed_name_or_yes_writes_exactly_the_image_and_verifies_it() {
    let (system, stick) = with_stick("confirmed");
    let (image, bytes) = image(&system);
    for (answer, yes) in [
        ("sdb\n", false),
        (stick.to_str().unwrap(), false),
        ("", true),
    ] {
        std::fs::write(&stick, vec![NODE_FILL; NODE_LEN]).unwrap();
        let request = Request {
            device: &stick,
            image: &image,
            yes,
        };
        let mut out = Vec::new();
        let written = flash(
            &system.view(),
            Policy::default(),
            request,
            &mut answer.as_bytes(),
            &mut out,
        )
        .unwrap();
        assert_eq!(written.bytes, bytes.len() as u64);
        let device = std::fs::read(&stick).unwrap();
        assert_eq!(&device[..bytes.len()], &bytes[..]);
        assert!(
            device[bytes.len()..].iter().all(|byte| *byte == NODE_FILL),
            "bytes after the image were touched"
        );
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("wrote and verified"), "{shown}");
        assert_eq!(shown.contains("Type the device name"), !yes, "{shown}");
    }
}
