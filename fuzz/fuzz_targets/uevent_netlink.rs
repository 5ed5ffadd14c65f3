//! `parse_netlink` on any bytes: never panics, and what it accepts is
//! well-formed (devpath starts with '/', keys are non-empty, lookups agree).
#![no_main]

use bytes::Bytes;
use kestrel_uevent::parse_netlink;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = parse_netlink(Bytes::copy_from_slice(data)) {
        assert!(ev.devpath().starts_with(b"/"));
        assert_eq!(ev.raw().as_ref(), data);
        for (k, v) in ev.fields() {
            assert!(!k.is_empty() && !k.contains(&b'=') && !k.contains(&0));
            assert!(!v.contains(&0));
            assert!(ev.get(k).is_some());
        }
        if let Some(m) = ev.modalias() {
            assert_eq!(ev.get(b"MODALIAS"), Some(m));
        }
        let _ = (ev.seqnum(), ev.major_minor(), ev.subsystem(), ev.devname());
    }
});
