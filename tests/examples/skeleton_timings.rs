//! Guest instructions executed and wall time for load + DriverEntry + one IOCTL, per test driver
//! and architecture (the numbers the walking-skeleton issue asks for). Not a benchmark: one run,
//! cold caches included, which is what a user starting a driver sees.
//!
//!     cargo run --release -p ica-tests --example skeleton_timings

use std::time::Instant;

use ica_tests::{driver_path, host, ioctl, ARCHES};

fn main() {
    println!(
        "{:<14} {:<4} {:>12} {:>10}",
        "driver", "arch", "guest instr", "wall µs"
    );
    for arch in ARCHES {
        for (name, device, code, input) in [
            (
                "ioctl",
                "\\\\.\\IcaIoctl",
                ioctl::REVERSE,
                &b"0123456789abcdef"[..],
            ),
            (
                "function",
                "\\\\.\\IcaFunction",
                ioctl::ADD,
                &[41, 0, 0, 0][..],
            ),
            ("unknownimport", "\\\\.\\IcaUnknown", ioctl::PING, &[][..]),
            ("nullderef", "\\\\.\\IcaNull", ioctl::PING, &[][..]),
        ] {
            let start = Instant::now();
            let mut h = host(arch);
            let driver = h
                .load_driver(&driver_path(arch, name))
                .unwrap_or_else(|e| panic!("{e}"));
            if name == "function" {
                h.build_stack("IcaPair", &[&driver])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let handle = h.open(device).unwrap().unwrap();
            let reply = h.ioctl(handle, code, input, &vec![0; input.len()]).unwrap();
            assert!(ntoskrnl::status::nt_success(reply.status));
            let wall = start.elapsed();
            println!(
                "{name:<14} {:<4} {:>12} {:>10.0}",
                arch.name(),
                h.k.m.stats.instructions,
                wall.as_secs_f64() * 1e6
            );
        }
    }
}
