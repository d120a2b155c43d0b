/*
 * sins.sys - a legacy test driver that misbehaves on purpose, one sin per
 * IOCTL, for ICA's verifier (Driver Verifier's checks).
 *
 * \Device\IcaSins (symlink \DosDevices\IcaSins), buffered I/O.  Each sin is
 * committed by its own exported, never inlined function, so the guest call
 * site the verifier reports resolves to that function's name through the
 * image's export table:
 *
 *   IOCTL_ICA_SIN_WAIT_AT_DISPATCH     SinWaitAtDispatch: KeWaitForSingleObject with a
 *                                      10 ms timeout at DISPATCH_LEVEL
 *   IOCTL_ICA_SIN_PASSIVE_AT_DISPATCH  SinPassiveAtDispatch: ZwClose (PASSIVE_LEVEL only)
 *                                      under a spin lock
 *   IOCTL_ICA_SIN_RELEASE_NOT_HELD     SinReleaseNotHeld: releases a spin lock nobody holds
 *   IOCTL_ICA_SIN_ACQUIRE_TWICE        SinAcquireTwice: acquires the spin lock it holds
 *   IOCTL_ICA_SIN_RETURN_HOLDING_LOCK  SinReturnHoldingLock: acquires a spin lock and
 *                                      returns, so the dispatch routine returns with it
 *   IOCTL_ICA_SIN_OVERRUN              SinOverrun: writes 4 bytes past a 20-byte block,
 *                                      then frees it
 *   IOCTL_ICA_SIN_UNDERRUN             SinUnderrun: writes the 4 bytes before a block,
 *                                      then frees it
 *   IOCTL_ICA_SIN_OVERRUN_PAGE         SinOverrunPage: reads 64 bytes past the end of a
 *                                      block (the next page)
 *   IOCTL_ICA_SIN_USE_AFTER_FREE       SinUseAfterFree: reads a block after freeing it
 *   IOCTL_ICA_SIN_DOUBLE_FREE          SinDoubleFree: frees a block twice
 *   IOCTL_ICA_SIN_LEAK_POOL            SinLeakPool: a 100-byte block, tag 'Leak', never
 *                                      freed
 *   IOCTL_ICA_SIN_LEAK_IRP             SinLeakIrp: IoAllocateIrp, never freed
 *   IOCTL_ICA_SIN_LEAK_MDL             SinLeakMdl: IoAllocateMdl, never freed
 *   IOCTL_ICA_SIN_LEAK_REFERENCE       SinLeakReference: IoGetAttachedDeviceReference,
 *                                      never ObDereferenceObject
 *   IOCTL_ICA_SIN_DOUBLE_COMPLETE      SinDoubleComplete: IoCompleteRequest twice
 *   IOCTL_ICA_SIN_PENDING_UNMARKED     SinPendingUnmarked: returns STATUS_PENDING without
 *                                      IoMarkIrpPending; a 1 ms timer's DPC completes it
 *   IOCTL_ICA_SIN_COMPLETE_AT_HIGH     SinCompleteAtHigh: IoCompleteRequest at HIGH_LEVEL
 *   IOCTL_ICA_SIN_TIMER_AT_UNLOAD      SinTimerAtUnload: sets a 1-hour timer whose DPC
 *                                      (SinUnloadTimerDpc) is in the driver and never
 *                                      cancels it
 *   IOCTL_ICA_PING                     STATUS_SUCCESS, Information 0
 *
 * The sins that do not end the request complete it with STATUS_SUCCESS.
 * DriverEntry writes Sins = 1 into its service key (so a test can check that a
 * finding leaves the registry alone).
 */

#include <ntddk.h>
#include "common.h"
#include "icadrv.h"

#define SIN __declspec(dllexport) __attribute__((noinline, noipa))

#define SIN_TAG 0x6E695353UL     /* 'niSS': reads "SSin" in memory */
#define SIN_LEAK_TAG 0x6B61654CUL /* 'kaeL': reads "Leak" in memory */

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD IcaUnload;
static DRIVER_DISPATCH IcaCreateClose;
__declspec(dllexport) DRIVER_DISPATCH SinDeviceControl;

