//! Devices the VM has whose driver the initrd left out. The init reports
//! each MODALIAS that no module of the initrd matches (`unmatched`); here
//! each is resolved against the kernel's full module tree, and a device
//! whose driver exists there is named with the module to add. CPU
//! modaliases are left alone: they bring feature accelerators (crc32c,
//! aes, ...), not the drivers of devices.

use kestrel_modules::ModuleIndex;

/// A device whose driver is a module of the kernel that the initrd lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingDriver {
    pub devpath: String,
    pub modalias: String,
    /// Every module that matches, in kmod's order (modprobe loads them all).
    pub modules: Vec<String>,
}

impl std::fmt::Display for MissingDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (noun, names) = match self.modules.as_slice() {
            [one] => ("module", one.clone()),
            many => ("modules", many.join(", ")),
        };
        let flags: Vec<String> = self
            .modules
            .iter()
            .map(|m| format!("--module {m}"))
            .collect();
        write!(
            f,
            "device {} ({}) needs {noun} {names}, which the initrd does not carry (add {})",
            self.devpath,
            self.modalias,
            flags.join(" ")
        )
    }
}

/// MODALIAS prefixes that are not devices to drive.
const NOT_DEVICES: &[&str] = &["cpu:"];

/// Each unmatched `(modalias, devpath)` that a module of `index` (the
/// kernel's full tree) drives. Builtin matches are not missing, nor
/// devices all of whose modules are in `left_out` (the board's devices,
/// left out on purpose: `ProfileSpec::board_modules`).
pub fn missing_drivers<'a>(
    index: &ModuleIndex,
    unmatched: impl IntoIterator<Item = (&'a str, &'a str)>,
    left_out: &[&str],
) -> Vec<MissingDriver> {
    let mut out: Vec<MissingDriver> = Vec::new();
    for (modalias, devpath) in unmatched {
        if NOT_DEVICES.iter().any(|p| modalias.starts_with(p)) {
            continue;
        }
        let modules: Vec<String> = index
            .lookup_alias(modalias)
            .into_iter()
            .filter(|m| !index.is_builtin(m))
            .collect();
        if modules.iter().all(|m| left_out.contains(&m.as_str())) {
            continue;
        }
        let seen = out
            .iter()
            .any(|d| d.devpath == devpath && d.modalias == modalias);
        if !modules.is_empty() && !seen {
            out.push(MissingDriver {
                devpath: devpath.to_owned(),
                modalias: modalias.to_owned(),
                modules,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// On the installed Debian 6.1 tree: a virtio-net and a virtio-rng
    /// device name their modules, a q35 LPC bridge names lpc_ich (but not
    /// on q35, whose board it is), a CPU modalias (which matches
    /// intel_uncore and more) and an alias nothing matches say nothing.
    #[test]
    fn unmatched_devices_are_resolved_against_the_full_tree() {
        let Some(k) = crate::kernel::debian_61() else {
            eprintln!("SKIP: no Debian 6.1 kernel in /boot (make setup)");
            return;
        };
        let dir = Path::new(crate::kernel::MODULES_ROOT).join(&k.release);
        let index = ModuleIndex::load(&dir).unwrap();
        let unmatched = [
            (
                "virtio:d00000001v00001AF4",
                "/devices/platform/LNRO0005:01/virtio1",
            ),
            (
                "virtio:d00000004v00001AF4",
                "/devices/platform/LNRO0005:02/virtio2",
            ),
            (
                "pci:v00008086d00002918sv00001AF4sd00001100bc06sc01i00",
                "/devices/pci0000:00/0000:00:1f.0",
            ),
            (
                "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0002,0003,0004,0005",
                "/devices/system/cpu/cpu0",
            ),
            ("acpi:KESTREL0:", "/devices/platform/KESTREL0:00"),
            (
                "virtio:d00000001v00001AF4",
                "/devices/platform/LNRO0005:01/virtio1",
            ),
        ];
        let missing = missing_drivers(&index, unmatched, &[]);
        let names: Vec<(&str, Vec<&str>)> = missing
            .iter()
            .map(|d| {
                (
                    d.devpath.as_str(),
                    d.modules.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("/devices/platform/LNRO0005:01/virtio1", vec!["virtio_net"]),
                ("/devices/platform/LNRO0005:02/virtio2", vec!["virtio_rng"]),
                ("/devices/pci0000:00/0000:00:1f.0", vec!["lpc_ich"]),
            ]
        );
        let board = crate::machine::Profile::Q35.spec().board_modules;
        let missing_on_q35 = missing_drivers(&index, unmatched, board);
        assert_eq!(missing_on_q35.len(), 2, "{missing_on_q35:?}");
        assert_eq!(
            missing[0].to_string(),
            "device /devices/platform/LNRO0005:01/virtio1 (virtio:d00000001v00001AF4) needs module virtio_net, which the initrd does not carry (add --module virtio_net)"
        );
    }

    #[test]
    fn several_matches_are_all_named() {
        let d = MissingDriver {
            devpath: "/d".into(),
            modalias: "x:y".into(),
            modules: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            d.to_string(),
            "device /d (x:y) needs modules a, b, which the initrd does not carry (add --module a --module b)"
        );
    }
}
