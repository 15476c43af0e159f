//! ONNX files as `POST /v1/models?format=onnx` receives them: the wire-format prescan, the
//! protobuf parser and the import, all bounded before they allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenebra_functions::onnx::model_from_onnx;

fuzz_target!(|data: &[u8]| {
    let _ = model_from_onnx(data, "fuzzed", -1.0, 1.0);
});
