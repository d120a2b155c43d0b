//! Cases from the test drivers: every distinct instruction form in the code sections of
//! `tests/drivers/bin/{x86,x64}/*.sys` runs differentially with random state, its memory operand
//! moved into the data region (PCR accesses through fs:/gs: keep their override, rip-relative and
//! absolute globals stay rip-relative/absolute, stack accesses stay on the stack). Control flow,
//! privileged and host-dependent instructions are listed as skipped, with the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dbt::Arch;
use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpKind,
    Register,
};

use crate::harness::{guest_base, Case, Rng, Val, DATA_LEN, DATA_OFF, DF, RSP_OFF, STACK_LEN};
use crate::specs::{
    adjust, gpr, index_of, mnemonic_form, refine_undefined, set_mem, Group, Kind, MemSel, Sel, Spec,
};

/// Directory of the committed driver binaries.
pub fn bin_dir(arch: Arch) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/drivers/bin")
        .join(arch.name())
}

/// Samples kept per distinct form.
const SAMPLES: usize = 3;
/// Cases per sample.
const CASES: usize = 16;

/// Code sections (raw bytes) of a PE image: a small reader of the DOS, COFF and section headers.
pub fn code_sections(pe: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let u16_at = |o: usize| -> Result<u16, String> {
        pe.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated PE".to_string())
    };
    let u32_at = |o: usize| -> Result<u32, String> {
        pe.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "truncated PE".to_string())
    };
    if pe.get(0..2) != Some(b"MZ") {
        return Err("not an MZ image".into());
    }
    let nt = u32_at(0x3c)? as usize;
    if pe.get(nt..nt + 4) != Some(b"PE\0\0") {
        return Err("no PE signature".into());
    }
    let coff = nt + 4;
    let nsections = u16_at(coff + 2)? as usize;
    let opt_size = u16_at(coff + 16)? as usize;
    let table = coff + 20 + opt_size;
    let mut out = Vec::new();
    for k in 0..nsections {
        let h = table + 40 * k;
        let virt_size = u32_at(h + 8)? as usize;
        let raw_size = u32_at(h + 16)? as usize;
        let raw_ptr = u32_at(h + 20)? as usize;
        let chars = u32_at(h + 36)?;
        // IMAGE_SCN_CNT_CODE or IMAGE_SCN_MEM_EXECUTE
        if chars & 0x20 == 0 && chars & 0x2000_0000 == 0 {
            continue;
        }
        let len = raw_size.min(virt_size.max(raw_size));
        let len = if virt_size > 0 {
            len.min(virt_size)
        } else {
            len
        };
        let bytes = pe
            .get(raw_ptr..raw_ptr + len)
            .ok_or_else(|| "section outside the file".to_string())?;
        out.push(bytes.to_vec());
    }
    Ok(out)
}

/// Why an instruction is not run differentially, if it is not.
fn skip_reason(i: &Instruction) -> Option<&'static str> {
    use Mnemonic as M;
    let mn = i.mnemonic();
    if mn == M::Int3 {
        return Some("int3: breakpoint / padding");
    }
    if i.flow_control() != FlowControl::Next {
        return Some("control flow");
    }
    if matches!(
        mn,
        M::In | M::Out | M::Cli | M::Sti | M::Hlt | M::Rdmsr | M::Wrmsr | M::Wbinvd | M::Invlpg
    ) || i.op_code().is_privileged()
        || (0..i.op_count()).any(|n| {
            i.op_kind(n) == OpKind::Register
                && (i.op_register(n).is_cr() || i.op_register(n).is_dr())
        })
    {
        return Some("privileged");
    }
    if matches!(mn, M::Cpuid | M::Rdtsc | M::Rdtscp) {
        return Some("host-dependent");
    }
    if (0..i.op_count())
        .any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_segment_register())
    {
        return Some("segment register operand");
    }
    if !dbt::is_supported(i) {
        return Some("not supported by the translator");
    }
    None
}

/// A skipped driver instruction form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub form: String,
    pub reason: &'static str,
}