/* One lock per sin that takes one, so a sin that ends its call path with a
 * lock held leaves the others usable. */
static KSPIN_LOCK PassiveLock, NeverHeldLock, TwiceLock, HeldOnReturnLock;
static KEVENT NeverSignaled;
static KTIMER PendingTimer, UnloadTimer;
static KDPC PendingDpc, UnloadDpc;
static PIRP PendingIrp;
static UCHAR MdlBuffer[64];

static NTSTATUS NTAPI IcaCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    UNREFERENCED_PARAMETER(DeviceObject);
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

SIN VOID SinWaitAtDispatch(void)
{
    LARGE_INTEGER timeout;
    KIRQL old;

    timeout.QuadPart = -100000; /* 10 ms */
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    KeWaitForSingleObject(&NeverSignaled, Executive, KernelMode, FALSE, &timeout);
    KeLowerIrql(old);
}

SIN VOID SinPassiveAtDispatch(PUNICODE_STRING RegistryPath)
{
    OBJECT_ATTRIBUTES attributes;
    HANDLE key;
    KIRQL old;

    InitializeObjectAttributes(&attributes, RegistryPath, OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
                               NULL, NULL);
    if (!NT_SUCCESS(ZwOpenKey(&key, KEY_READ, &attributes)))
        return;
    KeAcquireSpinLock(&PassiveLock, &old);
    ZwClose(key);
    KeReleaseSpinLock(&PassiveLock, old);
}

SIN VOID SinReleaseNotHeld(void)
{
    KIRQL old;

    KeRaiseIrql(DISPATCH_LEVEL, &old);
    KeReleaseSpinLock(&NeverHeldLock, old);
}

SIN VOID SinAcquireTwice(void)
{
    KIRQL old, again;

    KeAcquireSpinLock(&TwiceLock, &old);
    KeAcquireSpinLockAtDpcLevel(&TwiceLock);
    again = old;
    KeReleaseSpinLock(&TwiceLock, again);
}

SIN KIRQL SinReturnHoldingLock(void)
{
    KIRQL old;

    KeAcquireSpinLock(&HeldOnReturnLock, &old);
    return old;
}

SIN VOID SinOverrun(void)
{
    volatile UCHAR *p = ExAllocatePoolWithTag(NonPagedPool, 20, SIN_TAG);

    if (p == NULL)
        return;
    p[20] = 1;
    p[21] = 2;
    p[22] = 3;
    p[23] = 4;
    ExFreePoolWithTag((PVOID)p, SIN_TAG);
}

SIN VOID SinUnderrun(void)
{
    volatile UCHAR *p = ExAllocatePoolWithTag(NonPagedPool, 24, SIN_TAG);

    if (p == NULL)
        return;
    p[-4] = 0x11;
    p[-3] = 0x22;
    ExFreePoolWithTag((PVOID)p, SIN_TAG);
}

SIN ULONG SinOverrunPage(void)
{
    volatile ULONG *p = ExAllocatePoolWithTag(NonPagedPool, 32, SIN_TAG);
    ULONG value;

    if (p == NULL)
        return 0;
    value = p[8 + 16]; /* 64 bytes past the end */
    ExFreePoolWithTag((PVOID)p, SIN_TAG);
    return value;
}

SIN ULONG SinUseAfterFree(void)
{
    volatile ULONG *p = ExAllocatePoolWithTag(NonPagedPool, 32, SIN_TAG);

    if (p == NULL)
        return 0;
    p[0] = 0x5151;
    ExFreePoolWithTag((PVOID)p, SIN_TAG);
    return p[0];
}

SIN VOID SinDoubleFree(void)
{
    PVOID p = ExAllocatePoolWithTag(NonPagedPool, 48, SIN_TAG);

    if (p == NULL)
        return;
    ExFreePoolWithTag(p, SIN_TAG);
    ExFreePoolWithTag(p, SIN_TAG);
}

