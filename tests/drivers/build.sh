#!/bin/sh
# Build the ICA C test drivers for x86 and x64 with mingw-w64.
#
#   tests/drivers/build.sh [OUTDIR]     (default: tests/drivers/bin)
#
# Produces OUTDIR/x86/NAME.sys and OUTDIR/x64/NAME.sys for every driver.
# The output is byte-for-byte reproducible for a given toolchain: no
# timestamps, sources compiled by relative name from this directory, no
# debug info.  Warnings are errors.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
outdir=${1:-"$here/bin"}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

DRIVERS="ioctl function filter unknownimport nullderef norelocs regtest rtl8139_ndis5
  rtl8139_ndis6 netvirt_ndis6 netcrash_ndis6 rtlcrash_ndis6 sins"

CC_X86=${CC_X86:-i686-w64-mingw32-gcc}
CC_X64=${CC_X64:-x86_64-w64-mingw32-gcc}

CFLAGS_COMMON="-O2 -Wall -Werror -std=gnu11 -ffreestanding -fno-stack-protector
  -mno-stack-arg-probe -fno-ident -D_KERNEL_MODE"
LDFLAGS_COMMON="-nostdlib -nostartfiles -Wl,--subsystem,native -Wl,--dynamicbase
  -Wl,--enable-reloc-section -Wl,--no-insert-timestamp -Wl,--strip-debug"
LIBS="-lntoskrnl -lhal -lgcc"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# Relative source names keep the build directory out of the objects.
cd "$here"

# Per-driver extra compiler flags.
extra_cflags() {
    case $1 in
    nullderef) echo "-fno-omit-frame-pointer" ;; # walkable x86 EBP chain
    sins) echo "-fno-reorder-blocks-and-partition -fno-optimize-sibling-calls" ;; # each sin calls from its own function
    rtl8139_ndis5) echo "-DNDIS_MINIPORT_DRIVER -DNDIS51_MINIPORT=1" ;; # ndis51_fix.h
    rtl8139_ndis6 | netvirt_ndis6) echo "-DNDIS_MINIPORT_DRIVER" ;; # ndis6.h
    # ndis6.h; no tail calls, so every misbehaving frame stays in the guest backtrace
    netcrash_ndis6 | rtlcrash_ndis6) echo "-DNDIS_MINIPORT_DRIVER -fno-optimize-sibling-calls" ;;
    *) echo "" ;;
    esac
}

# Per-driver extra import libraries (before the common ones).
extra_libs() {
    case $1 in
    rtl8139_ndis5 | rtl8139_ndis6 | netvirt_ndis6 | netcrash_ndis6 | rtlcrash_ndis6) echo "-lndis" ;;
    ioctl | regtest) echo "-L$tmp/$arch -lntoskrnl_win10" ;; # ntoskrnl_win10.def
    *) echo "" ;;
    esac
}

build_arch() {
    arch=$1 cc=$2 triple=$3 archflags=$4 entry=$5
    mkdir -p "$outdir/$arch" "$tmp/$arch"
    # Import library of the ntoskrnl exports mingw-w64's lacks (x64: undecorated names), made
    # under fixed names so that the drivers linking it stay reproducible.
    if [ "$arch" = x86 ]; then
        cp ntoskrnl_win10.def "$tmp/$arch/ntoskrnl_win10.def"
        killat=-k
    else
        sed 's/@[0-9]*$//' ntoskrnl_win10.def >"$tmp/$arch/ntoskrnl_win10.def"
        killat=
    fi
    (cd "$tmp/$arch" && ${cc%gcc}dlltool $killat -t ntwin10 -d ntoskrnl_win10.def \
        -l libntoskrnl_win10.a)
    for d in $DRIVERS; do
        # shellcheck disable=SC2086
        $cc $CFLAGS_COMMON $archflags $(extra_cflags "$d") -I"/usr/$triple/include/ddk" \
            -c "$d.c" -o "$tmp/$arch/$d.o"
        # shellcheck disable=SC2086
        $cc $LDFLAGS_COMMON -Wl,--entry,"$entry" \
            -o "$tmp/$arch/$d.sys" "$tmp/$arch/$d.o" $(extra_libs "$d") $LIBS
        cp "$tmp/$arch/$d.sys" "$outdir/$arch/$d.sys"
        echo "built $arch/$d.sys"
    done
}

build_arch x86 "$CC_X86" i686-w64-mingw32 \
    "-D_X86_ -fno-asynchronous-unwind-tables" _DriverEntry@8
build_arch x64 "$CC_X64" x86_64-w64-mingw32 \
    "-D_AMD64_ -D_WIN64" DriverEntry
