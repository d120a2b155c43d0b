/*
 * ioctl.sys - a legacy (non-PnP) WDM test driver for ICA.
 *
 * \Device\IcaIoctl (symlink \DosDevices\IcaIoctl), buffered I/O.
 *   CREATE/CLEANUP/CLOSE   success (CREATE counts opens under a spinlock)
 *   WRITE                  stores up to 256 bytes in a pool scratch buffer
 *   READ                   returns the stored bytes
 *   IOCTL_ICA_REVERSE      METHOD_BUFFERED   output = input reversed
 *   IOCTL_ICA_COUNT        METHOD_IN_DIRECT  count bytes == input[0] in the MDL buffer
 *   IOCTL_ICA_FILL         METHOD_OUT_DIRECT fill the MDL buffer with (UCHAR)(seed + i*7)
 *   IOCTL_ICA_MULTIPLY     METHOD_NEITHER    ULONGLONG a*b
 *   IOCTL_ICA_SELFTEST     METHOD_BUFFERED   in-driver checks of kernel services
 *                                            (incl. timers, DPCs, work items and
 *                                            lookaside lists)
 */

#ifdef _X86_
/* On x86 bind InterlockedXxx to the fastcall exports of ntoskrnl.exe instead
 * of compiler intrinsics, as old DDK builds did; the intrinsics
 * (_InterlockedXxx) are still checked alongside. */
#define NO_INTERLOCKED_INTRINSICS
#endif

#include <ntddk.h>
#include "common.h"
#include "icadrv.h"

/* CRT exports of ntoskrnl.exe (declared here rather than through the mingw
 * CRT headers, which may redirect printf-family names to mingw's own). */
int __cdecl _snprintf(char *buffer, size_t count, const char *format, ...);
int __cdecl _snwprintf(wchar_t *buffer, size_t count, const wchar_t *format, ...);

/* Windows 10 API mingw-w64's headers lack (its import is in ntoskrnl_win10.def, as are the
 * EX_TIMER functions mingw-w64's libntoskrnl.a lacks). */
#define ICA_DRIVER_REGKEY_PARAMETERS 0
#define ICA_DRIVER_REGKEY_PERSISTENT_STATE 1
NTKERNELAPI NTSTATUS NTAPI IoOpenDriverRegistryKey(PDRIVER_OBJECT DriverObject, ULONG RegKeyType,
                                                   ACCESS_MASK DesiredAccess, ULONG Flags,
                                                   PHANDLE DriverRegKey);
#ifdef _AMD64_
/* x64 ntoskrnl.exe exports these too; mingw-w64 declares them for x86 only. */
NTKERNELAPI NTSTATUS NTAPI KeSaveFloatingPointState(PKFLOATING_SAVE FloatSave);
NTKERNELAPI NTSTATUS NTAPI KeRestoreFloatingPointState(PKFLOATING_SAVE FloatSave);
#endif
#ifdef _X86_
/* The stdcall entry points x86 hal.dll keeps next to KfLowerIrql / KfReleaseSpinLock (the
 * headers turn KeLowerIrql and KeReleaseSpinLock into macros for those). */
VOID NTAPI IcaHalKeLowerIrql(KIRQL NewIrql) __asm__("_KeLowerIrql@4");
VOID NTAPI IcaHalKeReleaseSpinLock(PKSPIN_LOCK SpinLock, KIRQL NewIrql)
    __asm__("_KeReleaseSpinLock@8");
#endif
#ifdef _X86_
#define IcaCurrentThread KeGetCurrentThread
#else
/* The x64 headers inline KeGetCurrentThread as a gs read; call the export instead. */
PKTHREAD NTAPI IcaCurrentThread(VOID) __asm__("KeGetCurrentThread");
#endif

#define ICA_IOCTL_TAG 0x74636C49UL /* 'tclI': reads "Ilct" in memory */

typedef struct _ICA_IOCTL_EXTENSION {
    PUCHAR Scratch;          /* ICA_SCRATCH_SIZE bytes from nonpaged pool */
    ULONG Length;            /* bytes stored by the last WRITE */
    LONG OpenCount;          /* number of CREATEs seen */
    KSPIN_LOCK Lock;         /* protects OpenCount, Scratch and Length */
} ICA_IOCTL_EXTENSION, *PICA_IOCTL_EXTENSION;

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD IcaUnload;
static DRIVER_DISPATCH IcaCreateClose;
static DRIVER_DISPATCH IcaRead;
static DRIVER_DISPATCH IcaWrite;
static DRIVER_DISPATCH IcaDeviceControl;

static NTSTATUS NTAPI IcaCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    PICA_IOCTL_EXTENSION ext = DeviceObject->DeviceExtension;
    KIRQL irql;

    DbgPrint("ioctl: %s\n", IcaMajorName(stack->MajorFunction));
    if (stack->MajorFunction == IRP_MJ_CREATE) {
        KeAcquireSpinLock(&ext->Lock, &irql);
        ext->OpenCount++;
        KeReleaseSpinLock(&ext->Lock, irql);
    }
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

static NTSTATUS NTAPI IcaWrite(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    PICA_IOCTL_EXTENSION ext = DeviceObject->DeviceExtension;
    ULONG len = stack->Parameters.Write.Length;
    KIRQL irql;

    if (len > ICA_SCRATCH_SIZE)
        len = ICA_SCRATCH_SIZE;
    if (len != 0 && Irp->AssociatedIrp.SystemBuffer == NULL)
        return IcaComplete(Irp, STATUS_INVALID_PARAMETER, 0);

    KeAcquireSpinLock(&ext->Lock, &irql);
    if (len != 0)
        RtlCopyMemory(ext->Scratch, Irp->AssociatedIrp.SystemBuffer, len);
    ext->Length = len;
    KeReleaseSpinLock(&ext->Lock, irql);
    return IcaComplete(Irp, STATUS_SUCCESS, len);
}

static NTSTATUS NTAPI IcaRead(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    PICA_IOCTL_EXTENSION ext = DeviceObject->DeviceExtension;
    ULONG len = stack->Parameters.Read.Length;
    KIRQL irql;

    KeAcquireSpinLock(&ext->Lock, &irql);
    if (len > ext->Length)
        len = ext->Length;
    if (len != 0 && Irp->AssociatedIrp.SystemBuffer != NULL)
        RtlCopyMemory(Irp->AssociatedIrp.SystemBuffer, ext->Scratch, len);
    else
        len = 0;
    KeReleaseSpinLock(&ext->Lock, irql);
    return IcaComplete(Irp, STATUS_SUCCESS, len);
}

/* ---------------------------------------------------------------------- */
/* IOCTL_ICA_SELFTEST                                                      */

static void IcaTestPoolAndMemory(PICA_SELFTEST_RESULT r)
{
    PUCHAR p = ExAllocatePoolWithTag(NonPagedPool, 64, ICA_IOCTL_TAG);
    UCHAR b[16];
    ULONG i;
    BOOLEAN ok;

    CHECK(p != NULL, "ExAllocatePoolWithTag");
    if (p == NULL)
        return;

    memset(p, 0xA5, 64);
    ok = TRUE;
    for (i = 0; i < 64; i++)
        if (p[i] != 0xA5)
            ok = FALSE;
    CHECK(ok, "memset");

    for (i = 0; i < 16; i++)
        b[i] = (UCHAR)(i * 3 + 1);
    CHECK(memcpy(p + 8, b, 16) == p + 8, "memcpy return");
    ok = TRUE;
    for (i = 0; i < 16; i++)
        if (p[8 + i] != (UCHAR)(i * 3 + 1))
            ok = FALSE;
    CHECK(ok && p[7] == 0xA5 && p[24] == 0xA5, "memcpy");

    CHECK(memcmp(p + 8, b, 16) == 0, "memcmp equal");
    b[5] ^= 0x80; /* b[5] = 16 | 0x80 > p[13] */
    CHECK(memcmp(p + 8, b, 16) < 0, "memcmp less");
    CHECK(memcmp(b, p + 8, 16) > 0, "memcmp greater");

    /* Overlapping moves in both directions. */
    memcpy(p, "0123456789", 10);
    memmove(p + 2, p, 8);
    CHECK(memcmp(p, "0101234567", 10) == 0, "memmove forward overlap");
    memcpy(p, "0123456789", 10);
    memmove(p, p + 2, 8);
    CHECK(memcmp(p, "2345678989", 10) == 0, "memmove backward overlap");

    ExFreePoolWithTag(p, ICA_IOCTL_TAG);
    CHECK(TRUE, "ExFreePoolWithTag");
}

