//! The events wire, host → guest: any bytes through the decoder the init
//! uses, typed as host records. Never panics, and what it accepts
//! round-trips.
#![no_main]

use kestrel_proto::wire::Decoder;
use kestrel_proto::HostRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new();
    d.feed(data);
    while let Some(frame) = d.next_frame() {
        let Ok(rec) = frame.map_err(Into::into).and_then(HostRecord::decode) else {
            continue;
        };
        let mut again = Vec::new();
        rec.encode(&mut again);
        let mut d2 = Decoder::new();
        d2.feed(&again);
        let back = HostRecord::decode(d2.next_frame().expect("whole").expect("well formed"))
            .expect("typed");
        assert_eq!(back, rec);
    }
});
