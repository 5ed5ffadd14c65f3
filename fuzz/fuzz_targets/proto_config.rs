//! The baked config: any text is a config or an error, never a panic;
//! what decodes encodes back to the same config (base and run parts).
#![no_main]

use kestrel_proto::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = Config::decode(data) else {
        return;
    };
    let mut text = cfg.encode_base();
    match cfg.encode_run() {
        Ok(run) => text.extend(run),
        // Only a NUL in an argument is refused on the way out, and the
        // decoder cannot produce one... unless escaped: \x00 decodes.
        Err(_) => return,
    }
    assert_eq!(Config::decode(&text).expect("its own text"), cfg);
});