static void IcaTestCrtStrings(PICA_SELFTEST_RESULT r)
{
    char buf[64];
    wchar_t wbuf[32];
    int n;

    CHECK(strlen("hello") == 5 && strlen("") == 0, "strlen");
    CHECK(wcslen(L"hello") == 5 && wcslen(L"") == 0, "wcslen");
    CHECK(strcmp("abc", "abc") == 0 && strcmp("abc", "abd") < 0 &&
          strcmp("abd", "abc") > 0 && strcmp("ab", "abc") < 0, "strcmp");
    CHECK(_stricmp("HeLLo", "hello") == 0 && _stricmp("abc", "ABD") < 0, "_stricmp");
    CHECK(_wcsicmp(L"ICA Driver", L"ica dRIVER") == 0 && _wcsicmp(L"b", L"A") > 0, "_wcsicmp");

    memset(buf, 'x', sizeof(buf));
    strncpy(buf, "abcdef", 3);
    CHECK(buf[0] == 'a' && buf[1] == 'b' && buf[2] == 'c' && buf[3] == 'x', "strncpy");
    memset(buf, 'x', sizeof(buf));
    strncpy(buf, "ab", 5);
    CHECK(buf[0] == 'a' && buf[1] == 'b' && buf[2] == 0 && buf[3] == 0 && buf[4] == 0 &&
          buf[5] == 'x', "strncpy pad");

    memset(wbuf, 0xFF, sizeof(wbuf));
    wcsncpy(wbuf, L"wide", 8);
    CHECK(wbuf[0] == L'w' && wbuf[3] == L'e' && wbuf[4] == 0 && wbuf[7] == 0 &&
          wbuf[8] == 0xFFFF, "wcsncpy");

    memset(buf, 0, sizeof(buf));
    n = _snprintf(buf, sizeof(buf), "%s-%d-%x-%08lx-%c", "ab", -12, 0xbeef, 0x1234UL, 'z');
    CHECK(n == 22 && strcmp(buf, "ab--12-beef-00001234-z") == 0, "_snprintf");

    memset(buf, 'x', sizeof(buf));
    n = _snprintf(buf, 4, "%s", "abcdef");
    CHECK(n < 0 && memcmp(buf, "abcdx", 5) == 0, "_snprintf truncation");

    memset(wbuf, 0, sizeof(wbuf));
    n = _snwprintf(wbuf, 32, L"%ws=%d", L"key", -42);
    CHECK(n == 7 && wcslen(wbuf) == 7 && _wcsicmp(wbuf, L"KEY=-42") == 0, "_snwprintf");
}

static void IcaTestRtlStrings(PICA_SELFTEST_RESULT r)
{
    UNICODE_STRING a, b, c;
    ANSI_STRING as, as2;
    WCHAR storage[32];
    CHAR astorage[32];
    NTSTATUS st;

    RtlInitUnicodeString(&a, L"IcaTest");
    CHECK(a.Length == 14 && a.MaximumLength == 16 && a.Buffer != NULL, "RtlInitUnicodeString");
    RtlInitUnicodeString(&c, NULL);
    CHECK(c.Length == 0 && c.MaximumLength == 0 && c.Buffer == NULL, "RtlInitUnicodeString NULL");

    RtlInitUnicodeString(&b, L"ICATEST");
    CHECK(RtlCompareUnicodeString(&a, &b, TRUE) == 0, "RtlCompareUnicodeString insensitive");
    CHECK(RtlCompareUnicodeString(&a, &b, FALSE) > 0, "RtlCompareUnicodeString sensitive");
    CHECK(RtlEqualUnicodeString(&a, &b, TRUE) && !RtlEqualUnicodeString(&a, &b, FALSE),
          "RtlEqualUnicodeString");

    c.Buffer = storage;
    c.Length = 0;
    c.MaximumLength = sizeof(storage);
    RtlCopyUnicodeString(&c, &a);
    CHECK(c.Length == 14 && RtlEqualUnicodeString(&a, &c, FALSE), "RtlCopyUnicodeString");

    st = RtlAppendUnicodeToString(&c, L"-42");
    CHECK(NT_SUCCESS(st) && c.Length == 20 && memcmp(c.Buffer, L"IcaTest-42", 20) == 0,
          "RtlAppendUnicodeToString");
    c.MaximumLength = 22;
    st = RtlAppendUnicodeToString(&c, L"xyz");
    CHECK(st == STATUS_BUFFER_TOO_SMALL && c.Length == 20, "RtlAppendUnicodeToString overflow");

    RtlInitAnsiString(&as, "Hello");
    CHECK(as.Length == 5 && as.MaximumLength == 6, "RtlInitAnsiString");
    RtlZeroMemory(&b, sizeof(b));
    st = RtlAnsiStringToUnicodeString(&b, &as, TRUE);
    CHECK(NT_SUCCESS(st) && b.Buffer != NULL && b.Length == 10 &&
          memcmp(b.Buffer, L"Hello", 10) == 0, "RtlAnsiStringToUnicodeString");
    if (NT_SUCCESS(st))
        RtlFreeUnicodeString(&b);
    CHECK(b.Buffer == NULL, "RtlFreeUnicodeString");

    as2.Buffer = astorage;
    as2.Length = 0;
    as2.MaximumLength = sizeof(astorage);
    st = RtlUnicodeStringToAnsiString(&as2, &a, FALSE);
    CHECK(NT_SUCCESS(st) && as2.Length == 7 && memcmp(astorage, "IcaTest", 7) == 0,
          "RtlUnicodeStringToAnsiString");
}

static void IcaTestIrqlAndLocks(PICA_SELFTEST_RESULT r)
{
    KSPIN_LOCK lock;
    KIRQL old, old2;

    CHECK(KeGetCurrentIrql() == PASSIVE_LEVEL, "KeGetCurrentIrql passive");

    KeInitializeSpinLock(&lock);
    KeAcquireSpinLock(&lock, &old);
    CHECK(KeGetCurrentIrql() == DISPATCH_LEVEL, "KeAcquireSpinLock raises to DISPATCH_LEVEL");
    KeReleaseSpinLock(&lock, old);
    CHECK(old == PASSIVE_LEVEL && KeGetCurrentIrql() == PASSIVE_LEVEL, "KeReleaseSpinLock restores");

    KeRaiseIrql(APC_LEVEL, &old);
    CHECK(old == PASSIVE_LEVEL && KeGetCurrentIrql() == APC_LEVEL, "KeRaiseIrql APC_LEVEL");
    KeRaiseIrql(DISPATCH_LEVEL, &old2);
    CHECK(old2 == APC_LEVEL && KeGetCurrentIrql() == DISPATCH_LEVEL, "KeRaiseIrql DISPATCH_LEVEL");
    KeLowerIrql(old2);
    CHECK(KeGetCurrentIrql() == APC_LEVEL, "KeLowerIrql APC_LEVEL");
    KeLowerIrql(old);
    CHECK(KeGetCurrentIrql() == PASSIVE_LEVEL, "KeLowerIrql PASSIVE_LEVEL");
}

static void IcaTestEvents(PICA_SELFTEST_RESULT r)
{
    KEVENT ev;
    LARGE_INTEGER timeout;
    NTSTATUS st;

    timeout.QuadPart = -10 * 1000 * 10; /* 10 ms, relative */

    KeInitializeEvent(&ev, NotificationEvent, FALSE);
    CHECK(KeReadStateEvent(&ev) == 0, "KeInitializeEvent not signaled");
    st = KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_TIMEOUT, "KeWaitForSingleObject timeout");
    KeSetEvent(&ev, IO_NO_INCREMENT, FALSE);
    CHECK(KeReadStateEvent(&ev) != 0, "KeSetEvent/KeReadStateEvent");
    st = KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS, "KeWaitForSingleObject signaled");
    CHECK(KeReadStateEvent(&ev) != 0, "NotificationEvent stays signaled");
    CHECK(KeResetEvent(&ev) != 0, "KeResetEvent previous state");
    CHECK(KeReadStateEvent(&ev) == 0, "KeResetEvent clears");
    st = KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_TIMEOUT, "KeWaitForSingleObject timeout after reset");

    KeInitializeEvent(&ev, SynchronizationEvent, FALSE);
    KeSetEvent(&ev, IO_NO_INCREMENT, FALSE);
    CHECK(KeReadStateEvent(&ev) != 0, "SynchronizationEvent set");
    st = KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS, "SynchronizationEvent wait");
    CHECK(KeReadStateEvent(&ev) == 0, "SynchronizationEvent auto-reset");
    st = KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_TIMEOUT, "SynchronizationEvent second wait times out");
}

static void IcaTestTime(PICA_SELFTEST_RESULT r)
{
    LARGE_INTEGER t0, t1, c0, c1, freq;
    ULONG i;

    /* 1 ms stalls until the clock moves (the system time may tick coarsely). */
    KeQuerySystemTime(&t0);
    t1 = t0;
    for (i = 0; i < 100 && t1.QuadPart == t0.QuadPart; i++) {
        KeStallExecutionProcessor(1000);
        KeQuerySystemTime(&t1);
    }
    CHECK(t0.QuadPart != 0 && t1.QuadPart > t0.QuadPart, "KeQuerySystemTime advances");

    freq.QuadPart = 0;
    c0 = KeQueryPerformanceCounter(&freq);
    KeStallExecutionProcessor(10);
    c1 = KeQueryPerformanceCounter(NULL);
    CHECK(freq.QuadPart > 0, "KeQueryPerformanceCounter frequency");
    CHECK(c1.QuadPart > c0.QuadPart, "KeQueryPerformanceCounter increases");
}

