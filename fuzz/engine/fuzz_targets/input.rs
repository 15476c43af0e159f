//! An encrypted input of either scheme, as submit and the worker read it: the header, then
//! the payload (TFHE: the versioned compact list, size-limited and conformance-checked
//! against the types the header declares; BFV: the framed ciphertexts at an offered ring
//! degree). Expanding TFHE values needs the tenant's server key, which the target lacks.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;
use tenebra_engine::bundle::{self, Kind};
use tenebra_engine::scheme::InputHeader;

fuzz_target!(|data: &[u8]| {
    common::caught_panics_are_answers();
    match InputHeader::read(data) {
        Ok(InputHeader::Tfhe(h)) => {
            if let Ok((_, payload)) = bundle::read(data, Kind::Input) {
                let _ = bundle::parse_values(payload, &h.types);
            }
        }
        Ok(InputHeader::Bfv(h)) => {
            let read = bundle::read_as::<tenebra_engine::bfv::BfvHeader>(data, Kind::Input);
            if let (Ok((_, payload)), 4096 | 8192 | 16384) = (read, h.degree) {
                let _ = tenebra_engine::bfv::read_ciphertexts(payload, h.degree, 65537);
            }
        }
        Err(_) => {}
    }
});

