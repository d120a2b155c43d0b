//! ndis.sys: NDIS miniport hosting. Subsystems live in their own files (`wrapper` for the wrapper
//! handle and miniport registration, `memory` for NDIS pool, `sync` for spin locks and clocks,
//! `config` for the configuration API, `string` for NDIS_STRING helpers); each declares its exports
//! next to its code, and [`MODULE`] gathers them. Per-kernel state is the [`NdisState`] extension.

use std::collections::{BTreeMap, HashMap};

use ntoskrnl::{ex, KResult, Kernel, Module};

pub mod config;
pub mod memory;
pub mod string;
pub mod sync;
pub mod wrapper;

pub use wrapper::{Handler, MiniportCharacteristics, Wrapper};

/// ndis.sys as drivers import it.
pub static MODULE: Module = Module {
    name: "ndis.sys",
    tables: &[
        wrapper::EXPORTS,
        memory::EXPORTS,
        sync::EXPORTS,
        config::EXPORTS,
        string::EXPORTS,
    ],
};

/// NDIS_STATUS (an NTSTATUS-compatible 32-bit code).
pub type NdisStatus = u32;
/// NDIS_STATUS_SUCCESS.
pub const NDIS_STATUS_SUCCESS: NdisStatus = 0;
/// NDIS_STATUS_FAILURE (STATUS_UNSUCCESSFUL).
pub const NDIS_STATUS_FAILURE: NdisStatus = 0xC000_0001;
/// NDIS_STATUS_RESOURCES (STATUS_INSUFFICIENT_RESOURCES).
pub const NDIS_STATUS_RESOURCES: NdisStatus = 0xC000_009A;
/// NDIS_STATUS_BAD_VERSION.
pub const NDIS_STATUS_BAD_VERSION: NdisStatus = 0xC001_0004;
/// NDIS_STATUS_BAD_CHARACTERISTICS.
pub const NDIS_STATUS_BAD_CHARACTERISTICS: NdisStatus = 0xC001_0005;

/// Owner name of pool blocks NDIS allocates for itself (handles, configuration results).
const NDIS_OWNER: &str = "ndis.sys";

/// An open configuration handle (NdisOpenConfiguration): the registry key it reads and the pool
/// blocks handed out through it, freed by NdisCloseConfiguration.
#[derive(Debug, Clone, Default)]
pub struct OpenConfiguration {
    /// Absolute registry path of the key read.
    pub key: String,
    /// Pool blocks (NDIS_CONFIGURATION_PARAMETERs, network addresses) owned by the handle.
    pub blocks: Vec<u64>,
}

/// The NDIS state of a kernel (`k.extension::<NdisState>()`).
#[derive(Debug, Default)]
pub struct NdisState {
    /// Wrapper records, keyed by the wrapper handle (a small pool block) given to the driver.
    pub wrappers: BTreeMap<u64, Wrapper>,
    /// WrapperConfigurationContext handles -> the registry key NdisOpenConfiguration opens.
    pub config_contexts: HashMap<u64, String>,
    /// Open configuration handles.
    pub configs: HashMap<u64, OpenConfiguration>,
}

/// Allocates a small zeroed pool block that NDIS owns, used as an opaque handle.
fn alloc_handle(k: &mut Kernel, tag: &[u8; 4]) -> KResult<u64> {
    ex::allocate(k, 16, u32::from_le_bytes(*tag), NDIS_OWNER.to_string())
}

/// The wrapper record behind `handle`, if it is a live wrapper handle.
pub fn wrapper(k: &mut Kernel, handle: u64) -> Option<Wrapper> {
    k.extension::<NdisState>().wrappers.get(&handle).cloned()
}

/// Every live wrapper, by handle.
pub fn wrappers(k: &mut Kernel) -> Vec<(u64, Wrapper)> {
    k.extension::<NdisState>()
        .wrappers
        .iter()
        .map(|(h, w)| (*h, w.clone()))
        .collect()
}

/// Writes an NDIS_STATUS through an OUT PNDIS_STATUS.
fn put_status(k: &mut Kernel, out: u64, status: NdisStatus) -> KResult<()> {
    k.m.mem.write_u32(out, status)?;
    Ok(())
}