/// Distinct forms of the drivers of `arch`: specs to run, skipped forms with their number of
/// occurrences, and every (mnemonic, form) seen.
pub fn scan(arch: Arch) -> (Vec<Spec>, BTreeMap<Skipped, usize>) {
    let dir = bin_dir(arch);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sys"))
        .collect();
    files.sort();
    let mut samples: BTreeMap<String, Vec<Instruction>> = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for f in &files {
        let pe = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let sections = code_sections(&pe).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for code in sections {
            let dec = Decoder::with_ip(arch.bitness(), &code, 0x1000, DecoderOptions::NONE);
            for i in dec {
                if i.is_invalid() {
                    continue;
                }
                let (mn, form) = mnemonic_form(i.code());
                if let Some(reason) = skip_reason(&i) {
                    *skipped
                        .entry(Skipped {
                            form: format!("{mn} {form}"),
                            reason,
                        })
                        .or_insert(0) += 1;
                    continue;
                }
                let key = format!("{:?} {}", i.code(), variant_of(arch, &i));
                let list = samples.entry(key).or_default();
                if list.len() < SAMPLES && !list.iter().any(|x| same(x, &i)) {
                    list.push(i);
                }
            }
        }
    }
    let mut specs = Vec::new();
    for list in samples.values() {
        for (k, i) in list.iter().enumerate() {
            let (mnemonic, form) = mnemonic_form(i.code());
            specs.push(Spec {
                arch,
                group: Group::Drivers,
                mnemonic,
                form,
                variant: variant_of(arch, i).to_string(),
                count: CASES,
                kind: Kind::Driver(Box::new(*i)),
                tag: format!("driver sample {k}"),
            });
        }
    }
    (specs, skipped)
}

/// Same instruction bytes (modulo address).
fn same(a: &Instruction, b: &Instruction) -> bool {
    let mut a = *a;
    let mut b = *b;
    a.set_ip(0);
    b.set_ip(0);
    if a.is_ip_rel_memory_operand() {
        a.set_memory_displacement64(0);
    }
    if b.is_ip_rel_memory_operand() {
        b.set_memory_displacement64(0);
    }
    a == b
}

/// Table variant of a driver instruction: reg/mem/lock/rep and the segment or addressing kind.
pub fn variant_of(arch: Arch, i: &Instruction) -> String {
    let mut parts = Vec::new();
    if i.has_lock_prefix() {
        parts.push("lock");
    }
    if i.has_rep_prefix() {
        parts.push("rep");
    }
    if i.has_repne_prefix() {
        parts.push("repne");
    }
    let mem = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
    if mem {
        if matches!(i.segment_prefix(), Register::FS | Register::GS) {
            parts.push(if i.segment_prefix() == Register::FS {
                "fs:"
            } else {
                "gs:"
            });
        } else if i.is_ip_rel_memory_operand() {
            parts.push("rip-rel");
        } else if i.memory_base() == Register::None {
            parts.push("abs");
        } else if i.memory_base().full_register() == Register::RSP {
            parts.push("stack");
        } else {
            parts.push("mem");
        }
    } else if (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register) {
        let _ = arch;
        parts.push("reg");
    }
    parts.join(" ")
}

