//! libFuzzer entry of the `pe` target (see `ica_fuzz::pe`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ica_fuzz::pe::run(data);
});
