//! Debug output and bug checks: DbgPrint and friends, DbgBreakPoint, KeBugCheck(Ex).
//!
//! Driver output goes to `tracing` (target `ica::dbgprint`, level info) and to the kernel's
//! [`DebugLog`], one entry per line, prefixed with the driver image name (`ioctl.sys: text`).
//! Differences from Windows, on purpose:
//! * No component filtering: DbgPrintEx prints at every level (Windows shows only
//!   DPFLTR_ERROR_LEVEL unless the component's mask is raised), and DbgQueryDebugFilterState says
//!   every level is enabled.
//! * No 512-byte limit on one message.
//! * DbgBreakPoint has no debugger to break into: it logs a warning (with the caller) and the driver
//!   continues. Windows without a kernel debugger would bug-check (KMODE_EXCEPTION_NOT_HANDLED,
//!   0x80000003); continuing keeps drivers that leave breakpoints in debug paths usable.

use crate::export::Export;
use crate::fmt::{self, ArgSource};
use crate::status::{NtStatus, STATUS_SUCCESS};
use crate::{crt, export_table, rtl, KResult, Kernel, KernelError};

/// What drivers printed, per kernel (`k.extension::<DebugLog>()`), for tests and the CLI.
#[derive(Debug, Default)]
pub struct DebugLog {
    /// One entry per line of output: `image.sys: text`.
    pub lines: Vec<String>,
}

/// Records debug output of the driver making the current call: each line (the trailing newline
/// dropped) to `tracing` and to the [`DebugLog`].
pub fn print(k: &mut Kernel, text: &str) {
    let image = k.caller_image();
    let text = text.trim_end_matches(['\r', '\n']);
    let log = k.extension::<DebugLog>();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        tracing::info!(target: "ica::dbgprint", "{image}: {line}");
        log.lines.push(format!("{image}: {line}"));
    }
}

/// Formats a narrow format string with its arguments and prints it.
fn print_formatted(
    k: &mut Kernel,
    prefix: &str,
    format: u64,
    args: ArgSource,
) -> KResult<NtStatus> {
    let bytes = fmt::format_narrow(k, format, args)?;
    let units: Vec<u16> = bytes.into_iter().map(u16::from).collect();
    let text = format!("{prefix}{}", rtl::ansi_units_to_string(&units));
    print(k, &text);
    Ok(STATUS_SUCCESS)
}

/// DbgPrint(Format, ...).
pub fn dbg_print(k: &mut Kernel, format: u64) -> KResult<NtStatus> {
    print_formatted(k, "", format, ArgSource::Varargs(1))
}

/// DbgPrintEx(ComponentId, Level, Format, ...).
pub fn dbg_print_ex(
    k: &mut Kernel,
    _component_id: u32,
    _level: u32,
    format: u64,
) -> KResult<NtStatus> {
    print_formatted(k, "", format, ArgSource::Varargs(3))
}

/// vDbgPrintEx(ComponentId, Level, Format, arglist).
pub fn vdbg_print_ex(
    k: &mut Kernel,
    _component_id: u32,
    _level: u32,
    format: u64,
    arglist: u64,
) -> KResult<NtStatus> {
    print_formatted(k, "", format, ArgSource::VaList(arglist))
}

/// vDbgPrintExWithPrefix(Prefix, ComponentId, Level, Format, arglist).
pub fn vdbg_print_ex_with_prefix(
    k: &mut Kernel,
    prefix: u64,
    _component_id: u32,
    _level: u32,
    format: u64,
    arglist: u64,
) -> KResult<NtStatus> {
    let prefix = if prefix == 0 {
        String::new()
    } else {
        crt::read_ansi_text(k, prefix)?
    };
    print_formatted(k, &prefix, format, ArgSource::VaList(arglist))
}

/// DbgQueryDebugFilterState(ComponentId, Level) -> TRUE: every level is shown.
pub fn query_debug_filter_state(_k: &mut Kernel, _component_id: u32, _level: u32) -> KResult<u32> {
    Ok(1)
}

/// DbgSetDebugFilterState(ComponentId, Level, State): accepted and ignored (nothing is filtered).
pub fn set_debug_filter_state(
    _k: &mut Kernel,
    _component_id: u32,
    _level: u32,
    _state: bool,
) -> KResult<NtStatus> {
    Ok(STATUS_SUCCESS)
}

/// DbgBreakPoint(): warns and continues (there is no kernel debugger to break into).
pub fn break_point(k: &mut Kernel) -> KResult<()> {
    break_point_with_status(k, 0)
}

