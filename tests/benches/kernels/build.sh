#!/bin/sh
# Build the benchmark kernels four ways from the same source (kernels.c), -O2, GCC 12:
#
#   tests/benches/kernels/build.sh OUTDIR
#
#   OUTDIR/x64/native       x86-64 Linux ELF, static (gcc)            native and qemu-x86_64
#   OUTDIR/x86/native       i386 Linux ELF, static (gcc -m32)         native and qemu-i386
#   OUTDIR/x64/kernels.sys  x64 PE driver image (x86_64-w64-mingw32-gcc)  the translator
#   OUTDIR/x86/kernels.sys  x86 PE driver image (i686-w64-mingw32-gcc)    the translator
#   OUTDIR/compilers.txt    the compilers used, one line each
#
# kernels.c gets identical code-generation flags in all four builds: scalar integer code
# (-fno-tree-vectorize), no library calls (-ffreestanding, -fno-tree-loop-distribute-patterns), a
# fixed -march/-mtune per architecture, no PIE in the ELF builds (the PE images use absolute
# addresses with base relocations, like the i386 ELF without PIE).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
outdir=$(cd "$1" && pwd)

CC=${CC:-gcc}
CC_X86=${CC_X86:-i686-w64-mingw32-gcc}
CC_X64=${CC_X64:-x86_64-w64-mingw32-gcc}

missing() {
    echo "error: $1 not found; install it with: apt-get install $2" >&2
    exit 1
}
command -v "$CC" >/dev/null || missing "$CC" gcc
command -v "$CC_X64" >/dev/null || missing "$CC_X64" gcc-mingw-w64-x86-64
command -v "$CC_X86" >/dev/null || missing "$CC_X86" gcc-mingw-w64-i686

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
cd "$here"

printf 'int main(void) { return 0; }\n' >"$tmp/probe.c"
"$CC" -m32 -static -o "$tmp/probe" "$tmp/probe.c" 2>/dev/null ||
    missing "$CC -m32 with a static i386 libc" gcc-multilib

KFLAGS="-O2 -std=gnu11 -Wall -Wextra -Werror -ffreestanding -fno-tree-vectorize
  -fno-tree-loop-distribute-patterns -fno-stack-protector -fno-asynchronous-unwind-tables -fno-ident"
X64FLAGS="-march=x86-64 -mtune=generic"
X86FLAGS="-march=i686 -mtune=generic"
PE_LDFLAGS="-nostdlib -nostartfiles -Wl,--subsystem,native -Wl,--dynamicbase
  -Wl,--enable-reloc-section -Wl,--no-insert-timestamp -Wl,--strip-debug"

mkdir -p "$outdir/x64" "$outdir/x86"

# shellcheck disable=SC2086
{
    # Linux ELF, x86-64 and i386
    $CC $KFLAGS $X64FLAGS -fno-pie -c kernels.c -o "$tmp/k64.o"
    $CC -O2 -Wall -Werror -c native_main.c -o "$tmp/m64.o"
    $CC -static -no-pie -o "$outdir/x64/native" "$tmp/m64.o" "$tmp/k64.o"
    $CC -m32 $KFLAGS $X86FLAGS -fno-pie -c kernels.c -o "$tmp/k32.o"
    $CC -m32 -O2 -Wall -Werror -c native_main.c -o "$tmp/m32.o"
    $CC -m32 -static -no-pie -o "$outdir/x86/native" "$tmp/m32.o" "$tmp/k32.o"

    # PE driver images, x64 and x86
    $CC_X64 $KFLAGS $X64FLAGS -mno-stack-arg-probe -c kernels.c -o "$tmp/kpe64.o"
    $CC_X64 $KFLAGS $X64FLAGS -mno-stack-arg-probe -c pe_entry.c -o "$tmp/epe64.o"
    $CC_X64 $PE_LDFLAGS -Wl,--entry,DriverEntry -o "$outdir/x64/kernels.sys" \
        "$tmp/kpe64.o" "$tmp/epe64.o" -lgcc
    $CC_X86 $KFLAGS $X86FLAGS -mno-stack-arg-probe -c kernels.c -o "$tmp/kpe32.o"
    $CC_X86 $KFLAGS $X86FLAGS -mno-stack-arg-probe -c pe_entry.c -o "$tmp/epe32.o"
    $CC_X86 $PE_LDFLAGS -Wl,--entry,_DriverEntry@8 -o "$outdir/x86/kernels.sys" \
        "$tmp/kpe32.o" "$tmp/epe32.o" -lgcc
}

# The version of the Debian package that installed a compiler, if any ("12-win32" says little).
pkgver() {
    pkg=$(dpkg -S "$(readlink -f "$(command -v "$1")")" 2>/dev/null | cut -d: -f1) || true
    [ -n "$pkg" ] && dpkg-query -W -f ' (Debian package ${Package} ${Version})' "$pkg" 2>/dev/null || true
}
{
    echo "ELF x64/x86: $("$CC" --version | head -n 1)"
    echo "PE  x64:     $("$CC_X64" --version | head -n 1)$(pkgver "$CC_X64")"
    echo "PE  x86:     $("$CC_X86" --version | head -n 1)$(pkgver "$CC_X86")"
    echo "flags:       $(echo $KFLAGS)"
} >"$outdir/compilers.txt"
echo "built $outdir/{x64,x86}/{native,kernels.sys}"
