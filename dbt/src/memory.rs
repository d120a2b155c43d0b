//! Sandboxed guest address space.
//!
//! The guest window `[base, base + size)` is backed by one contiguous host reservation; a per-page
//! permission table decides what may be touched. Every access, by the guest or by the host, is bounds-
//! and permission-checked, so a bad guest pointer becomes a [`MemFault`], never undefined behaviour.
//!
//! The page table also marks pages holding translated code. Guest stores to such a page take a slow
//! path that records the written range, so the machine can drop the blocks it overwrote before
//! running them again (self-modifying code). Host writes (`write_*`, `fill`, `copy_within`) and
//! [`GuestMemory::unmap`] are not tracked: after patching code from the host, call
//! `Machine::invalidate_code`.
//!
//! Pages can also stand for device registers (MMIO, see [`crate::mmio`]): such a page is taken
//! (the allocator leaves it alone, [`GuestMemory::is_mapped`] counts it) but not mapped to memory,
//! so every guest access and every host accessor (`read_*`, `write_*`, ...) fails its checks. The
//! machine then routes the guest's accesses to its MMIO handler; the host accessors return a
//! [`MemFault`] (`Machine::read_mem` / `Machine::write_mem` reach device registers from the host).
//! A table maps each MMIO page to the bus address of its first byte.

use std::collections::BTreeMap;
use std::fmt;

use bitflags::bitflags;

use crate::cpu::Arch;

/// Guest page size (4 KiB).
pub const PAGE_SIZE: u64 = 0x1000;

/// Guest-physical address of the window's first byte (see [`GuestMemory::virt_to_phys`]).
pub const PHYS_BASE: u64 = 0x1000_0000;

/// First address (relative to the window base) that [`GuestMemory::alloc`] hands out.
const ALLOC_FLOOR: u64 = 0x10000;

bitflags! {
    /// Page protection of guest memory.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Prot: u8 {
        /// The guest may read (and fetch instructions from) the page.
        const READ = 1;
        /// The guest may write the page.
        const WRITE = 2;
        /// The page holds code (recorded, not enforced yet).
        const EXEC = 4;
    }
}

/// Page-table bit: the page is mapped (whatever its protection).
const MAPPED: u8 = 0x80;
/// Page-table bit: translated code was decoded from this page (kept across map/protect/unmap until
/// the block cache drops the last block on the page).
const CODE: u8 = 0x40;
/// Page-table bit: the page stands for device registers (MMIO). It is set without [`MAPPED`] or
/// any protection bit, so both fast-path bits are set and every access, guest or host, fails the
/// permission checks; the allocator treats the page as taken ([`TAKEN`]).
const MMIO: u8 = 0x20;
/// Page-table bits of a page in use: RAM or MMIO.
const TAKEN: u8 = MAPPED | MMIO;
/// Fast-path table bit: guest reads of the page take the slow path (not readable).
const SLOW_READ: u8 = 1;
/// Fast-path table bit: guest writes to the page take the slow path (not writable, or holds code).
const SLOW_WRITE: u8 = 2;

/// The fast-path table byte for page-table byte `p`.
fn slow_bits(p: u8) -> u8 {
    let mut s = 0;
    if p & NEED_READ != NEED_READ {
        s |= SLOW_READ;
    }
    if p & (NEED_GUEST_WRITE | CODE) != NEED_GUEST_WRITE {
        s |= SLOW_WRITE;
    }
    s
}
/// Requirement of a read (host or guest).
const NEED_READ: u8 = MAPPED | Prot::READ.bits();
/// Requirement of a guest write.
const NEED_GUEST_WRITE: u8 = MAPPED | Prot::WRITE.bits();
/// Requirement of a host write: host writes may patch read-only pages, but a page mapped without
/// any access (a guard page, see [`GuestMemory::protect`] with [`Prot::empty`]) is closed to the
/// host too.
const NEED_HOST_WRITE: u8 = MAPPED | Prot::READ.bits();

/// A failed guest memory access: unmapped page, protection violation or address outside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemFault {
    /// First faulting guest address.
    pub addr: u64,
    /// Whether the access was a write.
    pub write: bool,
}

impl fmt::Display for MemFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.write { "write" } else { "read" };
        write!(f, "guest page fault: {kind} at 0x{:x}", self.addr)
    }
}

impl std::error::Error for MemFault {}

/// The guest window as bus-master DMA reaches it (from [`GuestMemory::dma_window`]): `size` bytes
/// of host memory at `host`, seen by devices at guest-physical address `phys`. Only a
/// `GuestMemory` makes one, so `host` is always the start of a live guest window of `size` bytes
/// (valid while that `GuestMemory` lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaWindow {
    host: usize,
    phys: u64,
    size: u64,
}

impl DmaWindow {
    /// Host (process virtual) address of the window's first byte.
    pub fn host_addr(&self) -> usize {
        self.host
    }

