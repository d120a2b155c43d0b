/*
 * nullderef.sys - faults on purpose: a read through a NULL pointer; and spins
 * forever on request.
 *
 * \Device\IcaNull (symlink \DosDevices\IcaNull).
 *   IOCTL_ICA_NULL_DEREF  DeviceControl -> IcaHandleNullDeref -> IcaReadNull,
 *                         which loads a ULONG from address 0 (a guest fault;
 *                         the guest backtrace has these three frames).
 *   IOCTL_ICA_SPIN        spins forever at PASSIVE_LEVEL (IcaSpin).
 *   IOCTL_ICA_SPIN_RAISED raises to DISPATCH_LEVEL, then spins forever.
 *   IOCTL_ICA_PING        STATUS_SUCCESS, Information 0.
 * Built with -fno-omit-frame-pointer so x86 backtraces can walk EBP frames.
 */

#include <ntddk.h>
#include "common.h"
#include "icadrv.h"

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD IcaUnload;
static DRIVER_DISPATCH IcaCreateClose;
static DRIVER_DISPATCH IcaDeviceControl;

static NTSTATUS NTAPI IcaCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    UNREFERENCED_PARAMETER(DeviceObject);
    DbgPrint("%s: %s\n", "nullderef", IcaMajorName(IoGetCurrentIrpStackLocation(Irp)->MajorFunction));
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

/*
 * The undefined behaviour is the point.  The pointer itself is volatile, so
 * the compiler must load its (zero) value at run time and cannot see the
 * NULL dereference (no ud2 / __builtin_trap substitution); noipa keeps the
 * function a real call frame.
 */
static __attribute__((noinline, noipa)) ULONG IcaReadNull(void)
{
    volatile ULONG *volatile p = NULL;

    return *p;
}

static __attribute__((noinline, noipa)) NTSTATUS IcaHandleNullDeref(PIRP Irp, ULONG OutLen)
{
    ULONG value = IcaReadNull();

    if (OutLen >= sizeof(ULONG) && Irp->AssociatedIrp.SystemBuffer != NULL) {
        *(ULONG UNALIGNED *)Irp->AssociatedIrp.SystemBuffer = value;
        return IcaComplete(Irp, STATUS_SUCCESS, sizeof(ULONG));
    }
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

static volatile ULONG IcaSpins;

static __attribute__((noinline, noipa)) void IcaSpin(void)
{
    for (;;)
        IcaSpins++;
}

static NTSTATUS NTAPI IcaDeviceControl(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    NTSTATUS status;

    UNREFERENCED_PARAMETER(DeviceObject);

    switch (stack->Parameters.DeviceIoControl.IoControlCode) {
    case IOCTL_ICA_NULL_DEREF:
        status = IcaHandleNullDeref(Irp, stack->Parameters.DeviceIoControl.OutputBufferLength);
        DbgPrint("nullderef: survived the NULL read\n"); /* not a tail call */
        return status;

    case IOCTL_ICA_SPIN:
        IcaSpin();
        return IcaComplete(Irp, STATUS_SUCCESS, 0);

    case IOCTL_ICA_SPIN_RAISED: {
        KIRQL old;

        KeRaiseIrql(DISPATCH_LEVEL, &old);
        IcaSpin();
        KeLowerIrql(old);
        return IcaComplete(Irp, STATUS_SUCCESS, 0);
    }

    case IOCTL_ICA_PING:
        return IcaComplete(Irp, STATUS_SUCCESS, 0);

    default:
        return IcaComplete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
}

static VOID NTAPI IcaUnload(PDRIVER_OBJECT DriverObject)
{
    DbgPrint("nullderef: DriverUnload\n");
    IcaDeleteLinkedDevice(DriverObject, L"\\DosDevices\\IcaNull");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    PDEVICE_OBJECT dev;
    NTSTATUS status;

    UNREFERENCED_PARAMETER(RegistryPath);
    DbgPrint("nullderef: DriverEntry\n");

    status = IcaCreateLinkedDevice(DriverObject, L"\\Device\\IcaNull", L"\\DosDevices\\IcaNull", 0, &dev);
    if (!NT_SUCCESS(status))
        return status;

    DriverObject->MajorFunction[IRP_MJ_CREATE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = IcaDeviceControl;
    DriverObject->DriverUnload = IcaUnload;
    return STATUS_SUCCESS;
}
