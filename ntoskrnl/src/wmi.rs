//! WMI and event tracing: IoWMIRegistrationControl bookkeeping, and the WMI tracing entry points
//! answered the way Windows answers them when no trace session is running (there never is one
//! here): WmiTraceMessage, WmiQueryTraceInformation.
//!
//! A registered device gets no IRP_MN_REGINFO(_EX) (there is no WMI consumer to ask for its
//! data blocks); the registration is recorded so that one left in place when the driver unloads
//! is a verifier finding.

use std::collections::BTreeMap;

use crate::export::{Export, Quad};
use crate::status::{NtStatus, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER, STATUS_SUCCESS};
use crate::verifier::{self, irql, Rule};
use crate::{export_table, KResult, Kernel};

/// WMIREG_ACTION_REGISTER.
pub const WMIREG_ACTION_REGISTER: u32 = 1;
/// WMIREG_ACTION_DEREGISTER.
pub const WMIREG_ACTION_DEREGISTER: u32 = 2;
/// WMIREG_ACTION_REREGISTER.
pub const WMIREG_ACTION_REREGISTER: u32 = 3;
/// WMIREG_ACTION_UPDATE_GUIDS.
pub const WMIREG_ACTION_UPDATE_GUIDS: u32 = 4;
/// WMIREG_FLAG_CALLBACK: the "device object" is a WMI_ENTRY callback (a tracing provider).
const WMIREG_FLAG_CALLBACK: u32 = 0x8000_0000;

/// STATUS_INVALID_INFO_CLASS.
pub const STATUS_INVALID_INFO_CLASS: NtStatus = 0xC000_0003;
/// STATUS_INFO_LENGTH_MISMATCH.
pub const STATUS_INFO_LENGTH_MISMATCH: NtStatus = 0xC000_0004;
/// STATUS_INVALID_PARAMETER_MIX.
pub const STATUS_INVALID_PARAMETER_MIX: NtStatus = 0xC000_0030;
/// STATUS_NOT_FOUND.
pub const STATUS_NOT_FOUND: NtStatus = 0xC000_0225;

/// TRACE_INFORMATION_CLASS values.
pub mod trace_class {
    /// TraceIdClass: the logger ID (ULONG) of the session a WNODE_HEADER names.
    pub const ID: u32 = 0;
    /// TraceHandleClass: the TRACEHANDLE of a logger ID.
    pub const HANDLE: u32 = 1;
    /// TraceEnableFlagsClass: the enable flags (ULONG) of a session.
    pub const ENABLE_FLAGS: u32 = 2;
    /// TraceEnableLevelClass: the enable level (ULONG) of a session.
    pub const ENABLE_LEVEL: u32 = 3;
    /// GlobalLoggerHandleClass: the global logger's TRACEHANDLE.
    pub const GLOBAL_LOGGER_HANDLE: u32 = 4;
    /// EventLoggerHandleClass: the NT kernel logger's TRACEHANDLE.
    pub const EVENT_LOGGER_HANDLE: u32 = 5;
    /// AllLoggerHandlesClass: every session's TRACEHANDLE.
    pub const ALL_LOGGER_HANDLES: u32 = 6;
}

/// A device registered as a WMI data provider.
#[derive(Debug, Clone)]
struct Provider {
    /// The image that registered it.
    owner: String,
}

/// The WMI providers (`k.extension::<Wmi>()`), by device object (or WMI_ENTRY callback).
#[derive(Debug, Default)]
pub struct Wmi {
    providers: BTreeMap<u64, Provider>,
}

impl Wmi {
    /// Whether `device` is registered as a WMI provider.
    pub fn is_registered(&self, device: u64) -> bool {
        self.providers.contains_key(&device)
    }
}