    /// Guest-physical (bus) address of the window's first byte: [`PHYS_BASE`].
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Guest address space: one contiguous host reservation standing for the guest window
/// `[base, base + size)`, with a 4 KiB page permission table.
pub struct GuestMemory {
    host: *mut u8,
    base: u64,
    size: u64,
    pages: Vec<u8>,
    /// Per page, which guest accesses must take the slow path ([`SLOW_READ`], [`SLOW_WRITE`]),
    /// derived from `pages` by [`sync`](Self::sync): the one byte the fast paths test.
    slow: Vec<u8>,
    regions: BTreeMap<u64, u64>,
    /// Per MMIO page (by index), the bus address of its first byte.
    mmio: BTreeMap<usize, u64>,
    alloc_hint: usize,
    /// Set by a guest store to a page holding translated code; cleared by [`take_code_writes`](Self::take_code_writes).
    pub(crate) code_written: bool,
    /// Whether the window was handed to a DMA engine ([`dma_window`](Self::dma_window)): its host
    /// pages must stay in place, so [`unmap`](Self::unmap) zeroes pages instead of discarding them.
    dma_pinned: bool,
    /// Ranges written by such stores since the last [`take_code_writes`](Self::take_code_writes).
    code_writes: Vec<(u64, u64)>,
}

// SAFETY: the reservation is owned exclusively by this value; all mutation goes through `&mut self`
// and shared access only reads, so moving it to or sharing it with another thread is sound.
unsafe impl Send for GuestMemory {}
// SAFETY: see above; `&self` methods never write to the reservation.
unsafe impl Sync for GuestMemory {}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `host`/`size` describe the mapping created in `new`, which nothing else references.
        unsafe {
            libc::munmap(self.host.cast(), self.size as usize);
        }
    }
}

impl fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemory")
            .field("base", &format_args!("0x{:x}", self.base))
            .field("size", &format_args!("0x{:x}", self.size))
            .field("regions", &self.regions.len())
            .field("mmio_pages", &self.mmio.len())
            .finish()
    }
}

fn page_floor(v: u64) -> u64 {
    v & !(PAGE_SIZE - 1)
}

