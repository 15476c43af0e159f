//! Model JSON as `POST /v1/models` receives it: parsed and checked before anything else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenebra_functions::model::Model;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Model::parse(data) {
        let _ = m.max_encrypted_layers();
    }
});
