//! What the engine's targets share.

/// The engine catches panics of fhe.rs's decoding (`guarded`) and answers them as bad input,
/// as the server relies on; libFuzzer's panic hook would abort on those too, so the default
/// hook is put back. A panic nobody catches still aborts at the fuzzer's boundary.
pub fn caught_panics_are_answers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}
