//! Interlocked operations and the ExInterlocked list routines.
//!
//! x64 drivers mostly use lock-prefixed intrinsics; the exports matter on x86, where
//! `InterlockedXxx`, `ExfInterlockedXxx` and the SList functions are fastcall (first two arguments in
//! ecx, edx) and the `ExInterlockedXxx` forms stdcall. There is one processor and the guest is not
//! running while a host function is, so a plain read-modify-write is atomic.
//!
//! The spin lock the ExInterlocked routines take is checked rather than taken (they may be called at
//! any IRQL and hold the lock only inside the call): if the driver already holds it, the real routine
//! would spin forever, reported as the SPIN_LOCK_ALREADY_OWNED bug check.
//!
//! SLIST_HEADER: on x86 `{ Next, Depth: u16, Sequence: u16 }` (8 bytes); on x64 the 16-byte
//! "Header16" form: `Depth` in bits 0..16 and `Sequence` in bits 16..64 of the first quadword, the
//! 16-byte-aligned first entry in bits 4..64 of the second (its low 4 bits are header flags, kept).

use dbt::Arch;

use crate::export::{Export, Quad};
use crate::verifier::{self, Rule, StopCode};
use crate::{export_table, KResult, Kernel, KernelError};

fn read_i32(k: &Kernel, addr: u64) -> KResult<i32> {
    Ok(k.m.mem.read_u32(addr)? as i32)
}

fn write_i32(k: &mut Kernel, addr: u64, v: i32) -> KResult<()> {
    Ok(k.m.mem.write_u32(addr, v as u32)?)
}

