//! `ica-load` for network adapters: start the installed miniport on its device (a software model,
//! a real card through VFIO, or none for a virtual miniport), show what its OIDs report, and
//! connect it to Linux: a TAP interface (the adapter as Linux sees it) plus, for a model, a second
//! TAP as the model's wire (the network the card is plugged into; a real card has its own port),
//! bridged until Ctrl-C. Without the privilege to create TAPs a model runs against an in-process
//! wire and no interface is created.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use host_linux::net::{setup_tap, Bridge, UpperSetup};
use host_linux::packet::QueuePort;
use host_linux::tap::TapPort;
use loader::install::start::{self, HostSetup, NicBackend};
use loader::install::{InstallError, Root};
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
    let signals = super::block_stop_signals();
    std::thread::spawn(move || {
        super::wait_for_stop_signal(signals);
        stop.store(true, Ordering::SeqCst);
    });
}

/// Starts the network adapter `instance` and, with TAPs, bridges it to the interface `ifname`
/// (wire: `<ifname>w`) until Ctrl-C if `keep_running`; then halts and unloads it.
pub fn run(
    root: &Root,
    store: &RegistryStore,
    setup: HostSetup,
    instance: &str,
    ifname: &str,
    keep_running: bool,
) -> Result<(), InstallError> {
    let mut say = |line: String| println!("  {line}");
    let wire_name = format!("{ifname}w");
    let on_model = start::model_for_instance(instance).is_some();
    let vfio = start::vfio_function_for_instance(instance);
    let upper = match TapPort::open(Some(ifname)) {
        Ok(up) => Some(up),
        Err(e) if on_model => {
            println!("  no TAP interface ({e}); the adapter runs on an in-process wire");
            None
        }
        Err(e) => {
            println!("  no TAP interface ({e}); the adapter runs without a Linux interface");
            None
        }
    };
    let wire_note = match &vfio {
        Some(address) => format!("; the card at {address} is on its own wire"),
        None if on_model => format!("; {wire_name} is its wire"),
        None => String::new(),
    };
    let backend = match (vfio, on_model, &upper) {
        (Some(address), _, _) => NicBackend::Vfio { address },
        (None, false, _) => NicBackend::Virtual,
        (None, true, Some(_)) => {
            let wire = TapPort::open(Some(&wire_name)).map_err(other)?;
            let wake = vec![std::os::fd::AsRawFd::as_raw_fd(&wire)];
            NicBackend::Model {
                wire: Box::new(wire),
                wake,
            }
        }
        (None, true, None) => NicBackend::Model {
            wire: Box::new(QueuePort::new().0),
            wake: Vec::new(),
        },
    };
    println!("Starting {instance}");
    let mut nic = start::start_nic(root, store, setup, instance, backend, &mut say)?;
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
        println!("  interface {ifname} is up (the adapter){wire_note}");
        if keep_running {
            // Signals are blocked before anyone is told to send one.
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