/// IoWMIRegistrationControl(DeviceObject, Action): REGISTER records the device as a provider,
/// DEREGISTER removes it, REREGISTER and UPDATE_GUIDS need it registered. An unknown action, or
/// an action on a device that is not (or, for REGISTER, already) registered, is
/// STATUS_INVALID_PARAMETER.
pub fn io_wmi_registration_control(k: &mut Kernel, device: u64, action: u32) -> KResult<NtStatus> {
    let owner = k.caller_image();
    let providers = &mut k.extension::<Wmi>().providers;
    let known = providers.contains_key(&device);
    let ok = match action & !WMIREG_FLAG_CALLBACK {
        WMIREG_ACTION_REGISTER if device != 0 && !known => {
            providers.insert(device, Provider { owner });
            true
        }
        WMIREG_ACTION_DEREGISTER => providers.remove(&device).is_some(),
        WMIREG_ACTION_REREGISTER | WMIREG_ACTION_UPDATE_GUIDS => known,
        _ => false,
    };
    Ok(if ok {
        STATUS_SUCCESS
    } else {
        STATUS_INVALID_PARAMETER
    })
}

/// WmiTraceMessage(LoggerHandle, MessageFlags, MessageGuid, MessageNumber, ...): cdecl with
/// variable arguments (the caller pops them). No trace session exists, so every logger handle is
/// invalid: STATUS_INVALID_HANDLE, nothing logged.
pub fn wmi_trace_message(
    _k: &mut Kernel,
    _logger: Quad,
    _flags: u32,
    _guid: u64,
    _number: u16,
) -> KResult<NtStatus> {
    Ok(STATUS_INVALID_HANDLE)
}

/// WmiQueryTraceInformation(TraceInformationClass, TraceInformation, TraceInformationLength,
/// RequiredLength, Buffer), with no trace session running: the buffer length must be the class's
/// size (STATUS_INFO_LENGTH_MISMATCH, RequiredLength set); a session named by a WNODE_HEADER or a
/// logger ID does not exist (STATUS_INVALID_HANDLE; STATUS_INVALID_PARAMETER_MIX without one);
/// the global and kernel loggers are not running (STATUS_NOT_FOUND); the list of all loggers is
/// empty.
pub fn wmi_query_trace_information(
    k: &mut Kernel,
    class: u32,
    _info: u64,
    length: u32,
    required: u64,
    buffer: u64,
) -> KResult<NtStatus> {
    let needed: u32 = match class {
        trace_class::ID | trace_class::ENABLE_FLAGS | trace_class::ENABLE_LEVEL => 4,
        trace_class::HANDLE
        | trace_class::GLOBAL_LOGGER_HANDLE
        | trace_class::EVENT_LOGGER_HANDLE => 8,
        trace_class::ALL_LOGGER_HANDLES => 0,
        _ => return Ok(STATUS_INVALID_INFO_CLASS),
    };
    if required != 0 {
        k.m.mem.write_u32(required, needed)?;
    }
    if class != trace_class::ALL_LOGGER_HANDLES && length != needed {
        return Ok(STATUS_INFO_LENGTH_MISMATCH);
    }
    Ok(match class {
        trace_class::GLOBAL_LOGGER_HANDLE | trace_class::EVENT_LOGGER_HANDLE => STATUS_NOT_FOUND,
        trace_class::ALL_LOGGER_HANDLES => STATUS_SUCCESS,
        _ if buffer == 0 => STATUS_INVALID_PARAMETER_MIX,
        _ => STATUS_INVALID_HANDLE,
    })
}

