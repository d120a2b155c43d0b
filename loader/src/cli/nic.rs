//! `ica-load` for network adapters: start the installed miniport on its device (a software model,
//! a real card through VFIO, or none for a virtual miniport), show what its OIDs report, and
//! connect it to Linux: a TAP interface (the adapter as Linux sees it) plus, for a model, a second
//! TAP as the model's wire (the network the card is plugged into; a real card has its own port),
//! bridged until Ctrl-C. Without the privilege to create TAPs a model runs against an in-process
//! wire and no interface is created. The miniport runs in a driver host of its own (restarted
//! when it fails, see [`loader::isolate`]) unless `--in-process` is given or the card is a real
//! one through VFIO.

use std::collections::VecDeque;
use std::os::fd::{AsFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use host_linux::net::{setup_tap, Bridge, NetError, NetEvent, NetMiniport, UpperSetup};
use host_linux::packet::QueuePort;
use host_linux::tap::TapPort;
use loader::install::start::{self, HostSetup, NicBackend, MODEL_MAC};
use loader::install::{InstallError, Root};
use loader::isolate::{self, IsolatedNic, IsolationConfig};
use loader::net::{format_mac, NetAdapter, NicInfo};
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

/// A started adapter, in this process or in a driver host of its own.
enum Adapter {
    InProcess(Box<NetAdapter>),
    Isolated(Box<IsolatedNic>),
}

impl Adapter {
    fn info(&mut self) -> Result<NicInfo, InstallError> {
        match self {
            Adapter::InProcess(n) => n.info().map_err(other),
            Adapter::Isolated(n) => n.info().map_err(other),
        }
    }

    fn stop(self) -> Result<Vec<String>, InstallError> {
        match self {
            Adapter::InProcess(n) => (*n).stop().map_err(other),
            Adapter::Isolated(n) => (*n).stop().map_err(other),
        }
    }

    fn miniport(&mut self) -> &mut dyn NetMiniport {
        match self {
            Adapter::InProcess(n) => n.as_mut(),
            Adapter::Isolated(n) => n.as_mut(),
        }
    }
}

impl NetMiniport for Adapter {
    fn send(&mut self, frames: &mut VecDeque<Vec<u8>>) -> Result<(), NetError> {
        self.miniport().send(frames)
    }
    fn service(&mut self, events: &mut Vec<NetEvent>) -> Result<(), NetError> {
        self.miniport().service(events)
    }
    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Adapter::InProcess(n) => n.next_deadline(),
            Adapter::Isolated(n) => n.next_deadline(),
        }
    }
    fn wake_fds(&self) -> Vec<RawFd> {
        match self {
            Adapter::InProcess(n) => n.wake_fds(),
            Adapter::Isolated(n) => n.wake_fds(),
        }
    }
}

/// Prints what the driver hosts went through.
fn print_recoveries(nic: &Adapter) {
    let Adapter::Isolated(n) = nic else { return };
    super::print_recoveries(n.recoveries(), "frames");
    if !n.recoveries().is_empty() {
        println!(
            "  restarts  {} driver-host failures, {} frames lost in all",
            n.recoveries().len(),
            n.lost_frames()
        );
    }
}

/// Starts the network adapter `instance` and, with TAPs, bridges it to the interface `ifname`
/// (wire: `<ifname>w`) until Ctrl-C if `keep_running`; then halts and unloads it. `isolation`
/// runs the miniport in a driver host of its own (VFIO cards always run in this process).
pub fn run(
    root: &Root,
    store: &RegistryStore,
    setup: HostSetup,
    instance: &str,
    ifname: &str,
    keep_running: bool,
    isolation: Option<IsolationConfig>,
) -> Result<(), InstallError> {
    let mut say = |line: String| println!("  {line}");
    let wire_name = format!("{ifname}w");
    let model = start::model_for_instance(instance);
    let on_model = model.is_some();
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
    let wire = match (&vfio, on_model, &upper) {
        (None, true, Some(_)) => Some(TapPort::open(Some(&wire_name)).map_err(other)?),
        _ => None,
    };
    println!("Starting {instance}");
    let mut nic = match (isolation, vfio) {
        (Some(cfg), None) => {
            let backend = match &model {
                Some(m) => isolate::Backend::Model {
                    model: m.clone(),
                    mac: MODEL_MAC,
                    wire: wire.is_some(),
                },
                None => isolate::Backend::Virtual,
            };
            let on = match &model {
                Some(m) => format!("on the {m} model"),
                None => "as a virtual adapter".to_string(),
            };
            let (params, registry, what) =
                start::isolated_nic_params(root, store, setup, instance, backend)?;
            let wire_fd = match &wire {
                Some(w) => Some(w.as_fd().try_clone_to_owned().map_err(other)?),
                None => None,
            };
            let nic = IsolatedNic::start(params, registry, wire_fd, cfg).map_err(other)?;
            say(format!(
                "{what} loaded {on}, MiniportInitialize succeeded (driver host pid {}, confined)",
                nic.host_pid().unwrap_or_default()
            ));
            Adapter::Isolated(Box::new(nic))
        }
        (isolation, vfio) => {
            if isolation.is_some() && vfio.is_some() {
                println!("  VFIO cards run in the manager's process (not isolated)");
            }
            let backend = match (vfio, on_model, wire) {
                (Some(address), _, _) => NicBackend::Vfio { address },
                (None, false, _) => NicBackend::Virtual,
                (None, true, Some(wire)) => {
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
            Adapter::InProcess(Box::new(start::start_nic(
                root, store, setup, instance, backend, &mut say,
            )?))
        }
    };
    let info = nic.info()?;
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
            super::stop_on_signal(stop.clone());
            println!("Running; press Ctrl-C to stop.");
            let mut bridge = Bridge::new(nic, upper);
            let result = bridge.run(&stop);
            let stats = bridge.stats();
            println!(
                "  bridged   {} frames to the adapter, {} from it, {} link changes",
                stats.frames_down, stats.frames_up, stats.link_changes
            );
            nic = bridge.into_parts().0;
            print_recoveries(&nic);
            result.map_err(other)?;
            print_info(&nic.info()?);
        }
    }
    println!("Stopping");
    let findings = nic.stop()?;
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