/// DbgBreakPointWithStatus(Status): warns and continues.
pub fn break_point_with_status(k: &mut Kernel, status: u32) -> KResult<()> {
    let image = k.caller_image();
    let caller = k
        .read_ptr(k.m.cpu.regs[dbt::Reg::Rsp as usize])
        .unwrap_or(0);
    tracing::warn!(
        target: "ica::dbgprint",
        "{image}: breakpoint (status {status:#x}) at {}; no debugger attached, continuing",
        k.symbolize(caller)
    );
    Ok(())
}

/// KeBugCheck(BugCheckCode).
pub fn bug_check(k: &mut Kernel, code: u32) -> KResult<()> {
    let image = k.caller_image();
    Err(KernelError::bug_check(
        code,
        format!("KeBugCheck(0x{code:X}) called by {image}"),
    ))
}

/// KeBugCheckEx(BugCheckCode, Parameter1..4).
pub fn bug_check_ex(k: &mut Kernel, code: u32, p1: u64, p2: u64, p3: u64, p4: u64) -> KResult<()> {
    let image = k.caller_image();
    Err(KernelError::bug_check(
        code,
        format!("KeBugCheckEx(0x{code:X}, {p1:#x}, {p2:#x}, {p3:#x}, {p4:#x}) called by {image}"),
    ))
}

pub(crate) static EXPORTS: &[Export] = export_table![
    cdecl DbgPrint => dbg_print(format: u64);
    cdecl DbgPrintReturnControlC => dbg_print(format: u64);
    cdecl DbgPrintEx => dbg_print_ex(component_id: u32, level: u32, format: u64);
    stdcall vDbgPrintEx => vdbg_print_ex(component_id: u32, level: u32, format: u64, arglist: u64);
    stdcall vDbgPrintExWithPrefix => vdbg_print_ex_with_prefix(prefix: u64, component_id: u32, level: u32, format: u64, arglist: u64);
    stdcall DbgQueryDebugFilterState => query_debug_filter_state(component_id: u32, level: u32);
    stdcall DbgSetDebugFilterState => set_debug_filter_state(component_id: u32, level: u32, state: bool);
    stdcall DbgBreakPoint => break_point();
    stdcall DbgBreakPointWithStatus => break_point_with_status(status: u32);
    stdcall KeBugCheck => bug_check(bug_check_code: u32);
    stdcall KeBugCheckEx => bug_check_ex(bug_check_code: u32, parameter1: u64, parameter2: u64, parameter3: u64, parameter4: u64);
];

#[cfg(test)]
mod tests {
    use dbt::Arch;

    use super::*;
    use crate::crt::test_support::Guest;

    #[test]
    fn dbgprint_goes_to_the_log_line_by_line() {
        for arch in [Arch::X86, Arch::X64] {
            let mut g = Guest::new(arch);
            let fmt = g.cstr("ioctl: %s\n");
            let name = g.cstr("IRP_MJ_CREATE");
            assert_eq!(g.call("DbgPrint", &[fmt, name]).ok(), Some(0));
            let fmt = g.cstr("two\r\nlines %d\n\n");
            assert_eq!(g.call("DbgPrintEx", &[77, 3, fmt, 5]).ok(), Some(0));
            let fmt = g.cstr("%I64u");
            let prefix = g.cstr("pre: ");
            let slots = g.quad(1 << 40);
            let va = g.va_list(&slots);
            assert_eq!(
                g.call("vDbgPrintExWithPrefix", &[prefix, 0, 0, fmt, va])
                    .ok(),
                Some(0)
            );
            assert_eq!(
                g.call("DbgBreakPoint", &[]).ok(),
                Some(0),
                "a breakpoint logs and continues"
            );
            let lines = &g.k.extension::<DebugLog>().lines;
            assert_eq!(
                lines,
                &[
                    "host: ioctl: IRP_MJ_CREATE",
                    "host: two",
                    "host: lines 5",
                    "host: pre: 1099511627776"
                ]
            );
        }
    }

    #[test]
    fn bug_checks_end_the_call() {
        let mut g = Guest::new(Arch::X64);
        let err = g
            .call("KeBugCheckEx", &[0xD1, 1, 2, 3, 4])
            .expect_err("bug check");
        assert!(matches!(err, KernelError::BugCheck { code: 0xD1, .. }));
        assert!(
            err.to_string()
                .contains("KeBugCheckEx(0xD1, 0x1, 0x2, 0x3, 0x4)"),
            "{err}"
        );
        assert!(matches!(
            g.call("KeBugCheck", &[0x0A]),
            Err(KernelError::BugCheck { code: 0x0A, .. })
        ));
    }
}
