//! libFuzzer entry of the `reg` target (see `ica_fuzz::reg`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ica_fuzz::reg::run(data);
});