static void IcaTestInterlocked(PICA_SELFTEST_RESULT r)
{
    volatile LONG v = 5;

    CHECK(InterlockedIncrement(&v) == 6 && v == 6, "InterlockedIncrement");
    CHECK(InterlockedDecrement(&v) == 5 && v == 5, "InterlockedDecrement");
    CHECK(InterlockedCompareExchange(&v, 9, 4) == 5 && v == 5, "InterlockedCompareExchange miss");
    CHECK(InterlockedCompareExchange(&v, 9, 5) == 5 && v == 9, "InterlockedCompareExchange hit");
    CHECK(InterlockedExchange(&v, -3) == 9 && v == -3, "InterlockedExchange");
    CHECK(InterlockedExchangeAdd(&v, 10) == -3 && v == 7, "InterlockedExchangeAdd");
    /* Compiler intrinsics (lock-prefixed instructions) on both architectures. */
    CHECK(_InterlockedIncrement(&v) == 8, "_InterlockedIncrement");
    CHECK(_InterlockedDecrement(&v) == 7, "_InterlockedDecrement");
    CHECK(_InterlockedCompareExchange(&v, 1, 7) == 7 && v == 1, "_InterlockedCompareExchange");
    CHECK(_InterlockedExchange(&v, 2) == 1 && v == 2, "_InterlockedExchange");
}

#define ICA_LOOKASIDE_TAG 0x6B4C6349UL /* 'IcLk' */
#define ICA_LOOKASIDE_SIZE 40

/* A driver's own Allocate/Free routines for a lookaside list: counted. */
static LONG IcaLookasideAllocs, IcaLookasideFrees;

static PVOID NTAPI IcaLookasideAllocate(POOL_TYPE PoolType, SIZE_T Size, ULONG Tag)
{
    IcaLookasideAllocs++;
    return ExAllocatePoolWithTag(PoolType, Size, Tag);
}

static VOID NTAPI IcaLookasideFree(PVOID Buffer)
{
    IcaLookasideFrees++;
    ExFreePoolWithTag(Buffer, ICA_LOOKASIDE_TAG);
}

/*
 * Nonpaged lookaside lists: allocation and free are the header's inline code
 * (InterlockedPop/PushEntrySList, ExQueryDepthSList and the list's Allocate
 * and Free routines), so the list head must be what Windows makes of it.
 */
static void IcaTestLookaside(PICA_SELFTEST_RESULT r)
{
    NPAGED_LOOKASIDE_LIST list;
    PVOID p[6], q;
    ULONG i, cached;
    BOOLEAN ok = TRUE;

    ExInitializeNPagedLookasideList(&list, NULL, NULL, 0, ICA_LOOKASIDE_SIZE, ICA_LOOKASIDE_TAG, 0);
    CHECK(list.L.Tag == ICA_LOOKASIDE_TAG && list.L.Size == ICA_LOOKASIDE_SIZE &&
              list.L.Type == NonPagedPool,
          "ExInitializeNPagedLookasideList Tag/Size/Type");
    CHECK(list.L.Allocate != NULL && list.L.Free != NULL, "lookaside default Allocate/Free");
    CHECK(list.L.Depth >= 1 && list.L.MaximumDepth >= list.L.Depth &&
              ExQueryDepthSList(&list.L.ListHead) == 0,
          "lookaside depth, empty list");
    CHECK(list.L.TotalAllocates == 0 && list.L.AllocateMisses == 0 && list.L.TotalFrees == 0 &&
              list.L.FreeMisses == 0,
          "lookaside counters start at zero");
    for (i = 0; i < 6; i++) {
        p[i] = ExAllocateFromNPagedLookasideList(&list);
        ok = ok && p[i] != NULL && ((ULONG_PTR)p[i] & (MEMORY_ALLOCATION_ALIGNMENT - 1)) == 0;
        if (p[i])
            RtlFillMemory(p[i], ICA_LOOKASIDE_SIZE, (UCHAR)(0x30 + i));
    }
    CHECK(ok && p[0] != p[1], "ExAllocateFromNPagedLookasideList (misses allocate)");
    CHECK(list.L.TotalAllocates == 6 && list.L.AllocateMisses == 6, "lookaside miss counters");
    for (i = 0; ok && i < 6; i++)
        ExFreeToNPagedLookasideList(&list, p[i]);
    cached = ExQueryDepthSList(&list.L.ListHead);
    CHECK(list.L.TotalFrees == 6 && cached == (list.L.Depth < 6 ? list.L.Depth : 6) &&
              list.L.FreeMisses == 6 - cached,
          "ExFreeToNPagedLookasideList caches up to Depth");
    q = ExAllocateFromNPagedLookasideList(&list);
    CHECK(cached != 0 && q == p[cached - 1] && list.L.TotalAllocates == 7 &&
              list.L.AllocateMisses == 6,
          "lookaside hit returns the last freed entry");
    if (q)
        ExFreeToNPagedLookasideList(&list, q);
    ExDeleteNPagedLookasideList(&list);

    /* The driver's own routines: misses and overflow go to them, delete frees the cache. */
    IcaLookasideAllocs = IcaLookasideFrees = 0;
    ExInitializeNPagedLookasideList(&list, IcaLookasideAllocate, IcaLookasideFree, 0,
                                    ICA_LOOKASIDE_SIZE, ICA_LOOKASIDE_TAG, 0);
    CHECK(list.L.Allocate == IcaLookasideAllocate && list.L.Free == IcaLookasideFree,
          "lookaside with the driver's Allocate/Free");
    p[0] = ExAllocateFromNPagedLookasideList(&list);
    p[1] = ExAllocateFromNPagedLookasideList(&list);
    CHECK(p[0] && p[1] && IcaLookasideAllocs == 2, "lookaside miss calls the driver's Allocate");
    if (p[0] && p[1]) {
        ExFreeToNPagedLookasideList(&list, p[0]);
        ExFreeToNPagedLookasideList(&list, p[1]);
    }
    cached = ExQueryDepthSList(&list.L.ListHead);
    CHECK(cached == 2 && IcaLookasideFrees == 0, "lookaside caches without calling Free");
    ExDeleteNPagedLookasideList(&list);
    CHECK(IcaLookasideFrees == 2, "ExDeleteNPagedLookasideList frees the cached entries");
}

static void IcaTestProcess(PICA_SELFTEST_RESULT r)
{
    CHECK(IoGetCurrentProcess() != NULL, "IoGetCurrentProcess");
    CHECK(PsGetCurrentProcessId() != NULL, "PsGetCurrentProcessId");
}

/*
 * IRPs the driver builds itself, sent to its own device: a threaded IRP from
 * IoBuildDeviceIoControlRequest (the I/O manager copies the output back, fills
 * the IO_STATUS_BLOCK, signals the event and frees the IRP), and one from
 * IoAllocateIrp that the driver reclaims in its completion routine and frees.
 */
static void IcaTestDriverIrps(PICA_SELFTEST_RESULT r, PDEVICE_OBJECT self)
{
    KEVENT event;
    IO_STATUS_BLOCK iosb;
    CHAR in[4] = { 'w', 'x', 'y', 'z' };
    CHAR out[4] = { 0 };
    PIO_STACK_LOCATION next;
    NTSTATUS status;
    PIRP irp;

    KeInitializeEvent(&event, NotificationEvent, FALSE);
    iosb.Status = STATUS_UNSUCCESSFUL;
    iosb.Information = 0;
    irp = IoBuildDeviceIoControlRequest(IOCTL_ICA_REVERSE, self, in, sizeof(in), out,
                                        sizeof(out), FALSE, &event, &iosb);
    CHECK(irp != NULL, "IoBuildDeviceIoControlRequest");
    if (irp != NULL) {
        status = IoCallDriver(self, irp);
        if (status == STATUS_PENDING)
            KeWaitForSingleObject(&event, Executive, KernelMode, FALSE, NULL);
        CHECK(KeReadStateEvent(&event) != 0, "IoBuildDeviceIoControlRequest event");
        CHECK(iosb.Status == STATUS_SUCCESS && iosb.Information == 4,
              "IoBuildDeviceIoControlRequest status block");
        CHECK(memcmp(out, "zyxw", 4) == 0, "IoBuildDeviceIoControlRequest output");
    }

    KeInitializeEvent(&event, NotificationEvent, FALSE);
    irp = IoAllocateIrp(self->StackSize, FALSE);
    CHECK(irp != NULL, "IoAllocateIrp");
    if (irp == NULL)
        return;
    RtlCopyMemory(out, "abcd", 4);
    irp->AssociatedIrp.SystemBuffer = out;
    irp->IoStatus.Status = STATUS_NOT_SUPPORTED;
    next = IoGetNextIrpStackLocation(irp);
    next->MajorFunction = IRP_MJ_DEVICE_CONTROL;
    next->Parameters.DeviceIoControl.IoControlCode = IOCTL_ICA_REVERSE;
    next->Parameters.DeviceIoControl.InputBufferLength = 4;
    next->Parameters.DeviceIoControl.OutputBufferLength = 4;
    IoSetCompletionRoutine(irp, IcaSetEventCompletion, &event, TRUE, TRUE, TRUE);
    status = IoCallDriver(self, irp);
    if (status == STATUS_PENDING)
        KeWaitForSingleObject(&event, Executive, KernelMode, FALSE, NULL);
    CHECK(KeReadStateEvent(&event) != 0, "IoAllocateIrp completion routine");
    CHECK(irp->IoStatus.Status == STATUS_SUCCESS && irp->IoStatus.Information == 4 &&
          memcmp(out, "dcba", 4) == 0, "IoAllocateIrp result");
    IoFreeIrp(irp);
}