impl GuestMemory {
    /// Reserves a guest window `[base, base + size)` (both rounded to pages). Nothing is mapped yet.
    ///
    /// Panics only if the host cannot reserve the address space (a host resource failure).
    pub fn new(base: u64, size: u64) -> Self {
        let base = page_floor(base);
        let size = page_floor(size.saturating_add(PAGE_SIZE - 1)).max(PAGE_SIZE);
        // SAFETY: anonymous private mapping with no fixed address; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            panic!(
                "cannot reserve 0x{size:x} bytes of host address space for guest memory: {}",
                std::io::Error::last_os_error()
            );
        }
        GuestMemory {
            host: ptr.cast(),
            base,
            size,
            pages: vec![0; (size / PAGE_SIZE) as usize],
            slow: vec![SLOW_READ | SLOW_WRITE; (size / PAGE_SIZE) as usize],
            regions: BTreeMap::new(),
            mmio: BTreeMap::new(),
            alloc_hint: (ALLOC_FLOOR / PAGE_SIZE) as usize,
            code_written: false,
            code_writes: Vec::new(),
            dma_pinned: false,
        }
    }

    /// First guest address of the window.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size of the window in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The guest-physical address of window address `va`: the window is mapped linearly at
    /// [`PHYS_BASE`], below 4 GiB on both architectures so 32-bit bus masters reach all of it.
    /// `None` outside the window.
    pub fn virt_to_phys(&self, va: u64) -> Option<u64> {
        let off = va.checked_sub(self.base)?;
        (off < self.size).then_some(PHYS_BASE + off)
    }

    /// The window address of guest-physical address `pa` (inverse of
    /// [`virt_to_phys`](Self::virt_to_phys)); `None` outside the window's physical range.
    pub fn phys_to_virt(&self, pa: u64) -> Option<u64> {
        let off = pa.checked_sub(PHYS_BASE)?;
        (off < self.size).then_some(self.base + off)
    }

    /// Page index range covering `[addr, addr + len)`, or the first address outside the window.
    fn page_range(&self, addr: u64, len: u64) -> Result<(usize, usize), MemFault> {
        let off = addr.wrapping_sub(self.base);
        if off >= self.size {
            return Err(MemFault { addr, write: false });
        }
        let end = off.saturating_add(len);
        if end > self.size {
            return Err(MemFault {
                addr: self.base.wrapping_add(self.size),
                write: false,
            });
        }
        let first = (off / PAGE_SIZE) as usize;
        let last = (end.saturating_add(PAGE_SIZE - 1) / PAGE_SIZE) as usize;
        Ok((first, last.max(first + 1)))
    }

    /// Maps `[addr, addr + len)` (page-rounded) with `prot`. Contents of newly mapped pages are zero.
    pub fn map(&mut self, addr: u64, len: u64, prot: Prot) -> Result<(), MemFault> {
        let start = page_floor(addr);
        let (first, last) = self.page_range(start, len.saturating_add(addr - start))?;
        self.forget_mmio(first, last);
        for p in &mut self.pages[first..last] {
            *p = MAPPED | prot.bits() | (*p & CODE);
        }
        self.sync(first, last);
        Ok(())
    }

    /// Drops the MMIO records of pages `first..last` (their page-table bytes are rewritten by the
    /// caller).
    fn forget_mmio(&mut self, first: usize, last: usize) {
        if !self.mmio.is_empty() {
            let gone: Vec<usize> = self.mmio.range(first..last).map(|(i, _)| *i).collect();
            for i in gone {
                self.mmio.remove(&i);
            }
        }
    }

    /// Recomputes the fast-path table for pages `first..last`.
    fn sync(&mut self, first: usize, last: usize) {
        for (s, p) in self.slow[first..last]
            .iter_mut()
            .zip(&self.pages[first..last])
        {
            *s = slow_bits(*p);
        }
    }

    /// Unmaps `[addr, addr + len)` (page-rounded) and zeroes the pages. Parts outside the window are ignored.
    pub fn unmap(&mut self, addr: u64, len: u64) {
        let start = page_floor(addr).max(self.base);
        let end = addr
            .saturating_add(len)
            .min(self.base.saturating_add(self.size));
        if end <= start {
            return;
        }
        let first = ((start - self.base) / PAGE_SIZE) as usize;
        let last = ((end - self.base).div_ceil(PAGE_SIZE)) as usize;
        self.forget_mmio(first, last);
        for p in &mut self.pages[first..last] {
            *p &= CODE;
        }
        self.sync(first, last);
        let start = first * PAGE_SIZE as usize;
        let len = (last - first) * PAGE_SIZE as usize;
        // SAFETY: the range lies inside our own reservation (clamped above).
        unsafe {
            if self.dma_pinned {
                // A device may hold these pages through an IOMMU mapping: keep them, zeroed.
                std::ptr::write_bytes(self.host.add(start), 0, len);
            } else {
                libc::madvise(self.host.add(start).cast(), len, libc::MADV_DONTNEED);
            }
        }
        self.alloc_hint = self.alloc_hint.min(first);
    }

    /// Hands the window to a DMA engine (VFIO_IOMMU_MAP_DMA maps `host` at IO virtual address
    /// `phys`): the window as a device doing bus-master DMA sees it, at its guest-physical
    /// addresses. From now on the window's host pages stay where they are for the life of this
    /// `GuestMemory`: [`unmap`](Self::unmap) zeroes them instead of handing them back to the kernel
    /// (a discarded page would be replaced by a new one while the IOMMU still points at the old).
    pub fn dma_window(&mut self) -> DmaWindow {
        self.dma_pinned = true;
        DmaWindow {
            host: self.host as usize,
            phys: PHYS_BASE,
            size: self.size,
        }
    }

    /// Changes the protection of mapped pages in `[addr, addr + len)`; fails if a page is unmapped
    /// or MMIO.
    pub fn protect(&mut self, addr: u64, len: u64, prot: Prot) -> Result<(), MemFault> {
        let start = page_floor(addr);
        let (first, last) = self.page_range(start, len.saturating_add(addr - start))?;
        if let Some(i) = self.pages[first..last].iter().position(|p| p & MAPPED == 0) {
            return Err(MemFault {
                addr: self.page_addr(first + i),
                write: false,
            });
        }
        for p in &mut self.pages[first..last] {
            *p = MAPPED | prot.bits() | (*p & CODE);
        }
        self.sync(first, last);
        Ok(())
    }

    fn page_addr(&self, index: usize) -> u64 {
        self.base + index as u64 * PAGE_SIZE
    }

    /// Allocates a page-granular, zeroed region anywhere free in the window (first fit above
    /// `base + 0x10000`) and maps it with `prot`.
    pub fn alloc(&mut self, len: u64, prot: Prot) -> Result<u64, MemFault> {
        let npages = (len.max(1).div_ceil(PAGE_SIZE)) as usize;
        let first = self.find_free(npages)?;
        let addr = self.page_addr(first);
        self.map(addr, npages as u64 * PAGE_SIZE, prot)?;
        self.regions.insert(addr, npages as u64 * PAGE_SIZE);
        Ok(addr)
    }

    /// First index of a run of `npages` unmapped pages above the allocation floor (first fit from
    /// the allocation hint, which it advances).
    fn find_free(&mut self, npages: usize) -> Result<usize, MemFault> {
        let floor = (ALLOC_FLOOR / PAGE_SIZE) as usize;
        let mut i = self.alloc_hint.max(floor);
        let mut run = 0usize;
        let mut first_free = None;
        while i < self.pages.len() {
            if self.pages[i] & TAKEN == 0 {
                first_free.get_or_insert(i);
                run += 1;
                if run == npages {
                    let start = i + 1 - npages;
                    if first_free == Some(start) {
                        self.alloc_hint = start + npages;
                    } else if let Some(f) = first_free {
                        self.alloc_hint = f;
                    }
                    return Ok(start);
                }
            } else {
                run = 0;
            }
            i += 1;
        }
        Err(MemFault {
            addr: self.base.wrapping_add(self.size),
            write: true,
        })
    }

    /// Allocates at `preferred` (page-rounded down) if that range is free, else anywhere like [`alloc`](Self::alloc).
    pub fn alloc_at_or_near(
        &mut self,
        preferred: u64,
        len: u64,
        prot: Prot,
    ) -> Result<u64, MemFault> {
        let start = page_floor(preferred);
        let size = len.max(1).div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE);
        if let Ok((first, last)) = self.page_range(start, size) {
            if self.pages[first..last].iter().all(|p| p & TAKEN == 0) {
                self.map(start, size, prot)?;
                self.regions.insert(start, size);
                return Ok(start);
            }
        }
        self.alloc(len, prot)
    }

    /// Frees a region returned by [`alloc`](Self::alloc) or [`alloc_at_or_near`](Self::alloc_at_or_near).
    pub fn free(&mut self, addr: u64) -> Result<(), MemFault> {
        match self.regions.remove(&addr) {
            Some(len) => {
                self.unmap(addr, len);
                Ok(())
            }
            None => Err(MemFault { addr, write: false }),
        }
    }

    /// The live regions of [`alloc`](Self::alloc) and [`alloc_at_or_near`](Self::alloc_at_or_near):
    /// (address, length), in address order.
    pub fn regions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.regions.iter().map(|(&a, &l)| (a, l))
    }

    /// Whether every page of `[addr, addr + len)` is mapped (whatever its protection), as RAM or
    /// MMIO.
    pub fn is_mapped(&self, addr: u64, len: u64) -> bool {
        match self.page_range(addr, len.max(1)) {
            Ok((first, last)) => self.pages[first..last].iter().all(|p| p & TAKEN != 0),
            Err(_) => false,
        }
    }

    /// Maps `[addr, addr + len)` (page-rounded) as MMIO: guest accesses there reach the machine's
    /// MMIO backend (see [`Mmio`](crate::Mmio)) at bus address `bus + (va - addr)` (linearly for the
    /// whole pages, so `addr` and `bus` need not share their offset in the page). The pages must be
    /// unmapped; nothing is mapped if one is not. As after any unmap, blocks translated from code
    /// that was on these pages must have been dropped (`Machine::invalidate_code`).
    pub fn map_mmio(&mut self, addr: u64, len: u64, bus: u64) -> Result<(), MemFault> {
        let start = page_floor(addr);
        let (first, last) = self.page_range(start, len.max(1).saturating_add(addr - start))?;
        if let Some(i) = self.pages[first..last].iter().position(|p| p & TAKEN != 0) {
            return Err(MemFault {
                addr: self.page_addr(first + i).max(addr),
                write: true,
            });
        }
        let first_bus = bus.wrapping_sub(addr - start);
        for i in first..last {
            self.pages[i] = MMIO | (self.pages[i] & CODE);
            let page_bus = first_bus.wrapping_add((i - first) as u64 * PAGE_SIZE);
            self.mmio.insert(i, page_bus);
        }
        self.sync(first, last);
        Ok(())
    }

    /// Maps the bus range `[bus, bus + len)` as MMIO at free guest addresses (first fit, like
    /// [`alloc`](Self::alloc)); returns the guest address standing for `bus` (it has the same offset
    /// in its page as `bus`). Undo with [`unmap_mmio`](Self::unmap_mmio).
    pub fn alloc_mmio(&mut self, len: u64, bus: u64) -> Result<u64, MemFault> {
        let offset = bus & (PAGE_SIZE - 1);
        let npages = offset.saturating_add(len.max(1)).div_ceil(PAGE_SIZE);
        let npages = usize::try_from(npages).unwrap_or(usize::MAX);
        let first = self.find_free(npages)?;
        let va = self.page_addr(first) + offset;
        self.map_mmio(va, len.max(1), bus)?;
        Ok(va)
    }

    /// Unmaps the MMIO pages covering `[addr, addr + len)`; fails, unmapping nothing, if one of
    /// them is not MMIO.
    pub fn unmap_mmio(&mut self, addr: u64, len: u64) -> Result<(), MemFault> {
        let start = page_floor(addr);
        let (first, last) = self.page_range(start, len.max(1).saturating_add(addr - start))?;
        if let Some(i) = self.pages[first..last].iter().position(|p| p & MMIO == 0) {
            return Err(MemFault {
                addr: self.page_addr(first + i).max(addr),
                write: false,
            });
        }
        self.unmap(start, (last - first) as u64 * PAGE_SIZE);
        Ok(())
    }

    /// The bus address guest address `addr` stands for, if it lies on an MMIO page.
    pub fn mmio_address(&self, addr: u64) -> Option<u64> {
        let off = addr.wrapping_sub(self.base);
        if off >= self.size {
            return None;
        }
        let i = (off / PAGE_SIZE) as usize;
        if self.pages[i] & MMIO == 0 {
            return None;
        }
        let page_bus = self.mmio.get(&i)?;
        Some(page_bus.wrapping_add(off & (PAGE_SIZE - 1)))
    }

    /// The bus address of an access of `len` bytes at `addr` that lies within one MMIO page.
    #[cold]
    pub(crate) fn mmio_access(&self, addr: u64, len: u64) -> Option<u64> {
        let in_page = (addr & (PAGE_SIZE - 1)) + len <= PAGE_SIZE;
        in_page.then(|| self.mmio_address(addr)).flatten()
    }

    /// Checks that `[addr, addr + len)` satisfies `need` on every page; returns the host pointer.
    #[inline(always)]
    fn check(&self, addr: u64, len: u64, need: u8, write: bool) -> Result<*mut u8, MemFault> {
        let off = addr.wrapping_sub(self.base);
        if off < self.size && (off & (PAGE_SIZE - 1)) + len <= PAGE_SIZE {
            // SAFETY: off < size, so the index is within the page table.
            let p = unsafe { *self.pages.get_unchecked((off / PAGE_SIZE) as usize) };
            if p & need == need {
                // SAFETY: the whole access lies inside the page, which lies inside the reservation.
                return Ok(unsafe { self.host.add(off as usize) });
            }
            return Err(MemFault { addr, write });
        }
        self.check_slow(addr, len, need, write)
    }

    /// [`check`](Self::check) for a guest write of `[addr, addr + len)`: also records the range if it
    /// touches a page holding translated code.
    #[inline(always)]
    fn check_guest_write(&mut self, addr: u64, len: u64) -> Result<*mut u8, MemFault> {
        let off = addr.wrapping_sub(self.base);
        if off < self.size && (off & (PAGE_SIZE - 1)) + len <= PAGE_SIZE {
            // SAFETY: off < size, so the index is within the page table.
            let p = unsafe { *self.pages.get_unchecked((off / PAGE_SIZE) as usize) };
            if p & (NEED_GUEST_WRITE | CODE) == NEED_GUEST_WRITE {
                // SAFETY: the whole access lies inside the page, which lies inside the reservation.
                return Ok(unsafe { self.host.add(off as usize) });
            }
        }
        self.guest_write_slow(addr, len)
    }

    #[cold]
    fn guest_write_slow(&mut self, addr: u64, len: u64) -> Result<*mut u8, MemFault> {
        let p = self.check_slow(addr, len, NEED_GUEST_WRITE, true)?;
        if let Ok((first, last)) = self.page_range(addr, len) {
            if len > 0 && self.pages[first..last].iter().any(|p| p & CODE != 0) {
                self.code_writes.push((addr, len));
                self.code_written = true;
            }
        }
        Ok(p)
    }

    /// Marks the pages of `[addr, addr + len)` as holding translated code (parts outside the window
    /// are ignored).
    pub(crate) fn mark_code(&mut self, addr: u64, len: u64) {
        let off = addr.wrapping_sub(self.base);
        if off >= self.size || len == 0 {
            return;
        }
        let first = (off / PAGE_SIZE) as usize;
        let last = (off.saturating_add(len).min(self.size).div_ceil(PAGE_SIZE)) as usize;
        for p in &mut self.pages[first..last] {
            *p |= CODE;
        }
        self.sync(first, last);
    }

    /// Clears the translated-code mark of the page containing `addr`.
    pub(crate) fn clear_code(&mut self, addr: u64) {
        let off = addr.wrapping_sub(self.base);
        if off < self.size {
            let i = (off / PAGE_SIZE) as usize;
            self.pages[i] &= !CODE;
            self.sync(i, i + 1);
        }
    }

    /// Takes the ranges guest stores wrote to pages holding translated code.
    pub(crate) fn take_code_writes(&mut self) -> Vec<(u64, u64)> {
        self.code_written = false;
        std::mem::take(&mut self.code_writes)
    }

    #[cold]
    fn check_slow(&self, addr: u64, len: u64, need: u8, write: bool) -> Result<*mut u8, MemFault> {
        if len == 0 {
            return Ok(self.host);
        }
        let (first, last) = match self.page_range(addr, len) {
            Ok(r) => r,
            Err(f) => {
                // The access runs past the window's end: an inaccessible page inside comes first.
                let off = addr.wrapping_sub(self.base);
                if off < self.size {
                    let first = (off / PAGE_SIZE) as usize;
                    if let Some(i) = self.pages[first..].iter().position(|p| p & need != need) {
                        return Err(MemFault {
                            addr: self.page_addr(first + i).max(addr),
                            write,
                        });
                    }
                }
                return Err(MemFault {
                    addr: f.addr,
                    write,
                });
            }
        };
        for (i, p) in self.pages[first..last].iter().enumerate() {
            if p & need != need {
                let page = self.page_addr(first + i);
                return Err(MemFault {
                    addr: page.max(addr),
                    write,
                });
            }
        }
        // SAFETY: page_range verified that [addr, addr+len) lies inside the reservation.
        Ok(unsafe { self.host.add(addr.wrapping_sub(self.base) as usize) })
    }

    /// Longest readable run starting at `addr`, capped at `max` bytes (used by the decoder).
    pub(crate) fn readable_slice(&self, addr: u64, max: usize) -> &[u8] {
        let mut len = 0usize;
        let mut a = addr;
        while len < max {
            let off = a.wrapping_sub(self.base);
            if off >= self.size || self.pages[(off / PAGE_SIZE) as usize] & NEED_READ != NEED_READ {
                break;
            }
            let chunk = (PAGE_SIZE - (off & (PAGE_SIZE - 1))) as usize;
            len += chunk;
            a = a.wrapping_add(chunk as u64);
        }
        let len = len.min(max);
        if len == 0 {
            return &[];
        }
        // SAFETY: every page of [addr, addr+len) is mapped and inside the reservation; the slice lives
        // as long as `&self`, during which no `&mut self` write can happen.
        unsafe {
            std::slice::from_raw_parts(self.host.add(addr.wrapping_sub(self.base) as usize), len)
        }
    }

    /// Host pointer for a guest access of `len` bytes (1, 2, 4 or 8) within one page whose
    /// fast-path byte has none of the bits `slow`; `None` for everything else (the caller takes a
    /// slow path that handles page-crossing accesses and reports faults).
    #[inline(always)]
    fn fast_ptr(&self, addr: u64, len: u64, slow: u8) -> Option<*mut u8> {
        let off = addr.wrapping_sub(self.base);
        // Indexing by page bounds-checks `off` against the window (whose size is whole pages).
        if *self.slow.get((off / PAGE_SIZE) as usize)? & slow != 0 {
            return None;
        }
        // Only a misaligned access can cross into the next page.
        if off & (len - 1) != 0 && (off & (PAGE_SIZE - 1)) > PAGE_SIZE - len {
            return None;
        }
        // SAFETY: the whole access lies inside one page of the window, so inside the reservation.
        Some(unsafe { self.host.add(off as usize) })
    }

    /// Guest load of 1, 2, 4 or 8 bytes (zero-extended) that stays within a readable page; `None`
    /// otherwise (then [`load`](Self::load) gives the value or the fault).
    #[inline(always)]
    pub(crate) fn load_fast(&self, addr: u64, size: u32) -> Option<u64> {
        let p = self.fast_ptr(addr, size as u64, SLOW_READ)?;
        // SAFETY: `fast_ptr` validated [addr, addr+size) inside the reservation.
        Some(unsafe {
            match size {
                1 => *p as u64,
                2 => p.cast::<u16>().read_unaligned() as u64,
                4 => p.cast::<u32>().read_unaligned() as u64,
                _ => p.cast::<u64>().read_unaligned(),
            }
        })
    }

    /// Guest store of 1, 2, 4 or 8 bytes that stays within a writable page holding no translated
    /// code; returns false, writing nothing, otherwise (then [`store`](Self::store) does it).
    #[inline(always)]
    pub(crate) fn store_fast(&mut self, addr: u64, size: u32, v: u64) -> bool {
        let Some(p) = self.fast_ptr(addr, size as u64, SLOW_WRITE) else {
            return false;
        };
        // SAFETY: `fast_ptr` validated [addr, addr+size) inside the reservation; we hold `&mut self`.
        unsafe {
            match size {
                1 => *p = v as u8,
                2 => p.cast::<u16>().write_unaligned(v as u16),
                4 => p.cast::<u32>().write_unaligned(v as u32),
                _ => p.cast::<u64>().write_unaligned(v),
            }
        }
        true
    }

    /// Guest load of 1, 2, 4 or 8 bytes (zero-extended).
    #[inline(always)]
    pub(crate) fn load(&self, addr: u64, size: u32) -> Result<u64, MemFault> {
        let p = self.check(addr, size as u64, NEED_READ, false)?;
        // SAFETY: `check` validated [addr, addr+size) inside the reservation.
        Ok(unsafe {
            match size {
                1 => *p as u64,
                2 => p.cast::<u16>().read_unaligned() as u64,
                4 => p.cast::<u32>().read_unaligned() as u64,
                _ => p.cast::<u64>().read_unaligned(),
            }
        })
    }

    /// Guest store of 1, 2, 4 or 8 bytes; needs [`Prot::WRITE`].
    #[inline(always)]
    pub(crate) fn store(&mut self, addr: u64, size: u32, v: u64) -> Result<(), MemFault> {
        let p = self.check_guest_write(addr, size as u64)?;
        // SAFETY: `check` validated [addr, addr+size) inside the reservation; we hold `&mut self`.
        unsafe {
            match size {
                1 => *p = v as u8,
                2 => p.cast::<u16>().write_unaligned(v as u16),
                4 => p.cast::<u32>().write_unaligned(v as u32),
                _ => p.cast::<u64>().write_unaligned(v),
            }
        }
        Ok(())
    }

    /// Guest 128-bit load.
    pub(crate) fn load_u128(&self, addr: u64) -> Result<u128, MemFault> {
        let p = self.check(addr, 16, NEED_READ, false)?;
        // SAFETY: validated by `check`.
        Ok(unsafe { p.cast::<u128>().read_unaligned() })
    }

    /// Guest 128-bit store; needs [`Prot::WRITE`].
    pub(crate) fn store_u128(&mut self, addr: u64, v: u128) -> Result<(), MemFault> {
        let p = self.check_guest_write(addr, 16)?;
        // SAFETY: validated by `check`; we hold `&mut self`.
        unsafe { p.cast::<u128>().write_unaligned(v) };
        Ok(())
    }

    /// Guest bulk copy (forward, non-overlapping in the harmful direction is the caller's business);
    /// source needs READ, destination WRITE. Nothing is copied if any check fails.
    pub(crate) fn guest_copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), MemFault> {
        let s = self.check(src, len, NEED_READ, false)?;
        let d = self.check_guest_write(dst, len)?;
        // SAFETY: both ranges validated inside the reservation; `copy` has memmove semantics.
        unsafe { std::ptr::copy(s, d, len as usize) };
        Ok(())
    }

    /// Guest bulk fill of `len` bytes with a repeating little-endian element of `elem` bytes.
    pub(crate) fn guest_fill(
        &mut self,
        dst: u64,
        value: u64,
        elem: u32,
        len: u64,
    ) -> Result<(), MemFault> {
        let d = self.check_guest_write(dst, len)?;
        // SAFETY: validated by `check`; we hold `&mut self`.
        let out = unsafe { std::slice::from_raw_parts_mut(d, len as usize) };
        if elem == 1 {
            out.fill(value as u8);
        } else {
            let bytes = value.to_le_bytes();
            for chunk in out.chunks_mut(elem as usize) {
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }
        Ok(())
    }

    /// Host read of a byte.
    pub fn read_u8(&self, addr: u64) -> Result<u8, MemFault> {
        self.load(addr, 1).map(|v| v as u8)
    }

    /// Host read of a little-endian u16.
    pub fn read_u16(&self, addr: u64) -> Result<u16, MemFault> {
        self.load(addr, 2).map(|v| v as u16)
    }

    /// Host read of a little-endian u32.
    pub fn read_u32(&self, addr: u64) -> Result<u32, MemFault> {
        self.load(addr, 4).map(|v| v as u32)
    }

    /// Host read of a little-endian u64.
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemFault> {
        self.load(addr, 8)
    }

    fn host_store(&mut self, addr: u64, size: u32, v: u64) -> Result<(), MemFault> {
        let p = self.check(addr, size as u64, NEED_HOST_WRITE, true)?;
        // SAFETY: validated by `check`; we hold `&mut self`.
        unsafe {
            match size {
                1 => *p = v as u8,
                2 => p.cast::<u16>().write_unaligned(v as u16),
                4 => p.cast::<u32>().write_unaligned(v as u32),
                _ => p.cast::<u64>().write_unaligned(v),
            }
        }
        Ok(())
    }

    /// Host write of a byte (may write read-only pages).
    pub fn write_u8(&mut self, addr: u64, v: u8) -> Result<(), MemFault> {
        self.host_store(addr, 1, v as u64)
    }

    /// Host write of a little-endian u16 (may write read-only pages).
    pub fn write_u16(&mut self, addr: u64, v: u16) -> Result<(), MemFault> {
        self.host_store(addr, 2, v as u64)
    }

    /// Host write of a little-endian u32 (may write read-only pages).
    pub fn write_u32(&mut self, addr: u64, v: u32) -> Result<(), MemFault> {
        self.host_store(addr, 4, v as u64)
    }

    /// Host write of a little-endian u64 (may write read-only pages).
    pub fn write_u64(&mut self, addr: u64, v: u64) -> Result<(), MemFault> {
        self.host_store(addr, 8, v)
    }

    /// Reads a guest pointer (4 bytes on X86, 8 on X64).
    pub fn read_ptr(&self, arch: Arch, addr: u64) -> Result<u64, MemFault> {
        self.load(addr, arch.ptr_size() as u32)
    }

    /// Writes a guest pointer (4 bytes on X86, 8 on X64).
    pub fn write_ptr(&mut self, arch: Arch, addr: u64, v: u64) -> Result<(), MemFault> {
        self.host_store(addr, arch.ptr_size() as u32, v)
    }

    /// Host read of `buf.len()` bytes.
    pub fn read_bytes(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let p = self.check(addr, buf.len() as u64, NEED_READ, false)?;
        // SAFETY: validated by `check`; `buf` is a distinct host buffer.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Host read of `len` bytes into a new vector.
    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemFault> {
        let mut v = vec![0; len];
        self.read_bytes(addr, &mut v)?;
        Ok(v)
    }

    /// Host write of `data` (may write read-only pages).
    pub fn write_bytes(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let p = self.check(addr, data.len() as u64, NEED_HOST_WRITE, true)?;
        // SAFETY: validated by `check`; `data` cannot alias guest memory mutably while we hold `&mut self`.
        unsafe { std::ptr::copy(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Host fill of `len` bytes with `byte` (may write read-only pages).
    pub fn fill(&mut self, addr: u64, byte: u8, len: u64) -> Result<(), MemFault> {
        let p = self.check(addr, len, NEED_HOST_WRITE, true)?;
        // SAFETY: validated by `check`.
        unsafe { std::ptr::write_bytes(p, byte, len as usize) };
        Ok(())
    }

    /// Reads a NUL-terminated byte string (NUL excluded), at most `max` bytes.
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, MemFault> {
        let mut out = Vec::new();
        for i in 0..max as u64 {
            let b = self.read_u8(addr.wrapping_add(i))?;
            if b == 0 {
                break;
            }
            out.push(b);
        }
        Ok(out)
    }

    /// Reads a NUL-terminated UTF-16 string (terminator excluded), at most `max_chars` units.
    pub fn read_wstr(&self, addr: u64, max_chars: usize) -> Result<Vec<u16>, MemFault> {
        let mut out = Vec::new();
        for i in 0..max_chars as u64 {
            let c = self.read_u16(addr.wrapping_add(2 * i))?;
            if c == 0 {
                break;
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Host copy with memmove semantics (source needs READ; destination only needs to be mapped).
    pub fn copy_within(&mut self, dst: u64, src: u64, len: u64) -> Result<(), MemFault> {
        let s = self.check(src, len, NEED_READ, false)?;
        let d = self.check(dst, len, NEED_HOST_WRITE, true)?;
        // SAFETY: both ranges validated; `copy` handles overlap.
        unsafe { std::ptr::copy(s, d, len as usize) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_read_write_and_faults() {
        let mut m = GuestMemory::new(0x8000_0000, 1 << 30);
        assert!(m.read_u8(0x8000_0000).is_err());
        m.map(0x8000_1000, 0x2000, Prot::READ | Prot::WRITE)
            .unwrap();
        m.write_u64(0x8000_1ffc, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(m.read_u64(0x8000_1ffc), Ok(0x1122_3344_5566_7788));
        assert_eq!(
            m.read_u32(0x8000_2ffe),
            Err(MemFault {
                addr: 0x8000_3000,
                write: false
            })
        );
        assert!(m.read_u8(0x7fff_ffff).is_err());
        assert!(m.read_u8(0xc000_0000).is_err());
        m.protect(0x8000_1000, 0x1000, Prot::READ).unwrap();
        assert_eq!(
            m.store(0x8000_1000, 4, 1),
            Err(MemFault {
                addr: 0x8000_1000,
                write: true
            })
        );
        assert!(m.write_u32(0x8000_1000, 1).is_ok());
        m.unmap(0x8000_1000, 0x2000);
        m.map(0x8000_1000, 0x2000, Prot::READ).unwrap();
        assert_eq!(m.read_u64(0x8000_1ffc), Ok(0));
    }

    #[test]
    fn a_no_access_page_stays_taken_and_is_closed_to_guest_and_host() {
        let mut m = GuestMemory::new(0x8000_0000, 1 << 30);
        let a = m.alloc(0x3000, Prot::READ | Prot::WRITE).unwrap();
        m.protect(a + 0x1000, 0x1000, Prot::empty()).unwrap();
        let fault = |addr, write| MemFault { addr, write };
        assert_eq!(m.load(a + 0x1000, 4), Err(fault(a + 0x1000, false)));
        assert_eq!(m.store(a + 0x1ffc, 4, 1), Err(fault(a + 0x1ffc, true)));
        assert_eq!(m.read_u8(a + 0x1800), Err(fault(a + 0x1800, false)));
        assert_eq!(m.write_u8(a + 0x1800, 1), Err(fault(a + 0x1800, true)));
        assert_eq!(m.write_u32(a + 0xffe, 1), Err(fault(a + 0x1000, true)));
        assert!(
            m.is_mapped(a + 0x1000, 1),
            "a guard page is not free address space"
        );
        assert!(m.write_u8(a + 0x2000, 1).is_ok() && m.write_u8(a + 0xfff, 1).is_ok());
    }

    #[test]
    fn dma_window_is_the_physical_window_and_unmap_zeroes_in_place() {
        let mut m = GuestMemory::new(0x8000_0000, 1 << 30);
        let w = m.dma_window();
        assert_eq!((w.phys(), w.size()), (PHYS_BASE, 1 << 30));
        assert_eq!(m.phys_to_virt(w.phys()), Some(m.base()));
        m.map(0x8000_1000, 0x2000, Prot::READ | Prot::WRITE)
            .unwrap();
        m.write_u64(0x8000_1ff8, 0x1122_3344_5566_7788).unwrap();
        // What a device writes at guest-physical address p lands at host_addr + (p - phys).
        let host = (w.host_addr() + 0x1ff8) as *const u64;
        // SAFETY: inside the live, mapped window.
        assert_eq!(unsafe { host.read() }, 0x1122_3344_5566_7788);
        m.unmap(0x8000_1000, 0x2000);
        // SAFETY: the reservation stays mapped in the host; pinned pages are zeroed in place.
        assert_eq!(unsafe { host.read() }, 0);
        m.map(0x8000_1000, 0x2000, Prot::READ).unwrap();
        assert_eq!(m.read_u64(0x8000_1ff8), Ok(0));
    }

    #[test]
    fn alloc_free_and_strings() {
        let mut m = GuestMemory::new(0x8000_0000, 1 << 30);
        let a = m.alloc(10, Prot::READ | Prot::WRITE).unwrap();
        assert_eq!(a, 0x8001_0000);
        let b = m.alloc(0x1001, Prot::READ | Prot::WRITE).unwrap();
        assert_eq!(b, 0x8001_1000);
        assert!(m.free(a).is_ok());
        assert!(m.free(a).is_err());
        let c = m.alloc(0x1000, Prot::READ).unwrap();
        assert_eq!(c, a);
        let d = m
            .alloc_at_or_near(0x8050_0000, 0x3000, Prot::READ | Prot::WRITE)
            .unwrap();
        assert_eq!(d, 0x8050_0000);
        let e = m.alloc_at_or_near(0x8050_1000, 0x1000, Prot::READ).unwrap();
        assert_ne!(e, 0x8050_1000);
        m.write_bytes(d, b"hello\0world").unwrap();
        assert_eq!(m.read_cstr(d, 100), Ok(b"hello".to_vec()));
        assert_eq!(m.read_cstr(d, 3), Ok(b"hel".to_vec()));
        m.write_bytes(d + 16, &[b'h', 0, b'i', 0, 0, 0]).unwrap();
        assert_eq!(m.read_wstr(d + 16, 10), Ok(vec![b'h' as u16, b'i' as u16]));
        m.copy_within(d + 1, d, 5).unwrap();
        assert_eq!(m.read_vec(d, 6), Ok(b"hhello".to_vec()));
        m.fill(d, 0xaa, 3).unwrap();
        assert_eq!(m.read_u32(d), Ok(0x6caa_aaaa));
        assert!(m.is_mapped(d, 0x3000));
        assert!(!m.is_mapped(d, 0x5000));
    }
}