/// Bug-checks if the spin lock at `lock` is held (acquiring it would never return).
fn check_lock(k: &mut Kernel, lock: u64, function: &str) -> KResult<()> {
    if k.read_ptr(lock)? & 1 != 0 {
        let holder = verifier::lock_holder(k, lock);
        return Err(verifier::stop(
            k,
            Rule::SpinLockAlreadyOwned,
            StopCode::sub(0x0F, lock),
            format!("{function} with spinlock {lock:#x}, which is already held{holder} (deadlock on this processor)"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 32-bit and 64-bit values

/// InterlockedIncrement(Addend) -> the new value.
pub fn increment(k: &mut Kernel, addend: u64) -> KResult<i32> {
    let v = read_i32(k, addend)?.wrapping_add(1);
    write_i32(k, addend, v)?;
    Ok(v)
}

/// InterlockedDecrement(Addend) -> the new value.
pub fn decrement(k: &mut Kernel, addend: u64) -> KResult<i32> {
    let v = read_i32(k, addend)?.wrapping_sub(1);
    write_i32(k, addend, v)?;
    Ok(v)
}

/// InterlockedExchange(Target, Value) -> the old value.
pub fn exchange(k: &mut Kernel, target: u64, value: i32) -> KResult<i32> {
    let old = read_i32(k, target)?;
    write_i32(k, target, value)?;
    Ok(old)
}

/// InterlockedExchangeAdd(Addend, Value) -> the old value.
pub fn exchange_add(k: &mut Kernel, addend: u64, value: i32) -> KResult<i32> {
    let old = read_i32(k, addend)?;
    write_i32(k, addend, old.wrapping_add(value))?;
    Ok(old)
}

/// InterlockedCompareExchange(Destination, Exchange, Comparand) -> the old value.
pub fn compare_exchange(
    k: &mut Kernel,
    destination: u64,
    exchange: i32,
    comparand: i32,
) -> KResult<i32> {
    let old = read_i32(k, destination)?;
    if old == comparand {
        write_i32(k, destination, exchange)?;
    }
    Ok(old)
}

/// ExfInterlockedCompareExchange64(Destination, Exchange*, Comparand*) -> the old value (edx:eax).
pub fn compare_exchange64(
    k: &mut Kernel,
    destination: u64,
    exchange: u64,
    comparand: u64,
) -> KResult<Quad> {
    let new = k.m.mem.read_u64(exchange)?;
    let expected = k.m.mem.read_u64(comparand)?;
    let old = k.m.mem.read_u64(destination)?;
    if old == expected {
        k.m.mem.write_u64(destination, new)?;
    }
    Ok(Quad(old))
}

/// ExInterlockedCompareExchange64(Destination, Exchange*, Comparand*, Lock).
pub fn compare_exchange64_locked(
    k: &mut Kernel,
    destination: u64,
    exchange: u64,
    comparand: u64,
    lock: u64,
) -> KResult<Quad> {
    check_lock(k, lock, "ExInterlockedCompareExchange64")?;
    compare_exchange64(k, destination, exchange, comparand)
}

/// ExInterlockedAddUlong / ExfInterlockedAddUlong(Addend, Increment, Lock) -> the old value.
pub fn add_ulong(k: &mut Kernel, addend: u64, increment: u32, lock: u64) -> KResult<u32> {
    check_lock(k, lock, "ExInterlockedAddUlong")?;
    let old = k.m.mem.read_u32(addend)?;
    k.m.mem.write_u32(addend, old.wrapping_add(increment))?;
    Ok(old)
}

/// ExInterlockedAddLargeInteger(Addend, Increment, Lock) -> the old value.
pub fn add_large_integer(k: &mut Kernel, addend: u64, increment: Quad, lock: u64) -> KResult<Quad> {
    check_lock(k, lock, "ExInterlockedAddLargeInteger")?;
    let old = k.m.mem.read_u64(addend)?;
    k.m.mem.write_u64(addend, old.wrapping_add(increment.0))?;
    Ok(Quad(old))
}

/// ExInterlockedAddLargeStatistic(Addend, Increment): adds a ULONG to a LARGE_INTEGER.
pub fn add_large_statistic(k: &mut Kernel, addend: u64, increment: u32) -> KResult<()> {
    let old = k.m.mem.read_u64(addend)?;
    k.m.mem
        .write_u64(addend, old.wrapping_add(u64::from(increment)))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Doubly linked lists (LIST_ENTRY: Flink, Blink)

fn flink(k: &Kernel, entry: u64) -> KResult<u64> {
    k.read_ptr(entry)
}

fn blink(k: &Kernel, entry: u64) -> KResult<u64> {
    k.read_ptr(entry + k.ptr_size())
}

fn set_links(k: &mut Kernel, entry: u64, flink: u64, blink: u64) -> KResult<()> {
    k.write_ptr(entry, flink)?;
    let at = entry + k.ptr_size();
    k.write_ptr(at, blink)
}

/// Inserts `entry` after `head` (at the head of the list); returns the former first entry, or NULL
/// if the list was empty.
pub fn insert_head(k: &mut Kernel, head: u64, entry: u64) -> KResult<u64> {
    let first = flink(k, head)?;
    set_links(k, entry, first, head)?;
    let at = first + k.ptr_size();
    k.write_ptr(at, entry)?;
    k.write_ptr(head, entry)?;
    Ok(if first == head { 0 } else { first })
}

/// Inserts `entry` before `head` (at the tail); returns the former last entry, or NULL if the list
/// was empty.
pub fn insert_tail(k: &mut Kernel, head: u64, entry: u64) -> KResult<u64> {
    let last = blink(k, head)?;
    set_links(k, entry, head, last)?;
    k.write_ptr(last, entry)?;
    let at = head + k.ptr_size();
    k.write_ptr(at, entry)?;
    Ok(if last == head { 0 } else { last })
}

/// Unlinks and returns the first entry, or NULL if the list is empty.
pub fn remove_head(k: &mut Kernel, head: u64) -> KResult<u64> {
    let first = flink(k, head)?;
    if first == head {
        return Ok(0);
    }
    let next = flink(k, first)?;
    k.write_ptr(head, next)?;
    let at = next + k.ptr_size();
    k.write_ptr(at, head)?;
    Ok(first)
}

/// ExInterlockedInsertHeadList(ListHead, ListEntry, Lock).
pub fn ex_insert_head_list(k: &mut Kernel, head: u64, entry: u64, lock: u64) -> KResult<u64> {
    check_lock(k, lock, "ExInterlockedInsertHeadList")?;
    insert_head(k, head, entry)
}

/// ExInterlockedInsertTailList(ListHead, ListEntry, Lock).
pub fn ex_insert_tail_list(k: &mut Kernel, head: u64, entry: u64, lock: u64) -> KResult<u64> {
    check_lock(k, lock, "ExInterlockedInsertTailList")?;
    insert_tail(k, head, entry)
}

/// ExInterlockedRemoveHeadList(ListHead, Lock).
pub fn ex_remove_head_list(k: &mut Kernel, head: u64, lock: u64) -> KResult<u64> {
    check_lock(k, lock, "ExInterlockedRemoveHeadList")?;
    remove_head(k, head)
}

// ---------------------------------------------------------------------------------------------
// Singly linked lists (SINGLE_LIST_ENTRY: Next)

/// ExInterlockedPushEntryList(ListHead, ListEntry, Lock) -> the former first entry.
pub fn push_entry_list(k: &mut Kernel, head: u64, entry: u64, lock: u64) -> KResult<u64> {
    check_lock(k, lock, "ExInterlockedPushEntryList")?;
    let first = k.read_ptr(head)?;
    k.write_ptr(entry, first)?;
    k.write_ptr(head, entry)?;
    Ok(first)
}

/// ExInterlockedPopEntryList(ListHead, Lock) -> the removed first entry, or NULL.
pub fn pop_entry_list(k: &mut Kernel, head: u64, lock: u64) -> KResult<u64> {
    check_lock(k, lock, "ExInterlockedPopEntryList")?;
    let first = k.read_ptr(head)?;
    if first != 0 {
        let next = k.read_ptr(first)?;
        k.write_ptr(head, next)?;
    }
    Ok(first)
}

// ---------------------------------------------------------------------------------------------
// Sequenced lists (SLIST_HEADER)

/// The fields of an SLIST_HEADER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SListHeader {
    first: u64,
    depth: u16,
    sequence: u64,
    /// x64: the header-type / init bits kept in the low nibble of the second quadword.
    flags: u64,
}

fn read_slist(k: &Kernel, head: u64) -> KResult<SListHeader> {
    let m = &k.m.mem;
    Ok(match k.arch() {
        Arch::X86 => SListHeader {
            first: u64::from(m.read_u32(head)?),
            depth: m.read_u16(head + 4)?,
            sequence: u64::from(m.read_u16(head + 6)?),
            flags: 0,
        },
        Arch::X64 => {
            let q0 = m.read_u64(head)?;
            let q1 = m.read_u64(head + 8)?;
            SListHeader {
                first: q1 & !0xF,
                depth: q0 as u16,
                sequence: q0 >> 16,
                flags: q1 & 0xF,
            }
        }
    })
}

fn write_slist(k: &mut Kernel, head: u64, h: SListHeader) -> KResult<()> {
    match k.arch() {
        Arch::X86 => {
            k.m.mem.write_u32(head, h.first as u32)?;
            k.m.mem.write_u16(head + 4, h.depth)?;
            k.m.mem.write_u16(head + 6, h.sequence as u16)?;
        }
        Arch::X64 => {
            let q0 = u64::from(h.depth) | (h.sequence & 0xFFFF_FFFF_FFFF) << 16;
            k.m.mem.write_u64(head, q0)?;
            k.m.mem.write_u64(head + 8, h.first | h.flags)?;
        }
    }
    Ok(())
}

/// InterlockedPushEntrySList / ExpInterlockedPushEntrySList(ListHead, ListEntry) -> the former
/// first entry.
pub fn push_entry_slist(k: &mut Kernel, head: u64, entry: u64) -> KResult<u64> {
    if k.arch() == Arch::X64 && entry & 0xF != 0 {
        return Err(KernelError::bug_check(
            0xC4,
            format!("SLIST entry {entry:#x} pushed on {head:#x} is not 16-byte aligned"),
        ));
    }
    let h = read_slist(k, head)?;
    k.write_ptr(entry, h.first)?;
    write_slist(
        k,
        head,
        SListHeader {
            first: entry,
            depth: h.depth.wrapping_add(1),
            sequence: h.sequence.wrapping_add(1),
            ..h
        },
    )?;
    Ok(h.first)
}

/// InterlockedPopEntrySList / ExpInterlockedPopEntrySList(ListHead) -> the removed entry, or NULL.
pub fn pop_entry_slist(k: &mut Kernel, head: u64) -> KResult<u64> {
    let h = read_slist(k, head)?;
    if h.first == 0 {
        return Ok(0);
    }
    let next = k.read_ptr(h.first)?;
    write_slist(
        k,
        head,
        SListHeader {
            first: next,
            depth: h.depth.wrapping_sub(1),
            sequence: h.sequence.wrapping_add(1),
            ..h
        },
    )?;
    Ok(h.first)
}

/// ExInterlockedFlushSList / ExpInterlockedFlushSList(ListHead) -> the former first entry (the
/// chain stays linked).
pub fn flush_slist(k: &mut Kernel, head: u64) -> KResult<u64> {
    let h = read_slist(k, head)?;
    if h.first != 0 {
        write_slist(
            k,
            head,
            SListHeader {
                first: 0,
                depth: 0,
                ..h
            },
        )?;
    }
    Ok(h.first)
}

/// ExInterlockedPushEntrySList(ListHead, ListEntry, Lock).
pub fn push_entry_slist_locked(k: &mut Kernel, head: u64, entry: u64, lock: u64) -> KResult<u64> {
    check_lock(k, lock, "ExInterlockedPushEntrySList")?;
    push_entry_slist(k, head, entry)
}

/// ExInterlockedPopEntrySList(ListHead, Lock).
pub fn pop_entry_slist_locked(k: &mut Kernel, head: u64, lock: u64) -> KResult<u64> {
    check_lock(k, lock, "ExInterlockedPopEntrySList")?;
    pop_entry_slist(k, head)
}

/// InitializeSListHead(ListHead) (x64 export): empty, header type "Header16".
pub fn initialize_slist_head(k: &mut Kernel, head: u64) -> KResult<()> {
    let flags = if k.arch() == Arch::X64 { 1 } else { 0 };
    write_slist(
        k,
        head,
        SListHeader {
            first: 0,
            depth: 0,
            sequence: 0,
            flags,
        },
    )
}

/// ExQueryDepthSList(ListHead).
pub fn query_depth_slist(k: &mut Kernel, head: u64) -> KResult<u16> {
    Ok(read_slist(k, head)?.depth)
}

/// FirstEntrySList(ListHead).
pub fn first_entry_slist(k: &mut Kernel, head: u64) -> KResult<u64> {
    Ok(read_slist(k, head)?.first)
}

pub(crate) static EXPORTS: &[Export] = export_table![
    fastcall InterlockedIncrement => increment(addend: u64);
    fastcall InterlockedDecrement => decrement(addend: u64);
    fastcall InterlockedExchange => exchange(target: u64, value: i32);
    fastcall InterlockedExchangeAdd => exchange_add(addend: u64, value: i32);
    fastcall InterlockedCompareExchange => compare_exchange(destination: u64, exchange: i32, comparand: i32);
    fastcall ExfInterlockedCompareExchange64 => compare_exchange64(destination: u64, exchange: u64, comparand: u64);
    fastcall ExInterlockedCompareExchange64 => compare_exchange64_locked(destination: u64, exchange: u64, comparand: u64, lock: u64);
    stdcall ExInterlockedAddUlong => add_ulong(addend: u64, increment: u32, lock: u64);
    fastcall ExfInterlockedAddUlong => add_ulong(addend: u64, increment: u32, lock: u64);
    stdcall ExInterlockedAddLargeInteger => add_large_integer(addend: u64, increment: Quad, lock: u64);
    fastcall ExInterlockedAddLargeStatistic => add_large_statistic(addend: u64, increment: u32);
    stdcall ExInterlockedInsertHeadList => ex_insert_head_list(list_head: u64, list_entry: u64, lock: u64);
    stdcall ExInterlockedInsertTailList => ex_insert_tail_list(list_head: u64, list_entry: u64, lock: u64);
    stdcall ExInterlockedRemoveHeadList => ex_remove_head_list(list_head: u64, lock: u64);
    fastcall ExfInterlockedInsertHeadList => ex_insert_head_list(list_head: u64, list_entry: u64, lock: u64);
    fastcall ExfInterlockedInsertTailList => ex_insert_tail_list(list_head: u64, list_entry: u64, lock: u64);
    fastcall ExfInterlockedRemoveHeadList => ex_remove_head_list(list_head: u64, lock: u64);
    stdcall ExInterlockedPushEntryList => push_entry_list(list_head: u64, list_entry: u64, lock: u64);
    stdcall ExInterlockedPopEntryList => pop_entry_list(list_head: u64, lock: u64);
    fastcall ExfInterlockedPushEntryList => push_entry_list(list_head: u64, list_entry: u64, lock: u64);
    fastcall ExfInterlockedPopEntryList => pop_entry_list(list_head: u64, lock: u64);
    fastcall InterlockedPushEntrySList => push_entry_slist(list_head: u64, list_entry: u64);
    fastcall InterlockedPopEntrySList => pop_entry_slist(list_head: u64);
    fastcall ExInterlockedPushEntrySList => push_entry_slist_locked(list_head: u64, list_entry: u64, lock: u64);
    fastcall ExInterlockedPopEntrySList => pop_entry_slist_locked(list_head: u64, lock: u64);
    fastcall ExInterlockedFlushSList => flush_slist(list_head: u64);
    stdcall ExpInterlockedPushEntrySList => push_entry_slist(list_head: u64, list_entry: u64);
    stdcall ExpInterlockedPopEntrySList => pop_entry_slist(list_head: u64);
    stdcall ExpInterlockedFlushSList => flush_slist(list_head: u64);
    stdcall InitializeSListHead => initialize_slist_head(list_head: u64);
    stdcall ExQueryDepthSList => query_depth_slist(list_head: u64);
    stdcall FirstEntrySList => first_entry_slist(list_head: u64);
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crt::test_support::Guest;

    const ARCHES: [Arch; 2] = [Arch::X86, Arch::X64];

    fn as_i32(v: u64) -> i32 {
        v as u32 as i32
    }

    #[test]
    fn fastcall_values() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let v = g.bytes(&5i32.to_le_bytes());
            assert_eq!(
                g.call("InterlockedIncrement", &[v]).map(as_i32).ok(),
                Some(6)
            );
            assert_eq!(
                g.call("InterlockedDecrement", &[v]).map(as_i32).ok(),
                Some(5)
            );
            assert_eq!(
                g.call("InterlockedCompareExchange", &[v, 9, 4])
                    .map(as_i32)
                    .ok(),
                Some(5)
            );
            assert_eq!(
                g.call("InterlockedCompareExchange", &[v, 9, 5])
                    .map(as_i32)
                    .ok(),
                Some(5)
            );
            assert_eq!(
                g.call("InterlockedExchange", &[v, (-3i32) as u32 as u64])
                    .map(as_i32)
                    .ok(),
                Some(9)
            );
            assert_eq!(
                g.call("InterlockedExchangeAdd", &[v, 10]).map(as_i32).ok(),
                Some(-3)
            );
            assert_eq!(g.k.m.mem.read_u32(v).ok(), Some(7));

            let q = g.bytes(&10u64.to_le_bytes());
            let (new, cmp) = (
                g.bytes(&(1u64 << 40).to_le_bytes()),
                g.bytes(&10u64.to_le_bytes()),
            );
            assert_eq!(
                g.call("ExfInterlockedCompareExchange64", &[q, new, cmp])
                    .ok(),
                Some(10)
            );
            assert_eq!(g.k.m.mem.read_u64(q).ok(), Some(1 << 40));
            let lock = g.zeroed(8);
            let mut args = vec![q];
            args.extend(g.quad(5));
            args.push(lock);
            assert_eq!(
                g.call("ExInterlockedAddLargeInteger", &args).ok(),
                Some(1 << 40)
            );
            assert_eq!(g.k.m.mem.read_u64(q).ok(), Some((1 << 40) + 5));
        }
    }

    #[test]
    fn list_entries() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let p = g.k.ptr_size();
            let head = g.zeroed(16);
            g.k.write_ptr(head, head).expect("flink");
            g.k.write_ptr(head + p, head).expect("blink");
            let (a, b, c) = (g.zeroed(16), g.zeroed(16), g.zeroed(16));
            let lock = g.zeroed(8);
            assert_eq!(
                g.call("ExInterlockedInsertTailList", &[head, a, lock]).ok(),
                Some(0)
            );
            assert_eq!(
                g.call("ExInterlockedInsertTailList", &[head, b, lock]).ok(),
                Some(a)
            );
            assert_eq!(
                g.call("ExfInterlockedInsertHeadList", &[head, c, lock])
                    .ok(),
                Some(a)
            );
            assert_eq!(
                g.call("ExInterlockedRemoveHeadList", &[head, lock]).ok(),
                Some(c)
            );
            assert_eq!(
                g.call("ExfInterlockedRemoveHeadList", &[head, lock]).ok(),
                Some(a)
            );
            assert_eq!(
                g.k.read_ptr(head + p).ok(),
                Some(b),
                "Blink of the head is the last entry"
            );
            assert_eq!(
                g.call("ExInterlockedRemoveHeadList", &[head, lock]).ok(),
                Some(b)
            );
            assert_eq!(
                g.call("ExInterlockedRemoveHeadList", &[head, lock]).ok(),
                Some(0)
            );
            assert_eq!(
                (g.k.read_ptr(head).ok(), g.k.read_ptr(head + p).ok()),
                (Some(head), Some(head))
            );

            g.k.write_ptr(lock, 1).expect("hold the lock");
            assert!(matches!(
                g.call("ExInterlockedInsertTailList", &[head, a, lock]),
                Err(KernelError::BugCheck { code: 0x0F, .. })
            ));
            g.k.write_ptr(lock, 0).expect("release");

            let single = g.zeroed(8);
            assert_eq!(
                g.call("ExInterlockedPushEntryList", &[single, a, lock])
                    .ok(),
                Some(0)
            );
            assert_eq!(
                g.call("ExfInterlockedPushEntryList", &[single, b, lock])
                    .ok(),
                Some(a)
            );
            assert_eq!(
                g.call("ExInterlockedPopEntryList", &[single, lock]).ok(),
                Some(b)
            );
            assert_eq!(
                g.call("ExfInterlockedPopEntryList", &[single, lock]).ok(),
                Some(a)
            );
            assert_eq!(
                g.call("ExInterlockedPopEntryList", &[single, lock]).ok(),
                Some(0)
            );
        }
    }

    #[test]
    fn sequenced_lists() {
        for arch in ARCHES {
            let mut g = Guest::new(arch);
            let (push, pop, flush) = match arch {
                Arch::X86 => (
                    "InterlockedPushEntrySList",
                    "InterlockedPopEntrySList",
                    "ExInterlockedFlushSList",
                ),
                Arch::X64 => (
                    "ExpInterlockedPushEntrySList",
                    "ExpInterlockedPopEntrySList",
                    "ExpInterlockedFlushSList",
                ),
            };
            let head = g.zeroed(16);
            g.call("InitializeSListHead", &[head]).expect("init");
            let (a, b) = (g.zeroed(16), g.zeroed(16));
            assert_eq!(g.call(push, &[head, a]).ok(), Some(0));
            assert_eq!(g.call(push, &[head, b]).ok(), Some(a));
            assert_eq!(g.call("ExQueryDepthSList", &[head]).ok(), Some(2));
            assert_eq!(g.call("FirstEntrySList", &[head]).ok(), Some(b));
            assert_eq!(g.call(pop, &[head]).ok(), Some(b));
            assert_eq!(g.call("ExQueryDepthSList", &[head]).ok(), Some(1));
            assert_eq!(g.call(push, &[head, b]).ok(), Some(a));
            assert_eq!(g.call(flush, &[head]).ok(), Some(b));
            assert_eq!(g.call("ExQueryDepthSList", &[head]).ok(), Some(0));
            assert_eq!(g.call(pop, &[head]).ok(), Some(0));
            if arch == Arch::X64 {
                assert_eq!(
                    g.k.m.mem.read_u64(head + 8).ok(),
                    Some(1),
                    "Header16 type bit kept"
                );
                assert_eq!(
                    g.k.m.mem.read_u64(head).ok(),
                    Some(4 << 16),
                    "sequence counted every change"
                );
                assert!(matches!(
                    g.call(push, &[head, a + 8]),
                    Err(KernelError::BugCheck { code: 0xC4, .. })
                ));
            } else {
                assert_eq!(g.k.m.mem.read_u16(head + 6).ok(), Some(4));
            }
        }
    }
}