/*
 * Kernel timers.  A DPC counts its runs and signals an event once it has run
 * Target times; every wait has a timeout so a timer that never fires is a
 * failed check, not a hang.  Due times are a few milliseconds.
 */
typedef struct _ICA_TIMER_CONTEXT {
    KEVENT Done;
    volatile LONG Count;
    LONG Target;
    KIRQL Irql;          /* IRQL the DPC ran at */
} ICA_TIMER_CONTEXT, *PICA_TIMER_CONTEXT;

static VOID NTAPI IcaTimerDpc(PKDPC Dpc, PVOID Context, PVOID Arg1, PVOID Arg2)
{
    PICA_TIMER_CONTEXT ctx = Context;

    UNREFERENCED_PARAMETER(Dpc);
    UNREFERENCED_PARAMETER(Arg1);
    UNREFERENCED_PARAMETER(Arg2);
    ctx->Irql = KeGetCurrentIrql();
    if (InterlockedIncrement(&ctx->Count) == ctx->Target)
        KeSetEvent(&ctx->Done, IO_NO_INCREMENT, FALSE);
}

static void IcaTimerContext(PICA_TIMER_CONTEXT ctx, LONG target)
{
    KeInitializeEvent(&ctx->Done, NotificationEvent, FALSE);
    ctx->Count = 0;
    ctx->Target = target;
    ctx->Irql = HIGH_LEVEL;
}

static void IcaTestTimers(PICA_SELFTEST_RESULT r)
{
    ICA_TIMER_CONTEXT ctx;
    KTIMER timer;
    KDPC dpc;
    LARGE_INTEGER due, timeout, zero, now;
    NTSTATUS st;

    timeout.QuadPart = -2000 * 10000LL; /* 2 s: only reached if a timer is lost */
    zero.QuadPart = 0;
    KeInitializeDpc(&dpc, IcaTimerDpc, &ctx);

    KeInitializeTimer(&timer);
    CHECK(!KeReadStateTimer(&timer), "KeInitializeTimer not signaled");
    CHECK(!KeCancelTimer(&timer), "KeCancelTimer unset timer");

    /* One-shot, relative, with a DPC. */
    IcaTimerContext(&ctx, 1);
    due.QuadPart = -2 * 10000LL; /* 2 ms */
    CHECK(!KeSetTimer(&timer, due, &dpc), "KeSetTimer not yet set");
    st = KeWaitForSingleObject(&ctx.Done, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS && ctx.Count == 1, "KeSetTimer DPC fires");
    CHECK(ctx.Irql == DISPATCH_LEVEL, "timer DPC runs at DISPATCH_LEVEL");
    CHECK(KeReadStateTimer(&timer), "KeReadStateTimer after expiry");
    CHECK(!KeCancelTimer(&timer), "KeCancelTimer after expiry");

    /* Re-setting an armed timer re-arms it (TRUE: it was in the queue). */
    IcaTimerContext(&ctx, 1);
    due.QuadPart = -10000 * 10000LL; /* 10 s */
    CHECK(!KeSetTimer(&timer, due, NULL), "KeSetTimer long");
    CHECK(!KeReadStateTimer(&timer), "KeSetTimer clears the signal state");
    due.QuadPart = -1 * 10000LL;
    CHECK(KeSetTimer(&timer, due, &dpc), "KeSetTimer re-arm returns TRUE");
    st = KeWaitForSingleObject(&ctx.Done, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS && ctx.Count == 1, "re-armed timer fires with the new DPC");

    /* Periodic: at least three expirations, then cancel. */
    IcaTimerContext(&ctx, 3);
    KeInitializeTimerEx(&timer, NotificationTimer);
    due.QuadPart = -1 * 10000LL;
    CHECK(!KeSetTimerEx(&timer, due, 2, &dpc), "KeSetTimerEx periodic");
    st = KeWaitForSingleObject(&ctx.Done, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS && ctx.Count >= 3, "KeSetTimerEx fires periodically");
    CHECK(KeCancelTimer(&timer), "KeCancelTimer periodic returns TRUE");
    CHECK(!KeCancelTimer(&timer), "KeCancelTimer twice returns FALSE");

    /* Waiting on the timer itself: a notification timer stays signaled,
     * the wait without timeout is satisfied by the timer firing. */
    KeInitializeTimer(&timer);
    due.QuadPart = -3 * 10000LL;
    KeSetTimer(&timer, due, NULL);
    st = KeWaitForSingleObject(&timer, Executive, KernelMode, FALSE, NULL);
    CHECK(st == STATUS_SUCCESS, "KeWaitForSingleObject notification timer");
    CHECK(KeReadStateTimer(&timer), "notification timer stays signaled");
    st = KeWaitForSingleObject(&timer, Executive, KernelMode, FALSE, &zero);
    CHECK(st == STATUS_SUCCESS, "notification timer satisfies a second wait");

    /* A synchronization timer is reset by the wait it satisfies. */
    KeInitializeTimerEx(&timer, SynchronizationTimer);
    due.QuadPart = -2 * 10000LL;
    KeSetTimer(&timer, due, NULL);
    st = KeWaitForSingleObject(&timer, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS, "KeWaitForSingleObject synchronization timer");
    CHECK(!KeReadStateTimer(&timer), "synchronization timer auto-reset");

    /* A wait shorter than the due time times out; the timer stays armed. */
    KeInitializeTimer(&timer);
    due.QuadPart = -10000 * 10000LL;
    KeSetTimer(&timer, due, NULL);
    due.QuadPart = -3 * 10000LL;
    st = KeWaitForSingleObject(&timer, Executive, KernelMode, FALSE, &due);
    CHECK(st == STATUS_TIMEOUT, "wait on a later timer times out");
    CHECK(KeCancelTimer(&timer), "KeCancelTimer armed timer");

    /* Absolute due time (system time). */
    KeQuerySystemTime(&now);
    due.QuadPart = now.QuadPart + 2 * 10000LL;
    KeSetTimer(&timer, due, NULL);
    st = KeWaitForSingleObject(&timer, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS, "KeSetTimer absolute due time");

    /* Never leave a timer armed in a stack frame that is about to go away. */
    KeCancelTimer(&timer);
}

/*
 * Work items.  The routine runs at PASSIVE_LEVEL on a worker "thread" while
 * the test waits for its event; the IO work item's routine also queues an
 * executive work item, which must run too.
 */
typedef struct _ICA_WORK_CONTEXT {
    KEVENT Done;
    KEVENT ExDone;
    PDEVICE_OBJECT Device;   /* DeviceObject the routine was given */
    KIRQL Irql;              /* IRQL the IO work item routine ran at */
    KIRQL ExIrql;            /* IRQL the executive work item routine ran at */
    LONG Runs;
    LONG ExRuns;
    PVOID ExParameter;
    WORK_QUEUE_ITEM ExItem;
} ICA_WORK_CONTEXT, *PICA_WORK_CONTEXT;

static VOID NTAPI IcaExWorker(PVOID Parameter)
{
    PICA_WORK_CONTEXT ctx = Parameter;

    ctx->ExParameter = Parameter;
    ctx->ExRuns++;
    ctx->ExIrql = KeGetCurrentIrql();
    KeSetEvent(&ctx->ExDone, IO_NO_INCREMENT, FALSE);
}

static VOID NTAPI IcaIoWorker(PDEVICE_OBJECT DeviceObject, PVOID Context)
{
    PICA_WORK_CONTEXT ctx = Context;

    ctx->Device = DeviceObject;
    ctx->Irql = KeGetCurrentIrql();
    ctx->Runs++;
    KeSetEvent(&ctx->Done, IO_NO_INCREMENT, FALSE);
}

static VOID NTAPI IcaIoWorkerQueuesEx(PDEVICE_OBJECT DeviceObject, PVOID Context)
{
    PICA_WORK_CONTEXT ctx = Context;

    IcaIoWorker(DeviceObject, Context);
    ExInitializeWorkItem(&ctx->ExItem, IcaExWorker, ctx);
    ExQueueWorkItem(&ctx->ExItem, DelayedWorkQueue);
}

