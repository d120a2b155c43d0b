/*
 * unknownimport.sys - calls an ntoskrnl export that ICA does not implement.
 *
 * \Device\IcaUnknown (symlink \DosDevices\IcaUnknown).
 *   IOCTL_ICA_CALL_UNKNOWN  calls ntoskrnl.exe!FsRtlIsNameInExpression; on a
 *                           real kernel it completes with STATUS_SUCCESS and
 *                           Information = its BOOLEAN result (1 here).
 *   IOCTL_ICA_PING          STATUS_SUCCESS, Information 0.
 * Loading must succeed; only the IOCTL_ICA_CALL_UNKNOWN path hits the trap.
 */

#include <ntddk.h>
#include "common.h"
#include "icadrv.h"

/* ntifs.h API (not in ntddk.h); imported from ntoskrnl.exe. */
NTKERNELAPI BOOLEAN NTAPI FsRtlIsNameInExpression(PUNICODE_STRING Expression,
                                                  PUNICODE_STRING Name,
                                                  BOOLEAN IgnoreCase,
                                                  PWCH UpcaseTable);

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD IcaUnload;
static DRIVER_DISPATCH IcaCreateClose;
static DRIVER_DISPATCH IcaDeviceControl;

static NTSTATUS NTAPI IcaCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    UNREFERENCED_PARAMETER(DeviceObject);
    DbgPrint("%s: %s\n", "unknownimport", IcaMajorName(IoGetCurrentIrpStackLocation(Irp)->MajorFunction));
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

static NTSTATUS NTAPI IcaDeviceControl(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    UNICODE_STRING expression, name;
    BOOLEAN match;

    UNREFERENCED_PARAMETER(DeviceObject);

    switch (stack->Parameters.DeviceIoControl.IoControlCode) {
    case IOCTL_ICA_CALL_UNKNOWN:
        /* With IgnoreCase the expression must already be upper case. */
        RtlInitUnicodeString(&expression, L"*.SYS");
        RtlInitUnicodeString(&name, L"unknownimport.sys");
        match = FsRtlIsNameInExpression(&expression, &name, TRUE, NULL);
        return IcaComplete(Irp, STATUS_SUCCESS, match ? 1 : 0);

    case IOCTL_ICA_PING:
        return IcaComplete(Irp, STATUS_SUCCESS, 0);

    default:
        return IcaComplete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
}

static VOID NTAPI IcaUnload(PDRIVER_OBJECT DriverObject)
{
    DbgPrint("unknownimport: DriverUnload\n");
    IcaDeleteLinkedDevice(DriverObject, L"\\DosDevices\\IcaUnknown");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    PDEVICE_OBJECT dev;
    NTSTATUS status;

    UNREFERENCED_PARAMETER(RegistryPath);
    DbgPrint("unknownimport: DriverEntry\n");

    status = IcaCreateLinkedDevice(DriverObject, L"\\Device\\IcaUnknown", L"\\DosDevices\\IcaUnknown", 0, &dev);
    if (!NT_SUCCESS(status))
        return status;

    DriverObject->MajorFunction[IRP_MJ_CREATE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = IcaDeviceControl;
    DriverObject->DriverUnload = IcaUnload;
    return STATUS_SUCCESS;
}
