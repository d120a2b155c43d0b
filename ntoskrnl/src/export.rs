//! The export-table mechanism every module crate uses: one declaration per exported function feeds
//! import binding, call tracing and the API-coverage report.
//!
//! A module declares its table with [`export_table!`](crate::export_table):
//! ```ignore
//! pub(crate) static EXPORTS: &[Export] = export_table![
//!     stdcall ExAllocatePoolWithTag => ex::allocate_pool_with_tag(pool_type: u32, size: u64, tag: u32);
//! ];
//! ```
//! Parameter types decide how arguments are taken from the guest: `u64` is pointer-sized (one stack
//! slot on x86), [`Quad`] is a 64-bit value passed by value (two slots on x86). An entry may end
//! with `@ LIMIT`, the highest IRQL the function may be called at (an [`Irql`]; the verifier
//! checks it before every call): `... (handle: u64) @ irql::ZW_PASSIVE;`. An entry may start with
//! `[x86]` or `[x64]` when the real module exports it on that architecture only
//! (`[x86] stdcall KeLowerIrql => ...`); imports of it on the other architecture bind to a trap.
//!
//! Exported *variables* (`KeTickCount`) are [`DataExport`]s, listed in the module's `data` table.

pub use crate::verifier::Irql;
use crate::{KResult, Kernel};
pub use dbt::{Arch, CallConv};

/// A host function standing in for a guest-callable export: gets the raw argument slots.
pub type HostFn = fn(&mut Kernel, &[u64]) -> KResult<u64>;

/// One exported function of a Windows module.
#[derive(Debug)]
pub struct Export {
    /// The exported name (as drivers import it).
    pub name: &'static str,
    /// Calling convention on x86-32 (x64 always uses the Microsoft x64 convention).
    pub conv: CallConv,
    /// Argument slots on x86-32 (stdcall cleanup size / 4).
    pub slots32: usize,
    /// Argument slots on x64.
    pub slots64: usize,
    /// Parameter names, for call traces.
    pub params: &'static [&'static str],
    /// The implementation.
    pub func: HostFn,
    /// The highest IRQL it may be called at.
    pub irql: Irql,
    /// The only architecture the real module exports it on (`None`: both).
    pub arch: Option<Arch>,
}

impl Export {
    /// Whether the real module exports it on `arch`.
    pub fn available_on(&self, arch: Arch) -> bool {
        self.arch.is_none_or(|a| a == arch)
    }
}

/// One exported variable of a Windows module: an import of it binds to the variable's guest address
/// (the driver reads it inline), not to a thunk.
#[derive(Debug)]
pub struct DataExport {
    /// The exported name.
    pub name: &'static str,
    /// The only architecture the real module exports it on (`None`: both).
    pub arch: Option<Arch>,
    /// Guest address of the variable in this kernel (`None` if it has none).
    pub address: fn(&Kernel) -> Option<u64>,
}

impl DataExport {
    /// Whether the real module exports it on `arch`.
    pub fn available_on(&self, arch: Arch) -> bool {
        self.arch.is_none_or(|a| a == arch)
    }
}

/// A Windows module the personality provides.
#[derive(Debug)]
pub struct Module {
    /// File name as drivers import it, e.g. `ntoskrnl.exe`.
    pub name: &'static str,
    /// Implemented exports, one table per subsystem (each declared next to its code).
    pub tables: &'static [&'static [Export]],
    /// Exported variables.
    pub data: &'static [DataExport],
}

impl Module {
    /// Every implemented export.
    pub fn exports(&self) -> impl Iterator<Item = &'static Export> {
        self.tables.iter().flat_map(|t| t.iter())
    }

    /// The export with this name (exact, as Windows export lookup is case-sensitive), on any
    /// architecture.
    pub fn find(&self, name: &str) -> Option<&'static Export> {
        self.exports().find(|e| e.name == name)
    }

    /// The function export with this name that the real module has on `arch`.
    pub fn find_on(&self, arch: Arch, name: &str) -> Option<&'static Export> {
        self.exports()
            .find(|e| e.name == name && e.available_on(arch))
    }

    /// The exported variable with this name that the real module has on `arch`.
    pub fn find_data_on(&self, arch: Arch, name: &str) -> Option<&'static DataExport> {
        self.data
            .iter()
            .find(|d| d.name == name && d.available_on(arch))
    }

    /// Whether it implements `name` (a function or a variable) on some architecture.
    pub fn provides(&self, name: &str) -> bool {
        self.find(name).is_some() || self.data.iter().any(|d| d.name == name)
    }
}

/// A 64-bit integer passed by value (LARGE_INTEGER, ULONGLONG): two stack slots on x86-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quad(pub u64);

/// A type that can be taken from the guest's argument slots.
pub trait GuestArg: Sized {
    /// Stack slots on x86-32.
    const SLOTS32: usize = 1;
    /// Takes the value at `*at` (advancing it by the slots used).
    fn take(raw: &[u64], at: &mut usize, x64: bool) -> Self;
}