static void IcaWorkContext(PICA_WORK_CONTEXT ctx)
{
    KeInitializeEvent(&ctx->Done, NotificationEvent, FALSE);
    KeInitializeEvent(&ctx->ExDone, NotificationEvent, FALSE);
    ctx->Device = NULL;
    ctx->Irql = HIGH_LEVEL;
    ctx->ExIrql = HIGH_LEVEL;
    ctx->Runs = 0;
    ctx->ExRuns = 0;
    ctx->ExParameter = NULL;
}

static void IcaTestWorkItems(PICA_SELFTEST_RESULT r, PDEVICE_OBJECT self)
{
    ICA_WORK_CONTEXT ctx;
    PIO_WORKITEM item;
    LARGE_INTEGER timeout;
    NTSTATUS st;
    ULONG size;

    timeout.QuadPart = -2000 * 10000LL;

    /* IoAllocateWorkItem + IoQueueWorkItem; the wait (no timeout) runs it. */
    IcaWorkContext(&ctx);
    item = IoAllocateWorkItem(self);
    CHECK(item != NULL, "IoAllocateWorkItem");
    if (item != NULL) {
        IoQueueWorkItem(item, IcaIoWorker, DelayedWorkQueue, &ctx);
        st = KeWaitForSingleObject(&ctx.Done, Executive, KernelMode, FALSE, NULL);
        CHECK(st == STATUS_SUCCESS && ctx.Runs == 1, "IoQueueWorkItem runs");
        CHECK(ctx.Device == self, "IoQueueWorkItem routine gets the device object");
        CHECK(ctx.Irql == PASSIVE_LEVEL, "work item runs at PASSIVE_LEVEL");

        /* The same item again; its routine queues an executive work item. */
        IcaWorkContext(&ctx);
        IoQueueWorkItem(item, IcaIoWorkerQueuesEx, CriticalWorkQueue, &ctx);
        st = KeWaitForSingleObject(&ctx.ExDone, Executive, KernelMode, FALSE, &timeout);
        CHECK(st == STATUS_SUCCESS && ctx.Runs == 1 && ctx.ExRuns == 1,
              "work item queued by a work item runs");
        IoFreeWorkItem(item);
    }

    /* ExQueueWorkItem from here. */
    IcaWorkContext(&ctx);
    ExInitializeWorkItem(&ctx.ExItem, IcaExWorker, &ctx);
    ExQueueWorkItem(&ctx.ExItem, DelayedWorkQueue);
    st = KeWaitForSingleObject(&ctx.ExDone, Executive, KernelMode, FALSE, NULL);
    CHECK(st == STATUS_SUCCESS && ctx.ExRuns == 1 && ctx.ExParameter == &ctx,
          "ExQueueWorkItem runs with its parameter");
    CHECK(ctx.ExIrql == PASSIVE_LEVEL, "ExQueueWorkItem routine at PASSIVE_LEVEL");

    /* A driver-allocated IO_WORKITEM (IoSizeofWorkItem / IoInitializeWorkItem). */
    size = IoSizeofWorkItem();
    CHECK(size >= sizeof(WORK_QUEUE_ITEM), "IoSizeofWorkItem");
    item = ExAllocatePoolWithTag(NonPagedPool, size, ICA_IOCTL_TAG);
    CHECK(item != NULL, "IoSizeofWorkItem allocation");
    if (item != NULL) {
        IcaWorkContext(&ctx);
        IoInitializeWorkItem(self, item);
        IoQueueWorkItem(item, IcaIoWorker, DelayedWorkQueue, &ctx);
        st = KeWaitForSingleObject(&ctx.Done, Executive, KernelMode, FALSE, &timeout);
        CHECK(st == STATUS_SUCCESS && ctx.Runs == 1 && ctx.Device == self,
              "IoInitializeWorkItem item runs");
        IoUninitializeWorkItem(item);
        ExFreePoolWithTag(item, ICA_IOCTL_TAG);
    }
}

typedef struct _ICA_EX_TIMER_CONTEXT {
    volatile LONG Count;
    KIRQL Irql;
    PEX_TIMER Timer;
    KEVENT Done;     /* set at the third expiration */
    KEVENT Deleted;  /* set by the delete callback */
} ICA_EX_TIMER_CONTEXT;

static VOID NTAPI IcaExTimerCallback(PEX_TIMER Timer, PVOID Context)
{
    ICA_EX_TIMER_CONTEXT *ctx = Context;

    ctx->Irql = KeGetCurrentIrql();
    ctx->Timer = Timer;
    if (InterlockedIncrement(&ctx->Count) == 3)
        KeSetEvent(&ctx->Done, 0, FALSE);
}

static VOID NTAPI IcaExTimerDeleted(PVOID Context)
{
    KeSetEvent(&((ICA_EX_TIMER_CONTEXT *)Context)->Deleted, 0, FALSE);
}

static VOID NTAPI IcaNopDpc(PKDPC Dpc, PVOID Context, PVOID A1, PVOID A2)
{
    UNREFERENCED_PARAMETER(Dpc);
    UNREFERENCED_PARAMETER(A1);
    UNREFERENCED_PARAMETER(A2);
    *(volatile LONG *)Context += 1;
}

/* Windows 7..10 kernel APIs: EX_TIMER, driver registry keys, processor numbers, DPC
 * importance and target, floating-point state, and the x86 data/hal entry points. */
