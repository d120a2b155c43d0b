//! `ica-load` for network adapters: start the installed miniport on its device, show what its OIDs
//! report, and connect it to Linux: a TAP interface (the adapter as Linux sees it) plus a second
//! TAP as the device model's wire (the network the card is plugged into), bridged until Ctrl-C.
//! Without the privilege to create TAPs the adapter runs against an in-process wire and no
//! interface is created.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use host_linux::net::{setup_tap, Bridge, UpperSetup};
use host_linux::packet::{PacketPort, QueuePort};
use host_linux::tap::TapPort;
use loader::install::{start, InstallError, Root};
use loader::net::{format_mac, NicInfo};
use loader::registry::RegistryStore;

fn other(e: impl std::fmt::Display) -> InstallError {
    InstallError::Other(e.to_string())
}

/// Prints the OID-reported facts of an adapter.
pub fn print_info(info: &NicInfo) {
    println!("  adapter   {}", info.description);
    println!(
        "  address   {} (permanent {})",
        format_mac(&info.current_address),
        format_mac(&info.permanent_address)
    );
    println!(
        "  link      {}, {} Mbit/s, MTU {}",
        if info.link_up { "up" } else { "down" },
        info.link_speed / 1_000_000,
        info.mtu
    );
    println!(
        "  counters  sent {} ({} errors), received {} ({} errors, {} without buffer)",
        info.xmit_ok, info.xmit_error, info.rcv_ok, info.rcv_error, info.rcv_no_buffer
    );
}

/// Sets `stop` on SIGINT or SIGTERM (which are blocked for every thread from now on).
fn stop_on_signal(stop: Arc<AtomicBool>) {
    // SAFETY: plain libc signal-mask calls on locally owned sigset_t values.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: waits on the signal set built above.
        unsafe { libc::sigwait(&set, &mut sig) };
        stop.store(true, Ordering::SeqCst);
    });
}

/// Starts the network adapter `instance` and, with TAPs, bridges it to the interface `ifname`
/// (wire: `<ifname>w`) until Ctrl-C if `keep_running`; then halts and unloads it.
pub fn run(
    root: &Root,
    store: &RegistryStore,
    arch: loader::inf::Arch,
    instance: &str,
    ifname: &str,
    keep_running: bool,
) -> Result<(), InstallError> {
    let mut say = |line: String| println!("  {line}");
    let wire_name = format!("{ifname}w");
    let taps =
        TapPort::open(Some(ifname)).and_then(|up| Ok((up, TapPort::open(Some(&wire_name))?)));
    let (upper, wire, wake): (Option<TapPort>, Box<dyn PacketPort + Send>, _) = match taps {
        Ok((up, wire)) => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&wire);
            (Some(up), Box::new(wire), vec![fd])
        }
        Err(e) => {
            println!("  no TAP interface ({e}); the adapter runs on an in-process wire");
            (None, Box::new(QueuePort::new().0), Vec::new())
        }
    };
    println!("Starting {instance}");
    let mut nic = start::start_nic(root, store, arch, instance, wire, wake, &mut say)?;
    let info = nic.info().map_err(other)?;
    print_info(&info);
    if let Some(upper) = upper {
        setup_tap(
            &upper,
            &UpperSetup {
                mac: info.current_address,
                mtu: info.mtu,
                link_up: info.link_up,
            },
        )
        .map_err(other)?;
        println!("  interface {ifname} is up (the adapter); {wire_name} is its wire");
        if keep_running {
            // Block the signals before saying so: a Ctrl-C right after the line must stop the
            // bridge, not kill the process.
            let stop = Arc::new(AtomicBool::new(false));
            stop_on_signal(stop.clone());
            println!("Running; press Ctrl-C to stop.");
            let mut bridge = Bridge::new(nic, upper);
            let result = bridge.run(&stop);
            let stats = bridge.stats();
            println!(
                "  bridged   {} frames to the adapter, {} from it, {} link changes",
                stats.frames_down, stats.frames_up, stats.link_changes
            );
            nic = bridge.into_parts().0;
            result.map_err(other)?;
            print_info(&nic.info().map_err(other)?);
        }
    }
    println!("Stopping");
    let findings = nic.stop().map_err(other)?;
    if findings.is_empty() {
        println!("  adapter halted, driver unloaded, nothing leaked");
        Ok(())
    } else {
        for f in &findings {
            println!("  {f}");
        }
        Err(other(format!(
            "{instance}: the driver left {} things behind",
            findings.len()
        )))
    }
}