SIN VOID SinLeakPool(void)
{
    PUCHAR p = ExAllocatePoolWithTag(NonPagedPool, 100, SIN_LEAK_TAG);

    if (p != NULL)
        p[0] = 1;
}

SIN VOID SinLeakIrp(void)
{
    PIRP irp = IoAllocateIrp(1, FALSE);

    if (irp != NULL)
        irp->IoStatus.Information = 0;
}

SIN VOID SinLeakMdl(void)
{
    PMDL mdl = IoAllocateMdl(MdlBuffer, sizeof(MdlBuffer), FALSE, FALSE, NULL);

    if (mdl != NULL)
        MmBuildMdlForNonPagedPool(mdl);
}

SIN VOID SinLeakReference(PDEVICE_OBJECT DeviceObject)
{
    PDEVICE_OBJECT top = IoGetAttachedDeviceReference(DeviceObject);

    if (top == NULL)
        DbgPrint("sins: no device\n");
}

SIN VOID SinDoubleComplete(PIRP Irp)
{
    Irp->IoStatus.Status = STATUS_SUCCESS;
    Irp->IoStatus.Information = 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

static VOID NTAPI SinCompletePending(PKDPC Dpc, PVOID Context, PVOID Arg1, PVOID Arg2)
{
    PIRP irp = PendingIrp;

    UNREFERENCED_PARAMETER(Dpc);
    UNREFERENCED_PARAMETER(Context);
    UNREFERENCED_PARAMETER(Arg1);
    UNREFERENCED_PARAMETER(Arg2);
    PendingIrp = NULL;
    if (irp != NULL)
        IcaComplete(irp, STATUS_SUCCESS, 0);
}

SIN NTSTATUS SinPendingUnmarked(PIRP Irp)
{
    LARGE_INTEGER due;

    PendingIrp = Irp;
    due.QuadPart = -10000; /* 1 ms */
    KeSetTimer(&PendingTimer, due, &PendingDpc);
    return STATUS_PENDING; /* no IoMarkIrpPending */
}

SIN VOID SinCompleteAtHigh(PIRP Irp)
{
    KIRQL old;

    KeRaiseIrql(HIGH_LEVEL, &old);
    IcaComplete(Irp, STATUS_SUCCESS, 0);
    KeLowerIrql(old);
}

__declspec(dllexport) VOID NTAPI SinUnloadTimerDpc(PKDPC Dpc, PVOID Context, PVOID Arg1, PVOID Arg2)
{
    UNREFERENCED_PARAMETER(Dpc);
    UNREFERENCED_PARAMETER(Context);
    UNREFERENCED_PARAMETER(Arg1);
    UNREFERENCED_PARAMETER(Arg2);
    DbgPrint("sins: the unload timer fired\n");
}

SIN VOID SinTimerAtUnload(void)
{
    LARGE_INTEGER due;

    due.QuadPart = -36000000000LL; /* 1 hour */
    KeSetTimer(&UnloadTimer, due, &UnloadDpc);
}

static UNICODE_STRING ServiceKey;
static WCHAR ServiceKeyBuffer[256];

__declspec(dllexport) NTSTATUS NTAPI SinDeviceControl(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);

    switch (stack->Parameters.DeviceIoControl.IoControlCode) {
    case IOCTL_ICA_SIN_WAIT_AT_DISPATCH:
        SinWaitAtDispatch();
        break;
    case IOCTL_ICA_SIN_PASSIVE_AT_DISPATCH:
        SinPassiveAtDispatch(&ServiceKey);
        break;
    case IOCTL_ICA_SIN_RELEASE_NOT_HELD:
        SinReleaseNotHeld();
        break;
    case IOCTL_ICA_SIN_ACQUIRE_TWICE:
        SinAcquireTwice();
        break;
    case IOCTL_ICA_SIN_RETURN_HOLDING_LOCK:
        SinReturnHoldingLock();
        break;
    case IOCTL_ICA_SIN_OVERRUN:
        SinOverrun();
        break;
    case IOCTL_ICA_SIN_UNDERRUN:
        SinUnderrun();
        break;
    case IOCTL_ICA_SIN_OVERRUN_PAGE:
        SinOverrunPage();
        break;
    case IOCTL_ICA_SIN_USE_AFTER_FREE:
        SinUseAfterFree();
        break;
    case IOCTL_ICA_SIN_DOUBLE_FREE:
        SinDoubleFree();
        break;
    case IOCTL_ICA_SIN_LEAK_POOL:
        SinLeakPool();
        break;
    case IOCTL_ICA_SIN_LEAK_IRP:
        SinLeakIrp();
        break;
    case IOCTL_ICA_SIN_LEAK_MDL:
        SinLeakMdl();
        break;
    case IOCTL_ICA_SIN_LEAK_REFERENCE:
        SinLeakReference(DeviceObject);
        break;
    case IOCTL_ICA_SIN_DOUBLE_COMPLETE:
        SinDoubleComplete(Irp);
        return STATUS_SUCCESS;
    case IOCTL_ICA_SIN_PENDING_UNMARKED:
        return SinPendingUnmarked(Irp);
    case IOCTL_ICA_SIN_COMPLETE_AT_HIGH:
        SinCompleteAtHigh(Irp);
        return STATUS_SUCCESS;
    case IOCTL_ICA_SIN_TIMER_AT_UNLOAD:
        SinTimerAtUnload();
        break;
    case IOCTL_ICA_PING:
        break;
    default:
        return IcaComplete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

static VOID NTAPI IcaUnload(PDRIVER_OBJECT DriverObject)
{
    DbgPrint("sins: DriverUnload\n");
    IcaDeleteLinkedDevice(DriverObject, L"\\DosDevices\\IcaSins");
}

/* Writes Sins = 1 into the service key. */
static NTSTATUS SinMarkRegistry(void)
{
    ULONG one = 1;

    return RtlWriteRegistryValue(RTL_REGISTRY_ABSOLUTE, ServiceKeyBuffer, L"Sins", REG_DWORD, &one,
                                 sizeof(one));
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    PDEVICE_OBJECT dev;
    NTSTATUS status;
    USHORT length;

    DbgPrint("sins: DriverEntry\n");
    length = RegistryPath->Length < sizeof(ServiceKeyBuffer) - sizeof(WCHAR)
                 ? RegistryPath->Length
                 : sizeof(ServiceKeyBuffer) - sizeof(WCHAR);
    RtlCopyMemory(ServiceKeyBuffer, RegistryPath->Buffer, length);
    ServiceKeyBuffer[length / sizeof(WCHAR)] = L'\0';
    ServiceKey.Buffer = ServiceKeyBuffer;
    ServiceKey.Length = length;
    ServiceKey.MaximumLength = sizeof(ServiceKeyBuffer);

    KeInitializeSpinLock(&PassiveLock);
    KeInitializeSpinLock(&NeverHeldLock);
    KeInitializeSpinLock(&TwiceLock);
    KeInitializeSpinLock(&HeldOnReturnLock);
    KeInitializeEvent(&NeverSignaled, NotificationEvent, FALSE);
    KeInitializeTimer(&PendingTimer);
    KeInitializeDpc(&PendingDpc, SinCompletePending, NULL);
    KeInitializeTimer(&UnloadTimer);
    KeInitializeDpc(&UnloadDpc, SinUnloadTimerDpc, NULL);

    status = SinMarkRegistry();
    if (!NT_SUCCESS(status))
        return status;
    status = IcaCreateLinkedDevice(DriverObject, L"\\Device\\IcaSins", L"\\DosDevices\\IcaSins", 0, &dev);
    if (!NT_SUCCESS(status))
        return status;

    DriverObject->MajorFunction[IRP_MJ_CREATE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = SinDeviceControl;
    DriverObject->DriverUnload = IcaUnload;
    return STATUS_SUCCESS;
}