static void IcaTestNewerKernelApis(PICA_SELFTEST_RESULT r, PDEVICE_OBJECT self)
{
    ICA_EX_TIMER_CONTEXT ctx;
    EXT_DELETE_PARAMETERS del;
    PEX_TIMER timer;
    LARGE_INTEGER timeout;
    PROCESSOR_NUMBER pn;
    KFLOATING_SAVE outer, inner;
    KDPC dpc;
    LONG dpcRuns = 0;
    HANDLE key;
    NTSTATUS st;
    UNICODE_STRING name;
    ULONG value = 0x1CA, got[8], len = 0;

    /* EX_TIMER: periodic, high resolution, 2 ms; fires at DISPATCH_LEVEL; cancelled. */
    RtlZeroMemory(&ctx, sizeof(ctx));
    KeInitializeEvent(&ctx.Done, NotificationEvent, FALSE);
    KeInitializeEvent(&ctx.Deleted, NotificationEvent, FALSE);
    CHECK(ExAllocateTimer(IcaExTimerCallback, &ctx, 0x100) == NULL,
          "ExAllocateTimer rejects unknown attributes");
    timer = ExAllocateTimer(IcaExTimerCallback, &ctx, EX_TIMER_HIGH_RESOLUTION);
    CHECK(timer != NULL, "ExAllocateTimer");
    if (timer != NULL) {
        timeout.QuadPart = -2000 * 10000LL;
        CHECK(!ExCancelTimer(timer, NULL), "ExCancelTimer on a timer never set");
        CHECK(!ExSetTimer(timer, -60 * 10000000LL, 0, NULL), "ExSetTimer first set is FALSE");
        CHECK(ExSetTimer(timer, -2 * 10000LL, 2 * 10000LL, NULL), "ExSetTimer re-set is TRUE");
        st = KeWaitForSingleObject(&ctx.Done, Executive, KernelMode, FALSE, &timeout);
        CHECK(st == STATUS_SUCCESS && ctx.Count >= 3, "EX_TIMER periodic callback fires 3 times");
        CHECK(ctx.Irql == DISPATCH_LEVEL && ctx.Timer == timer,
              "EX_TIMER callback at DISPATCH_LEVEL with its timer");
        CHECK(ExCancelTimer(timer, NULL), "ExCancelTimer periodic timer was set");
        len = ctx.Count;
        timeout.QuadPart = -10 * 10000LL;
        KeDelayExecutionThread(KernelMode, FALSE, &timeout);
        CHECK(ctx.Count == (LONG)len, "no EX_TIMER callback after ExCancelTimer");
        CHECK(!ExSetTimer(timer, -60 * 10000000LL, 0, NULL), "ExSetTimer after cancel is FALSE");
        del.Version = 0;
        del.Reserved = 0;
        del.DeleteCallback = IcaExTimerDeleted;
        del.DeleteContext = &ctx;
        CHECK(ExDeleteTimer(timer, TRUE, TRUE, &del), "ExDeleteTimer cancels a set timer");
        CHECK(KeReadStateEvent(&ctx.Deleted), "ExDeleteTimer calls the delete callback");
    }

    /* IoOpenDriverRegistryKey: Parameters and State keys are created and hold values. */
    key = NULL;
    st = IoOpenDriverRegistryKey(self->DriverObject, ICA_DRIVER_REGKEY_PERSISTENT_STATE,
                                 KEY_ALL_ACCESS, 0, &key);
    CHECK(st == STATUS_SUCCESS && key != NULL, "IoOpenDriverRegistryKey PersistentState");
    if (NT_SUCCESS(st)) {
        RtlInitUnicodeString(&name, L"IcaState");
        st = ZwSetValueKey(key, &name, 0, REG_DWORD, &value, sizeof(value));
        CHECK(st == STATUS_SUCCESS, "ZwSetValueKey in the State key");
        ZwClose(key);
        st = IoOpenDriverRegistryKey(self->DriverObject, ICA_DRIVER_REGKEY_PERSISTENT_STATE,
                                     KEY_READ, 0, &key);
        CHECK(st == STATUS_SUCCESS, "IoOpenDriverRegistryKey reopens State");
        if (NT_SUCCESS(st)) {
            st = ZwQueryValueKey(key, &name, KeyValuePartialInformation, got, sizeof(got), &len);
            CHECK(st == STATUS_SUCCESS &&
                      ((PKEY_VALUE_PARTIAL_INFORMATION)got)->Type == REG_DWORD &&
                      *(PULONG)((PKEY_VALUE_PARTIAL_INFORMATION)got)->Data == 0x1CA,
                  "State key value reads back");
            ZwClose(key);
        }
    }
    st = IoOpenDriverRegistryKey(self->DriverObject, ICA_DRIVER_REGKEY_PARAMETERS, KEY_READ, 0,
                                 &key);
    CHECK(st == STATUS_SUCCESS, "IoOpenDriverRegistryKey Parameters");
    if (NT_SUCCESS(st))
        ZwClose(key);
    CHECK(IoOpenDriverRegistryKey(self->DriverObject, 7, KEY_READ, 0, &key) ==
              STATUS_INVALID_PARAMETER,
          "IoOpenDriverRegistryKey unknown type");
    CHECK(IoOpenDriverRegistryKey(self->DriverObject, ICA_DRIVER_REGKEY_PARAMETERS, KEY_READ, 1,
                                  &key) == STATUS_INVALID_PARAMETER,
          "IoOpenDriverRegistryKey reserved flags");

    /* Processors: one, in group 0. */
    CHECK(KeQueryActiveProcessorCountEx(0) == 1 &&
              KeQueryActiveProcessorCountEx(ALL_PROCESSOR_GROUPS) == 1 &&
              KeQueryActiveProcessorCountEx(1) == 0,
          "KeQueryActiveProcessorCountEx");
    pn.Group = 7;
    pn.Number = 7;
    pn.Reserved = 7;
    CHECK(KeGetCurrentProcessorNumberEx(&pn) == 0 && pn.Group == 0 && pn.Number == 0 &&
              pn.Reserved == 0,
          "KeGetCurrentProcessorNumberEx");
    CHECK(KeGetCurrentProcessorNumberEx(NULL) == 0, "KeGetCurrentProcessorNumberEx(NULL)");

    /* DPC importance and target processor. */
    KeInitializeDpc(&dpc, IcaNopDpc, &dpcRuns);
    KeSetImportanceDpc(&dpc, HighImportance);
    CHECK(dpc.Importance == HighImportance, "KeSetImportanceDpc");
    KeSetTargetProcessorDpc(&dpc, 0);
    pn.Group = 0;
    pn.Number = 0;
    pn.Reserved = 0;
    CHECK(KeSetTargetProcessorDpcEx(&dpc, &pn) == STATUS_SUCCESS, "KeSetTargetProcessorDpcEx 0");
    pn.Number = 5;
    CHECK(KeSetTargetProcessorDpcEx(&dpc, &pn) == STATUS_INVALID_PARAMETER,
          "KeSetTargetProcessorDpcEx rejects a processor that does not exist");
    CHECK(KeInsertQueueDpc(&dpc, NULL, NULL) && dpcRuns == 1, "targeted DPC runs");

    /* Fast mutex: APC_LEVEL while held, not recursive, back to the caller's IRQL. */
    {
        FAST_MUTEX fm;

        ExInitializeFastMutex(&fm);
        ExAcquireFastMutex(&fm);
        CHECK(KeGetCurrentIrql() == APC_LEVEL, "ExAcquireFastMutex raises to APC_LEVEL");
        CHECK(!ExTryToAcquireFastMutex(&fm), "ExTryToAcquireFastMutex on a held mutex");
        ExReleaseFastMutex(&fm);
        CHECK(KeGetCurrentIrql() == PASSIVE_LEVEL && fm.Owner == NULL,
              "ExReleaseFastMutex restores the IRQL");
        CHECK(ExTryToAcquireFastMutex(&fm) && fm.Owner != NULL,
              "ExTryToAcquireFastMutex on a free mutex");
        ExReleaseFastMutex(&fm);
    }

    /* Floating-point state: nested pairs. */
    CHECK(KeSaveFloatingPointState(&outer) == STATUS_SUCCESS, "KeSaveFloatingPointState");
    CHECK(KeSaveFloatingPointState(&inner) == STATUS_SUCCESS, "KeSaveFloatingPointState nested");
    CHECK(KeRestoreFloatingPointState(&inner) == STATUS_SUCCESS,
          "KeRestoreFloatingPointState nested");
    CHECK(KeRestoreFloatingPointState(&outer) == STATUS_SUCCESS, "KeRestoreFloatingPointState");

#ifdef _X86_
    {
        LARGE_INTEGER t0, t1, big;
        KSPIN_LOCK lock;
        KIRQL old;
        ULONG i;

        /* KeQueryTickCount is a macro reading the KeTickCount data export. */
        KeQueryTickCount(&t0);
        t1 = t0;
        for (i = 0; i < 100 && t1.QuadPart == t0.QuadPart; i++) {
            KeStallExecutionProcessor(5000);
            KeQueryTickCount(&t1);
        }
        CHECK(t1.QuadPart > t0.QuadPart, "KeTickCount advances across KeStallExecutionProcessor");

        big = RtlConvertLongToLargeInteger(-5);
        CHECK(big.QuadPart == -5, "RtlConvertLongToLargeInteger sign-extends");

        KeInitializeSpinLock(&lock);
        KeAcquireSpinLock(&lock, &old);
        IcaHalKeReleaseSpinLock(&lock, old);
        CHECK(KeGetCurrentIrql() == PASSIVE_LEVEL, "hal KeReleaseSpinLock restores the IRQL");
        KeRaiseIrql(DISPATCH_LEVEL, &old);
        IcaHalKeLowerIrql(old);
        CHECK(KeGetCurrentIrql() == PASSIVE_LEVEL, "hal KeLowerIrql");
    }
#endif
}

/* Bitmaps, hashing, rand, byte swaps. */
static void IcaTestBitmapsAndHashes(PICA_SELFTEST_RESULT r)
{
    RTL_BITMAP bm;
    ULONG bits[3];
    UNICODE_STRING u;
    ULONG h = 0, h2 = 0;
    int first;

    bits[0] = bits[1] = 0xFFFFFFFF;
    bits[2] = 0xA5A5A5A5;
    RtlInitializeBitMap(&bm, bits, 70);
    CHECK(bm.SizeOfBitMap == 70 && bm.Buffer == bits && bits[2] == 0xA5A5A5A5,
          "RtlInitializeBitMap leaves the bits");
    RtlClearAllBits(&bm);
    CHECK(bits[0] == 0 && bits[1] == 0 && bits[2] == 0, "RtlClearAllBits clears whole ULONGs");
    RtlSetBit(&bm, 35);
    CHECK(bits[1] == 8 && RtlTestBit(&bm, 35) && !RtlTestBit(&bm, 34), "RtlSetBit/RtlTestBit");
    RtlClearBit(&bm, 35);
    CHECK(bits[1] == 0 && !RtlTestBit(&bm, 35), "RtlClearBit");
    RtlSetBits(&bm, 0, 10);
    CHECK(RtlFindClearBitsAndSet(&bm, 5, 0) == 10 && bits[0] == 0x7FFF,
          "RtlFindClearBitsAndSet from the hint");
    CHECK(RtlFindClearBitsAndSet(&bm, 4, 68) == 15 && bits[0] == 0x7FFFF,
          "RtlFindClearBitsAndSet wraps to the start");
    CHECK(RtlFindClearBits(&bm, 3, 40) == 40 && RtlFindClearBits(&bm, 3, 5) == 19,
          "RtlFindClearBits");
    CHECK(RtlFindClearBits(&bm, 71, 0) == 0xFFFFFFFF && RtlFindClearBits(&bm, 52, 0) == 0xFFFFFFFF,
          "RtlFindClearBits finds no run longer than the clear bits");
    CHECK(RtlNumberOfSetBits(&bm) == 19, "RtlNumberOfSetBits");
    CHECK(RtlAreBitsSet(&bm, 0, 19) && !RtlAreBitsSet(&bm, 0, 20), "RtlAreBitsSet");
    CHECK(RtlAreBitsClear(&bm, 19, 51) && !RtlAreBitsClear(&bm, 19, 52) &&
              !RtlAreBitsClear(&bm, 18, 2),
          "RtlAreBitsClear");
    RtlSetAllBits(&bm);
    CHECK(bits[0] == 0xFFFFFFFF && bits[2] == 0xFFFFFFFF &&
              RtlFindClearBitsAndSet(&bm, 1, 0) == 0xFFFFFFFF,
          "RtlSetAllBits");
    CHECK(RtlFindLeastSignificantBit(0) == -1 && RtlFindLeastSignificantBit(0x50) == 4 &&
              RtlFindLeastSignificantBit(0x8000000000000000ULL) == 63,
          "RtlFindLeastSignificantBit");

    RtlInitUnicodeString(&u, L"Ab");
    CHECK(RtlHashUnicodeString(&u, TRUE, HASH_STRING_ALGORITHM_DEFAULT, &h) == STATUS_SUCCESS &&
              h == 65 * 65599 + 66,
          "RtlHashUnicodeString case-insensitive X65599");
    CHECK(RtlHashUnicodeString(&u, FALSE, HASH_STRING_ALGORITHM_X65599, &h2) == STATUS_SUCCESS &&
              h2 == 65 * 65599 + 98,
          "RtlHashUnicodeString case-sensitive");
    CHECK(RtlHashUnicodeString(&u, FALSE, 2, &h) == STATUS_INVALID_PARAMETER,
          "RtlHashUnicodeString unknown algorithm");

    srand(1);
    first = rand();
    CHECK(first == 41 && rand() == 18467 && rand() == 6334, "rand: the CRT sequence for seed 1");
    srand(1);
    CHECK(rand() == first, "srand restarts the sequence");
#ifdef _X86_
    CHECK((RtlUlongByteSwap)(0x12345678) == 0x78563412 && (RtlUshortByteSwap)(0x1234) == 0x3412,
          "RtlUlongByteSwap/RtlUshortByteSwap (fastcall)");
#endif
}

