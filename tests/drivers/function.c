/*
 * function.sys - the function driver (FDO) of ICA's PnP test pair.
 *
 * AddDevice creates \Device\IcaFunction (symlink \DosDevices\IcaFunction),
 * attaches it above the PDO and handles START (forwarded synchronously to the
 * lower driver), QUERY_REMOVE and REMOVE.  filter.sys attaches above it.
 *   IOCTL_ICA_ADD  METHOD_BUFFERED  ULONG x -> ULONG x + 1000
 *                  (x + 1001 when seen through filter.sys)
 */

#include <ntddk.h>
#include "common.h"
#include "icadrv.h"

typedef struct _ICA_FDO_EXTENSION {
    PDEVICE_OBJECT Lower;
    BOOLEAN Started;
    ULONG Counter;           /* successful IOCTL_ICA_ADD requests */
} ICA_FDO_EXTENSION, *PICA_FDO_EXTENSION;

DRIVER_INITIALIZE DriverEntry;
static DRIVER_ADD_DEVICE IcaAddDevice;
static DRIVER_UNLOAD IcaUnload;
static DRIVER_DISPATCH IcaPnp;
static DRIVER_DISPATCH IcaCreateClose;
static DRIVER_DISPATCH IcaDeviceControl;

static NTSTATUS NTAPI IcaPnp(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    PICA_FDO_EXTENSION ext = DeviceObject->DeviceExtension;
    PDEVICE_OBJECT lower = ext->Lower;
    UNICODE_STRING link;
    NTSTATUS status;

    switch (stack->MinorFunction) {
    case IRP_MN_START_DEVICE:
        status = IcaForwardAndWait(lower, Irp);
        if (NT_SUCCESS(status))
            ext->Started = TRUE;
        Irp->IoStatus.Status = status;
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        return status;

    case IRP_MN_QUERY_REMOVE_DEVICE:
        Irp->IoStatus.Status = STATUS_SUCCESS;
        IoSkipCurrentIrpStackLocation(Irp);
        return IoCallDriver(lower, Irp);

    case IRP_MN_REMOVE_DEVICE:
        ext->Started = FALSE;
        Irp->IoStatus.Status = STATUS_SUCCESS;
        IoSkipCurrentIrpStackLocation(Irp);
        status = IoCallDriver(lower, Irp);
        RtlInitUnicodeString(&link, L"\\DosDevices\\IcaFunction");
        IoDeleteSymbolicLink(&link);
        IoDetachDevice(lower);
        IoDeleteDevice(DeviceObject);
        return status;

    default:
        IoSkipCurrentIrpStackLocation(Irp);
        return IoCallDriver(lower, Irp);
    }
}

static NTSTATUS NTAPI IcaCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    UNREFERENCED_PARAMETER(DeviceObject);
    DbgPrint("%s: %s\n", "function", IcaMajorName(IoGetCurrentIrpStackLocation(Irp)->MajorFunction));
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

static NTSTATUS NTAPI IcaDeviceControl(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    PICA_FDO_EXTENSION ext = DeviceObject->DeviceExtension;
    ULONG UNALIGNED *buf = Irp->AssociatedIrp.SystemBuffer;

    switch (stack->Parameters.DeviceIoControl.IoControlCode) {
    case IOCTL_ICA_ADD:
        if (!ext->Started)
            return IcaComplete(Irp, STATUS_DEVICE_NOT_READY, 0);
        if (stack->Parameters.DeviceIoControl.InputBufferLength < sizeof(ULONG) ||
            stack->Parameters.DeviceIoControl.OutputBufferLength < sizeof(ULONG) ||
            buf == NULL)
            return IcaComplete(Irp, STATUS_BUFFER_TOO_SMALL, 0);
        buf[0] = buf[0] + 1000;
        ext->Counter++;
        return IcaComplete(Irp, STATUS_SUCCESS, sizeof(ULONG));

    default:
        return IcaComplete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
}

static NTSTATUS NTAPI IcaAddDevice(PDRIVER_OBJECT DriverObject, PDEVICE_OBJECT Pdo)
{
    UNICODE_STRING name, link;
    PDEVICE_OBJECT fdo;
    PICA_FDO_EXTENSION ext;
    NTSTATUS status;

    DbgPrint("function: AddDevice\n");
    RtlInitUnicodeString(&name, L"\\Device\\IcaFunction");
    status = IoCreateDevice(DriverObject, sizeof(ICA_FDO_EXTENSION), &name,
                            FILE_DEVICE_UNKNOWN, 0, FALSE, &fdo);
    if (!NT_SUCCESS(status))
        return status;

    ext = fdo->DeviceExtension;
    ext->Lower = NULL;
    ext->Started = FALSE;
    ext->Counter = 0;
    fdo->Flags |= DO_BUFFERED_IO;

    ext->Lower = IoAttachDeviceToDeviceStack(fdo, Pdo);
    if (ext->Lower == NULL) {
        IoDeleteDevice(fdo);
        return STATUS_NO_SUCH_DEVICE;
    }

    RtlInitUnicodeString(&link, L"\\DosDevices\\IcaFunction");
    status = IoCreateSymbolicLink(&link, &name);
    if (!NT_SUCCESS(status)) {
        IoDetachDevice(ext->Lower);
        IoDeleteDevice(fdo);
        return status;
    }

    fdo->Flags &= ~DO_DEVICE_INITIALIZING;
    return STATUS_SUCCESS;
}

static VOID NTAPI IcaUnload(PDRIVER_OBJECT DriverObject)
{
    UNREFERENCED_PARAMETER(DriverObject);
    DbgPrint("function: DriverUnload\n");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    UNREFERENCED_PARAMETER(RegistryPath);
    DbgPrint("function: DriverEntry\n");

    DriverObject->DriverExtension->AddDevice = IcaAddDevice;
    DriverObject->DriverUnload = IcaUnload;
    DriverObject->MajorFunction[IRP_MJ_PNP] = IcaPnp;
    DriverObject->MajorFunction[IRP_MJ_CREATE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = IcaDeviceControl;
    return STATUS_SUCCESS;
}
