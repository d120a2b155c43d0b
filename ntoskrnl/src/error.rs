//! Errors that end a host -> guest call path.

use dbt::{GuestFault, MemFault};

use crate::verifier::Finding;

/// Why a call into the driver could not finish. Any of these unwinds the whole call path back to the
/// outermost host caller (DriverEntry, a dispatch routine ...); the host process keeps running.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The guest CPU faulted (bad pointer, invalid instruction, divide error ...).
    #[error("guest fault: {0}")]
    Fault(Box<GuestFault>),
    /// The driver called an import nobody implements.
    #[error("driver called unimplemented import {import} (caller {caller:#x})")]
    Unimplemented {
        /// `module!function`.
        import: String,
        /// Guest return address of the call.
        caller: u64,
    },
    /// A kernel service was handed a guest pointer it could not use.
    #[error("{function} was passed a bad guest pointer: {fault}")]
    BadPointer {
        /// The kernel service that was called.
        function: &'static str,
        /// The failing access.
        fault: MemFault,
        /// CPU state at the call (the driver's side of the call).
        at: Box<GuestFault>,
    },
    /// A host-side memory access failed outside a service call (host reading a structure).
    #[error("{0}")]
    Mem(#[from] MemFault),
    /// The driver did something Windows would bug-check for.
    #[error("bug check 0x{code:X} ({name}): {detail}")]
    BugCheck {
        /// The Windows bug-check code.
        code: u32,
        /// Its symbolic name.
        name: &'static str,
        /// What happened, in words.
        detail: String,
        /// The verifier's finding (rule, driver, guest call site) when the verifier raised it.
        finding: Option<Box<Finding>>,
    },
    /// A wait that nothing left to run could ever satisfy.
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// A request the personality cannot carry out (named in the text).
    #[error("{0}")]
    Unsupported(String),
}

/// Result of a kernel service or a guest call.
pub type KResult<T> = Result<T, KernelError>;

impl From<GuestFault> for KernelError {
    fn from(f: GuestFault) -> Self {
        KernelError::Fault(Box::new(f))
    }
}

impl KernelError {
    /// One line without guest addresses (the same on x86-32 and x64), for traces.
    pub fn summary(&self) -> String {
        match self {
            KernelError::Fault(f) => format!("guest fault: {}", f.kind),
            KernelError::Unimplemented { import, .. } => format!("unimplemented import {import}"),
            KernelError::BadPointer {
                function, fault, ..
            } => {
                format!(
                    "{function} was passed a bad pointer ({} fault)",
                    if fault.write { "write" } else { "read" }
                )
            }
            KernelError::Mem(_) => "host access to a bad guest address".to_string(),
            KernelError::BugCheck { code, name, .. } => format!("bug check 0x{code:X} ({name})"),
            KernelError::Deadlock(_) => "deadlock".to_string(),
            KernelError::Unsupported(text) => text.clone(),
        }
    }

    /// A bug check with its well-known name.
    pub fn bug_check(code: u32, detail: impl Into<String>) -> Self {
        KernelError::BugCheck {
            code,
            name: bug_check_name(code),
            detail: detail.into(),
            finding: None,
        }
    }

    /// The verifier's finding this error carries, if the verifier raised it.
    pub fn finding(&self) -> Option<&Finding> {
        match self {
            KernelError::BugCheck { finding, .. } => finding.as_deref(),
            _ => None,
        }
    }
}

/// The symbolic name of a Windows bug-check code.
pub fn bug_check_name(code: u32) -> &'static str {
    match code {
        0x09 => "IRQL_NOT_GREATER_OR_EQUAL",
        0x0A => "IRQL_NOT_LESS_OR_EQUAL",
        0x0F => "SPIN_LOCK_ALREADY_OWNED",
        0x10 => "SPIN_LOCK_NOT_OWNED",
        0x19 => "BAD_POOL_HEADER",
        0x1E => "KMODE_EXCEPTION_NOT_HANDLED",
        0x35 => "NO_MORE_IRP_STACK_LOCATIONS",
        0x44 => "MULTIPLE_IRP_COMPLETE_REQUESTS",
        0x7C => "BUGCODE_NDIS_DRIVER",
        0xC1 => "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION",
        0xC2 => "BAD_POOL_CALLER",
        0xC4 => "DRIVER_VERIFIER_DETECTED_VIOLATION",
        0xC7 => "TIMER_OR_DPC_INVALID",
        0xC9 => "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
        0xCC => "PAGE_FAULT_IN_FREED_SPECIAL_POOL",
        0xCD => "PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
        0xCE => "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
        0xD5 => "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL",
        0xD6 => "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
        0xE1 => "WORKER_THREAD_RETURNED_AT_BAD_IRQL",
        0xE4 => "WORKER_INVALID",
        0xE7 => "INVALID_FLOATING_POINT_STATE",
        _ => "BUGCHECK",
    }
}