fn slot(raw: &[u64], at: &mut usize) -> u64 {
    let v = raw.get(*at).copied().unwrap_or(0);
    *at += 1;
    v
}

impl GuestArg for u64 {
    fn take(raw: &[u64], at: &mut usize, _x64: bool) -> Self {
        slot(raw, at)
    }
}
impl GuestArg for u32 {
    fn take(raw: &[u64], at: &mut usize, _x64: bool) -> Self {
        slot(raw, at) as u32
    }
}
impl GuestArg for i32 {
    fn take(raw: &[u64], at: &mut usize, _x64: bool) -> Self {
        slot(raw, at) as u32 as i32
    }
}
impl GuestArg for u16 {
    fn take(raw: &[u64], at: &mut usize, _x64: bool) -> Self {
        slot(raw, at) as u16
    }
}
impl GuestArg for u8 {
    fn take(raw: &[u64], at: &mut usize, _x64: bool) -> Self {
        slot(raw, at) as u8
    }
}
impl GuestArg for bool {
    fn take(raw: &[u64], at: &mut usize, _x64: bool) -> Self {
        slot(raw, at) as u8 != 0
    }
}
impl GuestArg for Quad {
    const SLOTS32: usize = 2;
    fn take(raw: &[u64], at: &mut usize, x64: bool) -> Self {
        let lo = slot(raw, at);
        if x64 {
            Quad(lo)
        } else {
            let hi = slot(raw, at);
            Quad((lo & 0xFFFF_FFFF) | (hi << 32))
        }
    }
}

/// A value a host function returns to the guest (in eax / edx:eax / rax).
pub trait IntoRet {
    /// The raw return register value.
    fn into_ret(self) -> u64;
}
impl IntoRet for () {
    fn into_ret(self) -> u64 {
        0
    }
}
impl IntoRet for u64 {
    fn into_ret(self) -> u64 {
        self
    }
}
impl IntoRet for u32 {
    fn into_ret(self) -> u64 {
        self as u64
    }
}
impl IntoRet for i32 {
    fn into_ret(self) -> u64 {
        self as u32 as u64
    }
}
impl IntoRet for u16 {
    fn into_ret(self) -> u64 {
        self as u64
    }
}
impl IntoRet for u8 {
    fn into_ret(self) -> u64 {
        self as u64
    }
}
impl IntoRet for bool {
    fn into_ret(self) -> u64 {
        self as u64
    }
}
impl IntoRet for Quad {
    fn into_ret(self) -> u64 {
        self.0
    }
}

/// Declares a module's export table: `[arch] conv Name => path::to::function(param: Type, ...) @ LIMIT;`.
/// `[arch]` (`[x86]` or `[x64]`) is optional: the only architecture the real module exports it on.
/// `conv` is `stdcall`, `cdecl` or `fastcall` (the x86-32 convention). The function takes
/// `&mut Kernel` followed by the parameters and returns `KResult<impl IntoRet>`. `@ LIMIT` (an
/// [`Irql`](crate::export::Irql) expression) is optional; without it any IRQL is allowed.
#[macro_export]
macro_rules! export_table {
    ($($([$only:ident])? $conv:ident $name:ident => $($func:ident)::+ ( $($arg:ident : $ty:ty),* $(,)? ) $(@ $irql:expr)?;)*) => {
        &[$({
            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn $name(k: &mut $crate::Kernel, raw: &[u64]) -> $crate::KResult<u64> {
                let x64 = k.m.arch() == $crate::dbt::Arch::X64;
                let mut at = 0usize;
                $(let $arg = <$ty as $crate::export::GuestArg>::take(raw, &mut at, x64);)*
                $($func)::+(k, $($arg),*).map($crate::export::IntoRet::into_ret)
            }
            $crate::export::Export {
                name: stringify!($name),
                conv: $crate::export_table!(@conv $conv),
                slots32: 0 $(+ <$ty as $crate::export::GuestArg>::SLOTS32)*,
                slots64: 0 $(+ $crate::export_table!(@one $arg))*,
                params: &[$(stringify!($arg)),*],
                func: $name,
                irql: $crate::export_table!(@irql $($irql)?),
                arch: $crate::export_table!(@arch $($only)?),
            }
        }),*]
    };
    (@conv stdcall) => { $crate::export::CallConv::Stdcall };
    (@conv cdecl) => { $crate::export::CallConv::Cdecl };
    (@conv fastcall) => { $crate::export::CallConv::Fastcall };
    (@one $arg:ident) => { 1 };
    (@irql) => { $crate::export::Irql::Any };
    (@irql $irql:expr) => { $irql };
    (@arch) => { None };
    (@arch x86) => { Some($crate::dbt::Arch::X86) };
    (@arch x64) => { Some($crate::dbt::Arch::X64) };
}
