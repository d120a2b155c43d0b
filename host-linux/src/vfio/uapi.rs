//! The parts of the Linux VFIO user API (`<linux/vfio.h>`) ICA uses: ioctl numbers, flags and
//! structure layouts, written from the header (the `size_of` / `offset_of` checks below, and the
//! test that compiles the installed header, keep them honest).

#![allow(non_camel_case_types)]

use std::mem::{offset_of, size_of};

/// `VFIO_API_VERSION`: what `VFIO_GET_API_VERSION` answers.
pub const VFIO_API_VERSION: i32 = 0;

/// IOMMU models (`VFIO_CHECK_EXTENSION`, `VFIO_SET_IOMMU`).
pub const VFIO_TYPE1_IOMMU: u64 = 1;
pub const VFIO_TYPE1V2_IOMMU: u64 = 3;
pub const VFIO_NOIOMMU_IOMMU: u64 = 8;

/// VFIO ioctls are `_IO(';', 100 + n)`: no size or direction bits, the structure's `argsz` says
/// how large it is.
const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}

pub const VFIO_GET_API_VERSION: u64 = vfio_io(0);
pub const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
pub const VFIO_SET_IOMMU: u64 = vfio_io(2);
pub const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
pub const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
pub const VFIO_DEVICE_GET_INFO: u64 = vfio_io(7);
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
pub const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
pub const VFIO_DEVICE_SET_IRQS: u64 = vfio_io(10);
pub const VFIO_DEVICE_RESET: u64 = vfio_io(11);
pub const VFIO_IOMMU_MAP_DMA: u64 = vfio_io(13);
pub const VFIO_IOMMU_UNMAP_DMA: u64 = vfio_io(14);

pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;

pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const VFIO_DEVICE_FLAGS_PCI: u32 = 1 << 1;

pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
pub const VFIO_REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
pub const VFIO_REGION_INFO_CAP_SPARSE_MMAP: u16 = 1;

pub const VFIO_IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const VFIO_IRQ_INFO_MASKABLE: u32 = 1 << 1;

