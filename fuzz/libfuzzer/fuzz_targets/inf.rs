//! libFuzzer entry of the `inf` target (see `ica_fuzz::inf`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ica_fuzz::inf::run(data);
});
