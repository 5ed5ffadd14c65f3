//! The kernel command line as the init reads it (/proc/cmdline's bytes):
//! never panics; an accepted one has values within their bounds.
#![no_main]

use kestrel_proto::cmdline::{parse_boot_options, tokenize, MAX_THREADS, MAX_WAIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A lone `""` is an empty parameter, as the kernel's next_arg makes it.
    let _ = tokenize(data);
    if let Ok(o) = parse_boot_options(data) {
        assert!(o.timeout <= MAX_WAIT);
        assert!(o.threads <= MAX_THREADS);
        assert!(o.root.delay.is_none_or(|d| d <= MAX_WAIT));
    }
});