pub const VFIO_IRQ_SET_DATA_NONE: u32 = 1 << 0;
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub const VFIO_IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// vfio-pci's fixed region indexes: BAR0..BAR5 are 0..=5.
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
/// vfio-pci's fixed interrupt indexes.
pub const VFIO_PCI_INTX_IRQ_INDEX: u32 = 0;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_info_cap_header {
    pub id: u16,
    pub version: u16,
    pub next: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_group_status {
    pub argsz: u32,
    pub flags: u32,
}

/// Up to `cap_offset` (later headers add a pad word; the kernel accepts any `argsz` from the end
/// of `num_irqs` on).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_info {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
    pub cap_offset: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_region_info {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_region_sparse_mmap_area {
    pub offset: u64,
    pub size: u64,
}

/// The fixed part of `vfio_region_info_cap_sparse_mmap`; `nr_areas` areas follow.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_region_info_cap_sparse_mmap {
    pub header: vfio_info_cap_header,
    pub nr_areas: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_irq_info {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

/// The fixed part of `vfio_irq_set`; `data` follows.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_irq_set {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
}

/// A `vfio_irq_set` carrying one eventfd (`DATA_EVENTFD`, count 1).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_irq_set_eventfd {
    pub set: vfio_irq_set,
    pub fd: i32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_type1_dma_map {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_type1_dma_unmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// `argsz` of a structure.
pub const fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

const _: () = {
    assert!(VFIO_GET_API_VERSION == 0x3B64);
    assert!(VFIO_IOMMU_UNMAP_DMA == 0x3B72);
    assert!(size_of::<vfio_info_cap_header>() == 8);
    assert!(size_of::<vfio_group_status>() == 8);
    assert!(size_of::<vfio_device_info>() == 20);
    assert!(offset_of!(vfio_device_info, num_irqs) == 12);
    assert!(size_of::<vfio_region_info>() == 32);
    assert!(offset_of!(vfio_region_info, size) == 16);
    assert!(offset_of!(vfio_region_info, offset) == 24);
    assert!(size_of::<vfio_region_sparse_mmap_area>() == 16);
    assert!(size_of::<vfio_region_info_cap_sparse_mmap>() == 16);
    assert!(size_of::<vfio_irq_info>() == 16);
    assert!(size_of::<vfio_irq_set>() == 20);
    assert!(size_of::<vfio_irq_set_eventfd>() == 24);
    assert!(offset_of!(vfio_irq_set_eventfd, fd) == 20);
    assert!(size_of::<vfio_iommu_type1_dma_map>() == 32);
    assert!(offset_of!(vfio_iommu_type1_dma_map, vaddr) == 8);
    assert!(offset_of!(vfio_iommu_type1_dma_map, iova) == 16);
    assert!(offset_of!(vfio_iommu_type1_dma_map, size) == 24);
    assert!(size_of::<vfio_iommu_type1_dma_unmap>() == 24);
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Every number and layout above, as the C compiler sees them in the installed header.
    fn ours() -> Vec<(&'static str, u64)> {
        vec![
            ("VFIO_API_VERSION", VFIO_API_VERSION as u64),
            ("VFIO_TYPE1_IOMMU", VFIO_TYPE1_IOMMU),
            ("VFIO_TYPE1v2_IOMMU", VFIO_TYPE1V2_IOMMU),
            ("VFIO_NOIOMMU_IOMMU", VFIO_NOIOMMU_IOMMU),
            ("VFIO_GET_API_VERSION", VFIO_GET_API_VERSION),
            ("VFIO_CHECK_EXTENSION", VFIO_CHECK_EXTENSION),
            ("VFIO_SET_IOMMU", VFIO_SET_IOMMU),
            ("VFIO_GROUP_GET_STATUS", VFIO_GROUP_GET_STATUS),
            ("VFIO_GROUP_SET_CONTAINER", VFIO_GROUP_SET_CONTAINER),
            ("VFIO_GROUP_GET_DEVICE_FD", VFIO_GROUP_GET_DEVICE_FD),
            ("VFIO_DEVICE_GET_INFO", VFIO_DEVICE_GET_INFO),
            ("VFIO_DEVICE_GET_REGION_INFO", VFIO_DEVICE_GET_REGION_INFO),
            ("VFIO_DEVICE_GET_IRQ_INFO", VFIO_DEVICE_GET_IRQ_INFO),
            ("VFIO_DEVICE_SET_IRQS", VFIO_DEVICE_SET_IRQS),
            ("VFIO_DEVICE_RESET", VFIO_DEVICE_RESET),
            ("VFIO_IOMMU_MAP_DMA", VFIO_IOMMU_MAP_DMA),
            ("VFIO_IOMMU_UNMAP_DMA", VFIO_IOMMU_UNMAP_DMA),
            ("VFIO_GROUP_FLAGS_VIABLE", VFIO_GROUP_FLAGS_VIABLE as u64),
            ("VFIO_DEVICE_FLAGS_RESET", VFIO_DEVICE_FLAGS_RESET as u64),
            ("VFIO_DEVICE_FLAGS_PCI", VFIO_DEVICE_FLAGS_PCI as u64),
            (
                "VFIO_REGION_INFO_FLAG_MMAP",
                VFIO_REGION_INFO_FLAG_MMAP as u64,
            ),
            (
                "VFIO_REGION_INFO_FLAG_CAPS",
                VFIO_REGION_INFO_FLAG_CAPS as u64,
            ),
            (
                "VFIO_REGION_INFO_CAP_SPARSE_MMAP",
                VFIO_REGION_INFO_CAP_SPARSE_MMAP as u64,
            ),
            ("VFIO_IRQ_INFO_EVENTFD", VFIO_IRQ_INFO_EVENTFD as u64),
            ("VFIO_IRQ_INFO_MASKABLE", VFIO_IRQ_INFO_MASKABLE as u64),
            ("VFIO_IRQ_SET_DATA_NONE", VFIO_IRQ_SET_DATA_NONE as u64),
            (
                "VFIO_IRQ_SET_DATA_EVENTFD",
                VFIO_IRQ_SET_DATA_EVENTFD as u64,
            ),
            (
                "VFIO_IRQ_SET_ACTION_UNMASK",
                VFIO_IRQ_SET_ACTION_UNMASK as u64,
            ),
            (
                "VFIO_IRQ_SET_ACTION_TRIGGER",
                VFIO_IRQ_SET_ACTION_TRIGGER as u64,
            ),
            ("VFIO_DMA_MAP_FLAG_READ", VFIO_DMA_MAP_FLAG_READ as u64),
            ("VFIO_DMA_MAP_FLAG_WRITE", VFIO_DMA_MAP_FLAG_WRITE as u64),
            (
                "VFIO_PCI_CONFIG_REGION_INDEX",
                VFIO_PCI_CONFIG_REGION_INDEX as u64,
            ),
            ("VFIO_PCI_INTX_IRQ_INDEX", VFIO_PCI_INTX_IRQ_INDEX as u64),
            (
                "sizeof(struct vfio_info_cap_header)",
                size_of::<vfio_info_cap_header>() as u64,
            ),
            (
                "sizeof(struct vfio_group_status)",
                size_of::<vfio_group_status>() as u64,
            ),
            (
                "offsetof(struct vfio_device_info, cap_offset) + 4",
                (offset_of!(vfio_device_info, cap_offset) + 4) as u64,
            ),
            (
                "offsetof(struct vfio_device_info, num_regions)",
                offset_of!(vfio_device_info, num_regions) as u64,
            ),
            (
                "sizeof(struct vfio_region_info)",
                size_of::<vfio_region_info>() as u64,
            ),
            (
                "offsetof(struct vfio_region_info, cap_offset)",
                offset_of!(vfio_region_info, cap_offset) as u64,
            ),
            (
                "offsetof(struct vfio_region_info, size)",
                offset_of!(vfio_region_info, size) as u64,
            ),
            (
                "offsetof(struct vfio_region_info, offset)",
                offset_of!(vfio_region_info, offset) as u64,
            ),
            (
                "sizeof(struct vfio_region_sparse_mmap_area)",
                size_of::<vfio_region_sparse_mmap_area>() as u64,
            ),
            (
                "sizeof(struct vfio_region_info_cap_sparse_mmap)",
                size_of::<vfio_region_info_cap_sparse_mmap>() as u64,
            ),
            (
                "offsetof(struct vfio_region_info_cap_sparse_mmap, nr_areas)",
                offset_of!(vfio_region_info_cap_sparse_mmap, nr_areas) as u64,
            ),
            (
                "sizeof(struct vfio_irq_info)",
                size_of::<vfio_irq_info>() as u64,
            ),
            (
                "offsetof(struct vfio_irq_info, count)",
                offset_of!(vfio_irq_info, count) as u64,
            ),
            (
                "sizeof(struct vfio_irq_set)",
                size_of::<vfio_irq_set>() as u64,
            ),
            (
                "offsetof(struct vfio_irq_set, data)",
                offset_of!(vfio_irq_set_eventfd, fd) as u64,
            ),
            (
                "sizeof(struct vfio_iommu_type1_dma_map)",
                size_of::<vfio_iommu_type1_dma_map>() as u64,
            ),
            (
                "offsetof(struct vfio_iommu_type1_dma_map, vaddr)",
                offset_of!(vfio_iommu_type1_dma_map, vaddr) as u64,
            ),
            (
                "offsetof(struct vfio_iommu_type1_dma_map, iova)",
                offset_of!(vfio_iommu_type1_dma_map, iova) as u64,
            ),
            (
                "offsetof(struct vfio_iommu_type1_dma_map, size)",
                offset_of!(vfio_iommu_type1_dma_map, size) as u64,
            ),
            (
                "sizeof(struct vfio_iommu_type1_dma_unmap)",
                size_of::<vfio_iommu_type1_dma_unmap>() as u64,
            ),
            (
                "offsetof(struct vfio_iommu_type1_dma_unmap, size)",
                offset_of!(vfio_iommu_type1_dma_unmap, size) as u64,
            ),
        ]
    }

    /// Compiles a program printing each number with the installed `<linux/vfio.h>` and compares.
    /// Skipped (with the reason) where the header or a C compiler is missing.
    #[test]
    fn numbers_and_layouts_match_the_installed_header() {
        if !Path::new("/usr/include/linux/vfio.h").exists() {
            eprintln!("skipped: /usr/include/linux/vfio.h missing (Debian: linux-libc-dev)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ica-vfio-uapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <linux/vfio.h>\nint main(void) {\n",
        );
        for (expr, _) in ours() {
            c += &format!("  printf(\"%llu\\n\", (unsigned long long)({expr}));\n");
        }
        c += "  return 0;\n}\n";
        std::fs::write(dir.join("uapi.c"), c).unwrap();
        let exe = dir.join("uapi");
        let built = Command::new("cc")
            .arg(dir.join("uapi.c"))
            .arg("-o")
            .arg(&exe)
            .output();
        let built = match built {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skipped: no C compiler ({e})");
                return;
            }
        };
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let out = Command::new(&exe).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let theirs: Vec<u64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let ours = ours();
        assert_eq!(theirs.len(), ours.len());
        for ((name, v), h) in ours.iter().zip(theirs) {
            assert_eq!(*v, h, "{name}");
        }
    }
}