/// Drops the WMI registrations `image` made; with the verifier on, each is a finding (a driver
/// deregisters its devices before it deletes them).
pub(crate) fn check_unload(k: &mut Kernel, image: &str) {
    let left: Vec<u64> = k
        .extension::<Wmi>()
        .providers
        .iter()
        .filter(|(_, p)| p.owner == image)
        .map(|(&d, _)| d)
        .collect();
    for device in left {
        k.extension::<Wmi>().providers.remove(&device);
        let detail = format!(
            "device {device:#x} still registered as a WMI provider at unload (IoWMIRegistrationControl WMIREG_ACTION_DEREGISTER)"
        );
        verifier::note(k, Rule::RegistrationLeak, image, None, None, detail);
    }
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall IoWMIRegistrationControl => io_wmi_registration_control(device_object: u64, action: u32) @ irql::PASSIVE;
    cdecl WmiTraceMessage => wmi_trace_message(logger_handle: Quad, message_flags: u32, message_guid: u64, message_number: u16);
    stdcall WmiQueryTraceInformation => wmi_query_trace_information(trace_information_class: u32, trace_information: u64, trace_information_length: u32, required_length: u64, buffer: u64);
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;

    fn status(v: KResult<u64>) -> NtStatus {
        v.expect("call") as NtStatus
    }

    #[test]
    fn registration_control_keeps_the_providers() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let dev = 0x1234_0000;
            let call = |g: &mut Guest, action: u32| {
                status(g.call("IoWMIRegistrationControl", &[dev, u64::from(action)]))
            };
            assert_eq!(
                call(&mut g, WMIREG_ACTION_UPDATE_GUIDS),
                STATUS_INVALID_PARAMETER
            );
            assert_eq!(call(&mut g, WMIREG_ACTION_REGISTER), STATUS_SUCCESS);
            assert!(g.k.extension::<Wmi>().is_registered(dev));
            assert_eq!(
                call(&mut g, WMIREG_ACTION_REGISTER),
                STATUS_INVALID_PARAMETER
            );
            assert_eq!(call(&mut g, WMIREG_ACTION_REREGISTER), STATUS_SUCCESS);
            assert_eq!(call(&mut g, WMIREG_ACTION_UPDATE_GUIDS), STATUS_SUCCESS);
            assert_eq!(call(&mut g, 9), STATUS_INVALID_PARAMETER);
            assert_eq!(call(&mut g, WMIREG_ACTION_DEREGISTER), STATUS_SUCCESS);
            assert_eq!(
                call(&mut g, WMIREG_ACTION_DEREGISTER),
                STATUS_INVALID_PARAMETER
            );

            // One left at unload is dropped, and a finding with the verifier on.
            g.k.verifier.set_enabled(true);
            assert_eq!(call(&mut g, WMIREG_ACTION_REGISTER), STATUS_SUCCESS);
            let owner = g.k.caller_image();
            check_unload(&mut g.k, &owner);
            assert!(!g.k.extension::<Wmi>().is_registered(dev));
            let findings = g.k.verifier.findings();
            assert_eq!(findings.len(), 1);
            assert_eq!(findings[0].rule, Rule::RegistrationLeak);
        }
    }

    #[test]
    fn tracing_answers_as_without_a_session() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let info = g.zeroed(16);
            let len = g.zeroed(4);
            let wnode = g.zeroed(48);
            let query = |g: &mut Guest, class: u32, length: u64, buffer: u64| {
                status(g.call(
                    "WmiQueryTraceInformation",
                    &[u64::from(class), info, length, len, buffer],
                ))
            };
            let global = trace_class::GLOBAL_LOGGER_HANDLE;
            assert_eq!(query(&mut g, global, 8, 0), STATUS_NOT_FOUND);
            assert_eq!(g.k.m.mem.read_u32(len).unwrap(), 8);
            assert_eq!(query(&mut g, global, 4, 0), STATUS_INFO_LENGTH_MISMATCH);
            let flags = trace_class::ENABLE_FLAGS;
            assert_eq!(query(&mut g, flags, 4, wnode), STATUS_INVALID_HANDLE);
            assert_eq!(query(&mut g, flags, 4, 0), STATUS_INVALID_PARAMETER_MIX);
            assert_eq!(query(&mut g, flags, 8, wnode), STATUS_INFO_LENGTH_MISMATCH);
            assert_eq!(g.k.m.mem.read_u32(len).unwrap(), 4);
            assert_eq!(
                query(&mut g, trace_class::ALL_LOGGER_HANDLES, 64, 0),
                STATUS_SUCCESS
            );
            assert_eq!(g.k.m.mem.read_u32(len).unwrap(), 0, "no loggers");
            assert_eq!(query(&mut g, 42, 4, 0), STATUS_INVALID_INFO_CLASS);

            let guid = g.zeroed(16);
            let mut args = g.quad(0x1234);
            args.extend([0, guid, 1, 0x5555]);
            assert_eq!(
                status(g.call("WmiTraceMessage", &args)),
                STATUS_INVALID_HANDLE
            );
        }
    }
}
