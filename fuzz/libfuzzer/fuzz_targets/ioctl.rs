//! libFuzzer entry of the `ioctl` target (see `ica_fuzz::ioctl`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ica_fuzz::ioctl::run(data);
});
