//! `parse_sysfs` on any devpath and content: never panics, and what it
//! accepts is well-formed. The first byte splits the input into a devpath
//! (up to 255 bytes) and the file content.
#![no_main]

use bytes::Bytes;
use kestrel_uevent::{parse_sysfs, Action};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (devpath, content) = rest.split_at(usize::from(n).min(rest.len()));
    if let Ok(ev) = parse_sysfs(devpath, Bytes::copy_from_slice(content)) {
        assert_eq!(ev.devpath(), devpath);
        assert_eq!(ev.action(), Action::Add);
        for (k, v) in ev.fields() {
            assert!(!k.is_empty() && !k.contains(&b'=') && !k.contains(&b'\n'));
            assert!(!v.contains(&b'\n'));
            assert!(ev.get(k).is_some());
        }
        let _ = (
            ev.seqnum(),
            ev.major_minor(),
            ev.modalias(),
            ev.driver(),
            ev.devtype(),
        );
    }
});