/* The address identifying ioctl.sys's driver object extension. */
static const char IcaExtensionId = 0;

/* What IcaCancelRoutine saw. */
static struct {
    LONG Calls;
    KIRQL Irql;
    BOOLEAN Cancel;
    PDEVICE_OBJECT Device;
    PDRIVER_CANCEL Routine;
} IcaCancelSeen;

static VOID NTAPI IcaCancelRoutine(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IcaCancelSeen.Calls++;
    IcaCancelSeen.Irql = KeGetCurrentIrql();
    IcaCancelSeen.Cancel = Irp->Cancel;
    IcaCancelSeen.Device = DeviceObject;
    IcaCancelSeen.Routine = Irp->CancelRoutine;
    IoReleaseCancelSpinLock(Irp->CancelIrql);
}

/* IoCancelIrp on an IRP the driver allocated, and the cancel spin lock. */
static void IcaTestCancel(PICA_SELFTEST_RESULT r, PDEVICE_OBJECT self)
{
    PIRP irp = IoAllocateIrp(1, FALSE);
    KIRQL irql;

    CHECK(irp != NULL, "IoAllocateIrp for IoCancelIrp");
    if (irp != NULL) {
        IoSetNextIrpStackLocation(irp);
        IoGetCurrentIrpStackLocation(irp)->DeviceObject = self;
        CHECK(!IoCancelIrp(irp) && irp->Cancel && KeGetCurrentIrql() == PASSIVE_LEVEL,
              "IoCancelIrp without a cancel routine sets Cancel, returns FALSE");
        irp->Cancel = FALSE;
        IoSetCancelRoutine(irp, IcaCancelRoutine);
        CHECK(IoCancelIrp(irp), "IoCancelIrp with a cancel routine returns TRUE");
        CHECK(IcaCancelSeen.Calls == 1 && IcaCancelSeen.Irql == DISPATCH_LEVEL &&
                  IcaCancelSeen.Cancel && IcaCancelSeen.Device == self &&
                  IcaCancelSeen.Routine == NULL && KeGetCurrentIrql() == PASSIVE_LEVEL,
              "the cancel routine ran at DISPATCH_LEVEL holding the lock, Cancel set, routine cleared");
        CHECK(!IoCancelIrp(irp) && IcaCancelSeen.Calls == 1, "a second IoCancelIrp calls nothing");
        IoFreeIrp(irp);
    }
    IoAcquireCancelSpinLock(&irql);
    CHECK(KeGetCurrentIrql() == DISPATCH_LEVEL && irql == PASSIVE_LEVEL,
          "IoAcquireCancelSpinLock raises to DISPATCH_LEVEL");
    IoReleaseCancelSpinLock(irql);
    CHECK(KeGetCurrentIrql() == PASSIVE_LEVEL, "IoReleaseCancelSpinLock restores the IRQL");
}

/* Spin lock try, processors, DPC watchdog, priority, multiple waits, driver extensions. */
static void IcaTestKernelP2(PICA_SELFTEST_RESULT r, PDEVICE_OBJECT self)
{
    KSPIN_LOCK lock;
    KIRQL old;
    PROCESSOR_NUMBER pn;
    KDPC_WATCHDOG_INFORMATION wd;
    KPRIORITY prio;
    KEVENT e1, e2;
    KTIMER timer;
    PVOID objs[4];
    KWAIT_BLOCK blocks[4];
    LARGE_INTEGER zero, timeout;
    PVOID ext, ext2;
    NTSTATUS st;

    KeInitializeSpinLock(&lock);
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    CHECK(KeTryToAcquireSpinLockAtDpcLevel(&lock), "KeTryToAcquireSpinLockAtDpcLevel free lock");
    CHECK(!KeTryToAcquireSpinLockAtDpcLevel(&lock), "KeTryToAcquireSpinLockAtDpcLevel held lock");
    KeReleaseSpinLockFromDpcLevel(&lock);
    RtlFillMemory(&wd, sizeof(wd), 0xCC);
    st = KeQueryDpcWatchdogInformation(&wd);
    CHECK(st == STATUS_SUCCESS && wd.DpcTimeLimit == wd.DpcWatchdogLimit &&
              wd.DpcTimeCount <= wd.DpcTimeLimit && wd.DpcWatchdogCount <= wd.DpcWatchdogLimit &&
              wd.Reserved == 0,
          "KeQueryDpcWatchdogInformation at DISPATCH_LEVEL");
    KeLowerIrql(old);

    pn.Group = 0;
    pn.Number = 0;
    pn.Reserved = 0;
    CHECK(KeGetProcessorIndexFromNumber(&pn) == 0, "KeGetProcessorIndexFromNumber 0");
    pn.Number = 1;
    CHECK(KeGetProcessorIndexFromNumber(&pn) == INVALID_PROCESSOR_INDEX,
          "KeGetProcessorIndexFromNumber no such processor");
    pn.Group = 9;
    pn.Number = 9;
    pn.Reserved = 9;
    CHECK(KeGetProcessorNumberFromIndex(0, &pn) == STATUS_SUCCESS && pn.Group == 0 &&
              pn.Number == 0 && pn.Reserved == 0,
          "KeGetProcessorNumberFromIndex 0");
    CHECK(KeGetProcessorNumberFromIndex(1, &pn) == STATUS_INVALID_PARAMETER,
          "KeGetProcessorNumberFromIndex no such processor");

    prio = KeSetPriorityThread(IcaCurrentThread(), LOW_REALTIME_PRIORITY);
    CHECK(prio > 0 && prio < LOW_REALTIME_PRIORITY, "KeSetPriorityThread returns the old priority");
    CHECK(KeSetPriorityThread(IcaCurrentThread(), prio) == LOW_REALTIME_PRIORITY,
          "KeSetPriorityThread stored the new priority");

    zero.QuadPart = 0;
    KeInitializeEvent(&e1, NotificationEvent, FALSE);
    KeInitializeEvent(&e2, SynchronizationEvent, FALSE);
    objs[0] = &e1;
    objs[1] = &e2;
    st = KeWaitForMultipleObjects(2, objs, WaitAny, Executive, KernelMode, FALSE, &zero, NULL);
    CHECK(st == STATUS_TIMEOUT, "KeWaitForMultipleObjects WaitAny times out");
    KeSetEvent(&e2, 0, FALSE);
    st = KeWaitForMultipleObjects(2, objs, WaitAll, Executive, KernelMode, FALSE, &zero, NULL);
    CHECK(st == STATUS_TIMEOUT && KeReadStateEvent(&e2) != 0,
          "KeWaitForMultipleObjects WaitAll times out and consumes nothing");
    st = KeWaitForMultipleObjects(2, objs, WaitAny, Executive, KernelMode, FALSE, &zero, NULL);
    CHECK(st == STATUS_WAIT_1 && KeReadStateEvent(&e2) == 0,
          "KeWaitForMultipleObjects WaitAny: STATUS_WAIT_1, synchronization event reset");
    KeSetEvent(&e1, 0, FALSE);
    KeSetEvent(&e2, 0, FALSE);
    st = KeWaitForMultipleObjects(2, objs, WaitAll, Executive, KernelMode, FALSE, &zero, NULL);
    CHECK(st == STATUS_SUCCESS && KeReadStateEvent(&e1) != 0 && KeReadStateEvent(&e2) == 0,
          "KeWaitForMultipleObjects WaitAll satisfies every object");
    KeClearEvent(&e1);
    KeInitializeTimer(&timer);
    timeout.QuadPart = -20 * 10000LL;
    KeSetTimer(&timer, timeout, NULL);
    objs[0] = &e1;
    objs[1] = &e2;
    objs[2] = &e2;
    objs[3] = &timer;
    timeout.QuadPart = -2000 * 10000LL;
    st = KeWaitForMultipleObjects(4, objs, WaitAny, Executive, KernelMode, FALSE, &timeout, blocks);
    CHECK(st == STATUS_WAIT_3, "KeWaitForMultipleObjects with a WaitBlockArray: the timer fires");

    ext = NULL;
    st = IoAllocateDriverObjectExtension(self->DriverObject, (PVOID)&IcaExtensionId, 24, &ext);
    CHECK(st == STATUS_SUCCESS && ext != NULL && ((PULONG)ext)[0] == 0 && ((PULONG)ext)[5] == 0,
          "IoAllocateDriverObjectExtension zeroed");
    if (ext != NULL)
        ((PULONG)ext)[0] = 0x1CA;
    CHECK(IoGetDriverObjectExtension(self->DriverObject, (PVOID)&IcaExtensionId) == ext,
          "IoGetDriverObjectExtension");
    ext2 = &ext;
    st = IoAllocateDriverObjectExtension(self->DriverObject, (PVOID)&IcaExtensionId, 8, &ext2);
    CHECK(st == STATUS_OBJECT_NAME_COLLISION && ext2 == NULL,
          "IoAllocateDriverObjectExtension duplicate");
    CHECK(IoGetDriverObjectExtension(self->DriverObject, r) == NULL,
          "IoGetDriverObjectExtension unknown client");
}

