//! A key set upload of either scheme, as the server checks it after receiving the stream
//! into a file: the scheme from the first bytes, then the TFHE upload format (markers,
//! sizes, the versioned, conformance-checked server and public keys) or a BFV key set.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    common::caught_panics_are_answers();
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("tenebra-fuzz-key-set-{}", std::process::id()))
    });
    std::fs::write(path, data).expect("writing the upload");
    let _ = tenebra_engine::scheme::check_key_set_file(path);
});

