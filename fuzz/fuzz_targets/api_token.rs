//! An `Authorization` header's API key, as authentication reads it before any lookup: the
//! shape and checksum check, on any string.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let token = s.strip_prefix("Bearer ").map_or(s, str::trim);
        if tenebra_api::token::is_well_formed(token) {
            assert_eq!(token.len(), tenebra_api::token::TOKEN_LEN);
        }
    }
});
