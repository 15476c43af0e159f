//! Circuit JSON of either scheme, as deploy receives it: parse under the server's limits,
//! and for a circuit that passes, everything deploy and submit then do with it (canonical
//! form, signature, planning and pricing, which include the working-set estimate).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenebra_circuit::{AnyCircuit, AnyLimits};

fuzz_target!(|data: &[u8]| {
    let limits = AnyLimits::with_max_json_bytes(4 << 20);
    if let Ok(c) = AnyCircuit::parse(data, &limits) {
        let json = c.canonical_json();
        let again = AnyCircuit::parse(&json, &limits).expect("a canonical circuit parses");
        assert_eq!(again.id(), c.id(), "the canonical form is a fixed point");
        let _ = c.signature();
        let _ = c.cost();
    }
});
