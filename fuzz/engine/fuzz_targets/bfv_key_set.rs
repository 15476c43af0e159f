//! A BFV key set upload: framing, header, sizes and every key decoded against the
//! parameters it names.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    common::caught_panics_are_answers();
    if let Ok(set) = tenebra_engine::bfv::BfvKeySet::parse(data.to_vec()) {
        let _ = set.id();
    }
});