static void IcaSelfTest(PICA_SELFTEST_RESULT r, PDEVICE_OBJECT self)
{
    ULONG i;

    r->Passed = 0;
    r->Failed = 0;
    for (i = 0; i < ICA_FAILURE_TEXT_LEN; i++)
        r->FirstFailure[i] = 0;

    IcaTestPoolAndMemory(r);
    IcaTestCrtStrings(r);
    IcaTestRtlStrings(r);
    IcaTestIrqlAndLocks(r);
    IcaTestEvents(r);
    IcaTestTime(r);
    IcaTestInterlocked(r);
    IcaTestLookaside(r);
    IcaTestProcess(r);
    IcaTestDriverIrps(r, self);
    IcaTestTimers(r);
    IcaTestWorkItems(r, self);
    IcaTestNewerKernelApis(r, self);
    IcaTestBitmapsAndHashes(r);
    IcaTestKernelP2(r, self);
    IcaTestCancel(r, self);
    DbgPrint("ioctl: selftest passed %lu failed %lu\n", r->Passed, r->Failed);
}

/* ---------------------------------------------------------------------- */

static NTSTATUS NTAPI IcaDeviceControl(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    ULONG code = stack->Parameters.DeviceIoControl.IoControlCode;
    ULONG inLen = stack->Parameters.DeviceIoControl.InputBufferLength;
    ULONG outLen = stack->Parameters.DeviceIoControl.OutputBufferLength;
    PUCHAR sys = Irp->AssociatedIrp.SystemBuffer;
    PUCHAR mdlBuf;
    ULONG mdlLen, i, count;


    switch (code) {
    case IOCTL_ICA_REVERSE:
        if (outLen < inLen)
            return IcaComplete(Irp, STATUS_BUFFER_TOO_SMALL, 0);
        if (inLen != 0 && sys == NULL)
            return IcaComplete(Irp, STATUS_INVALID_PARAMETER, 0);
        /* Input and output share the system buffer: reverse in place. */
        for (i = 0; i < inLen / 2; i++) {
            UCHAR t = sys[i];
            sys[i] = sys[inLen - 1 - i];
            sys[inLen - 1 - i] = t;
        }
        return IcaComplete(Irp, STATUS_SUCCESS, inLen);

    case IOCTL_ICA_COUNT:
        if (inLen < 1 || sys == NULL || Irp->MdlAddress == NULL)
            return IcaComplete(Irp, STATUS_INVALID_PARAMETER, 0);
        mdlBuf = MmGetSystemAddressForMdlSafe(Irp->MdlAddress, NormalPagePriority);
        if (mdlBuf == NULL)
            return IcaComplete(Irp, STATUS_INSUFFICIENT_RESOURCES, 0);
        mdlLen = MmGetMdlByteCount(Irp->MdlAddress);
        count = 0;
        for (i = 0; i < mdlLen; i++)
            if (mdlBuf[i] == sys[0])
                count++;
        return IcaComplete(Irp, STATUS_SUCCESS, count);

    case IOCTL_ICA_FILL: {
        ULONG seed;

        if (inLen < sizeof(ULONG) || sys == NULL || Irp->MdlAddress == NULL)
            return IcaComplete(Irp, STATUS_INVALID_PARAMETER, 0);
        mdlBuf = MmGetSystemAddressForMdlSafe(Irp->MdlAddress, NormalPagePriority);
        if (mdlBuf == NULL)
            return IcaComplete(Irp, STATUS_INSUFFICIENT_RESOURCES, 0);
        mdlLen = MmGetMdlByteCount(Irp->MdlAddress);
        seed = *(ULONG UNALIGNED *)sys;
        for (i = 0; i < mdlLen; i++)
            mdlBuf[i] = (UCHAR)(seed + i * 7);
        return IcaComplete(Irp, STATUS_SUCCESS, mdlLen);
    }

    case IOCTL_ICA_MULTIPLY: {
        ULONG UNALIGNED *in = stack->Parameters.DeviceIoControl.Type3InputBuffer;
        ULONGLONG UNALIGNED *out = Irp->UserBuffer;

        if (inLen < 2 * sizeof(ULONG) || outLen < sizeof(ULONGLONG) || in == NULL || out == NULL)
            return IcaComplete(Irp, STATUS_INVALID_PARAMETER, 0);
        *out = (ULONGLONG)in[0] * (ULONGLONG)in[1];
        return IcaComplete(Irp, STATUS_SUCCESS, sizeof(ULONGLONG));
    }

    case IOCTL_ICA_SELFTEST:
        if (outLen < sizeof(ICA_SELFTEST_RESULT) || sys == NULL)
            return IcaComplete(Irp, STATUS_BUFFER_TOO_SMALL, 0);
        IcaSelfTest((PICA_SELFTEST_RESULT)sys, DeviceObject);
        return IcaComplete(Irp, STATUS_SUCCESS, sizeof(ICA_SELFTEST_RESULT));

    default:
        return IcaComplete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
}

static VOID NTAPI IcaUnload(PDRIVER_OBJECT DriverObject)
{
    UNICODE_STRING link;
    PDEVICE_OBJECT dev = DriverObject->DeviceObject;

    DbgPrint("ioctl: DriverUnload\n");
    RtlInitUnicodeString(&link, L"\\DosDevices\\IcaIoctl");
    IoDeleteSymbolicLink(&link);
    if (dev != NULL) {
        PICA_IOCTL_EXTENSION ext = dev->DeviceExtension;

        if (ext->Scratch != NULL)
            ExFreePoolWithTag(ext->Scratch, ICA_IOCTL_TAG);
        ext->Scratch = NULL;
        IoDeleteDevice(dev);
    }
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    UNICODE_STRING name, link;
    PDEVICE_OBJECT dev;
    PICA_IOCTL_EXTENSION ext;
    NTSTATUS status;

    UNREFERENCED_PARAMETER(RegistryPath);
    DbgPrint("ioctl: DriverEntry\n");

    RtlInitUnicodeString(&name, L"\\Device\\IcaIoctl");
    status = IoCreateDevice(DriverObject, sizeof(ICA_IOCTL_EXTENSION), &name,
                            FILE_DEVICE_UNKNOWN, 0, FALSE, &dev);
    if (!NT_SUCCESS(status))
        return status;

    ext = dev->DeviceExtension;
    RtlZeroMemory(ext, sizeof(*ext));
    KeInitializeSpinLock(&ext->Lock);
    ext->Scratch = ExAllocatePoolWithTag(NonPagedPool, ICA_SCRATCH_SIZE, ICA_IOCTL_TAG);
    if (ext->Scratch == NULL) {
        IoDeleteDevice(dev);
        return STATUS_INSUFFICIENT_RESOURCES;
    }

    RtlInitUnicodeString(&link, L"\\DosDevices\\IcaIoctl");
    status = IoCreateSymbolicLink(&link, &name);
    if (!NT_SUCCESS(status)) {
        ExFreePoolWithTag(ext->Scratch, ICA_IOCTL_TAG);
        IoDeleteDevice(dev);
        return status;
    }

    dev->Flags |= DO_BUFFERED_IO;
    dev->Flags &= ~DO_DEVICE_INITIALIZING;

    DriverObject->MajorFunction[IRP_MJ_CREATE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLEANUP] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_READ] = IcaRead;
    DriverObject->MajorFunction[IRP_MJ_WRITE] = IcaWrite;
    DriverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = IcaDeviceControl;
    DriverObject->DriverUnload = IcaUnload;
    return STATUS_SUCCESS;
}
