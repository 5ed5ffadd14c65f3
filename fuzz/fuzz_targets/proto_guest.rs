//! The events wire, guest → host: any bytes through the host's streaming
//! decoder, in pieces of any size, typed as guest records. Never panics,
//! memory stays within the decoder's bound, and every record it accepts
//! encodes and decodes back to itself.
//!
//! Input: 1 byte of piece size, then the stream.
#![no_main]

use kestrel_proto::wire::{Decoder, CHUNK, MAX_HEADER};
use kestrel_proto::GuestRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let mut d = Decoder::new();
    for piece in stream.chunks(usize::from(step).max(1)) {
        d.feed(piece);
        while let Some(frame) = d.next_frame() {
            let Ok(frame) = frame else { continue };
            let Ok(t) = GuestRecord::decode(frame) else {
                continue;
            };
            let mut again = Vec::new();
            t.rec.encode(t.t_ns, &mut again);
            let mut d2 = Decoder::new();
            d2.feed(&again);
            let back = GuestRecord::decode(
                d2.next_frame()
                    .expect("a whole frame")
                    .expect("well formed"),
            )
            .expect("a record it made");
            assert_eq!(back, t);
        }
        assert!(d.buffered() <= MAX_HEADER + CHUNK + piece.len());
    }
    let _ = d.finish();
});