/// A case running driver instruction `i` from a random state.
pub fn generate(arch: Arch, i: &Instruction, rng: &mut Rng) -> Result<Case, String> {
    let mut case = Case::random(arch, rng);
    let mut i = *i;
    i.set_ip(0);
    let g = guest_base(arch);
    let asize = if arch == Arch::X64 { 8 } else { 4 };
    let mut info = InstructionInfoFactory::new();
    let used: Vec<usize> = info
        .info(&i)
        .used_registers()
        .iter()
        .filter_map(|u| index_of(u.register()))
        .collect();
    let mut sels: Vec<Option<Sel>> = vec![None; i.op_count() as usize];
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::Register => sels[n as usize] = Some(Sel::Reg(i.op_register(n))),
            OpKind::Memory => {}
            OpKind::MemorySegSI
            | OpKind::MemorySegESI
            | OpKind::MemorySegRSI
            | OpKind::MemoryESDI
            | OpKind::MemoryESEDI
            | OpKind::MemoryESRDI
            | OpKind::MemorySegDI
            | OpKind::MemorySegEDI
            | OpKind::MemorySegRDI => {
                // String instruction: pointers into the data region, a small count.
                let e = i.memory_size().size().max(1) as i64;
                let n = rng.below(48) as i64;
                let back = rng.chance(30);
                if back {
                    case.flags |= DF;
                }
                let lo = if back { n * e } else { 0 };
                let span = (DATA_LEN as i64 - n * e - e).max(1) as u64;
                case.regs[6] = Val::Data(lo + rng.below(span) as i64);
                case.regs[7] = Val::Data(lo + rng.below(span) as i64);
                if i.has_rep_prefix() || i.has_repne_prefix() {
                    case.regs[1] = Val::Raw(n as u64);
                }
            }
            kind if kind as u32 >= OpKind::Immediate8 as u32
                && kind as u32 <= OpKind::Immediate32to64 as u32 =>
            {
                sels[n as usize] = Some(Sel::Imm(i.immediate(n)));
            }
            _ => {}
        }
    }
    if let Some(n) = (0..i.op_count()).find(|n| i.op_kind(*n) == OpKind::Memory) {
        let size = i.memory_size().size().max(1);
        let align = size.clamp(1, 16) as i64;
        let mut t = 0x100 + rng.below(DATA_LEN as u64 - 0x200) as i64;
        if rng.chance(85) {
            t &= !(align - 1);
        }
        let mut bytes = [0u8; 16];
        for c in bytes.chunks_mut(8) {
            c.copy_from_slice(&rng.value().to_le_bytes());
        }
        let base = i.memory_base();
        let index = i.memory_index();
        let seg = i.segment_prefix();
        let disp = if arch == Arch::X86 {
            i.memory_displacement32() as i32 as i64
        } else {
            i.memory_displacement64() as i64
        };
        let scale = i.memory_index_scale() as i64;
        let mut m = iced_x86::MemoryOperand::new(
            base,
            index,
            scale as u32,
            disp,
            i.memory_displ_size(),
            false,
            seg,
        );
        let is_lea = i.mnemonic() == Mnemonic::Lea;
        if matches!(seg, Register::FS | Register::GS) {
            let ds = if arch == Arch::X64 { 8 } else { 4 };
            m = iced_x86::MemoryOperand::new(Register::None, Register::None, 1, t, ds, false, seg);
        } else if base == Register::RIP || base == Register::EIP {
            m.displacement = (g + DATA_OFF).wrapping_add(t as u64) as i64;
        } else if base.full_register() == Register::RSP {
            // A stack slot: keep the access on the stack region.
            let max = STACK_LEN as i64 - RSP_OFF - size as i64;
            if disp > max || disp < -RSP_OFF {
                m.displacement = disp.rem_euclid(max.max(1)) & !(align - 1);
                m.displ_size = 1;
            }
            if index != Register::None {
                if let Some(k) = index_of(index) {
                    case.regs[k] = Val::Raw(0);
                }
            }
            t = -1;
        } else if is_lea {
            t = -1;
        } else {
            let mut iv = 0i64;
            if index != Register::None {
                if index.full_register() == base.full_register() {
                    m.index = Register::None;
                } else if let Some(k) = index_of(index) {
                    iv = rng.below(8) as i64;
                    case.regs[k] = Val::Raw(iv as u64);
                }
            }
            let mut d = disp;
            if !(-0x800..=0x800).contains(&d) {
                d = rng.below(0x100) as i64;
                m.displ_size = 1;
            }
            m.displacement = d;
            if base == Register::None {
                if arch == Arch::X86 || i.memory_displ_size() == 8 {
                    // Absolute (x86 [disp32], x64 moffs64).
                    m.displacement = (g + DATA_OFF).wrapping_add((t - iv * scale) as u64) as i64;
                    m.displ_size = i.memory_displ_size().max(4);
                    if arch == Arch::X86 {
                        m.displacement = m.displacement as u32 as i64;
                    }
                } else {
                    // x64 [index*scale + disp32]: give it a free base register.
                    let free = (0..16)
                        .find(|k| *k != 4 && !used.contains(k))
                        .ok_or("no free base register")?;
                    m.base = gpr(asize, free);
                    case.regs[free] = Val::Data(t - d - iv * scale);
                }
            } else if let Some(k) = index_of(base) {
                case.regs[k] = Val::Data(t - d - iv * scale);
            }
        }
        set_mem(&mut i, n, &m);
        if t >= 0 {
            case.poke_data(t, &bytes[..size.min(16)]);
            sels[n as usize] = Some(Sel::Mem(MemSel { t, size }));
        }
    }
    adjust(&mut case, &mut i, &sels, rng);
    case.instrs = vec![i];
    case.compute_undefined();
    refine_undefined(&mut case, &i);
    crate::specs::check_encodable(arch, &case.instrs)?;
    Ok(case)
}
