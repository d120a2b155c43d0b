/*
 * filter.sys - an upper filter for function.sys (ICA's PnP test pair).
 *
 * AddDevice attaches an unnamed device above the function driver's FDO.
 * Every IRP passes through; IOCTLs get a completion routine that adds 1 to
 * a successful IOCTL_ICA_ADD result on the way up (x -> x + 1001), which
 * proves that completion routines of upper drivers run.
 */

#include <ntddk.h>
#include "common.h"
#include "icadrv.h"

typedef struct _ICA_FILTER_EXTENSION {
    PDEVICE_OBJECT Lower;
    LONG Counter;            /* IOCTL_ICA_ADD results adjusted */
} ICA_FILTER_EXTENSION, *PICA_FILTER_EXTENSION;

DRIVER_INITIALIZE DriverEntry;
static DRIVER_ADD_DEVICE FilterAddDevice;
static DRIVER_UNLOAD FilterUnload;
static DRIVER_DISPATCH FilterPassThrough;
static DRIVER_DISPATCH FilterPnp;
static DRIVER_DISPATCH FilterIoctl;
static IO_COMPLETION_ROUTINE FilterIoctlDone;

static NTSTATUS NTAPI FilterPassThrough(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PICA_FILTER_EXTENSION ext = DeviceObject->DeviceExtension;

    DbgPrint("filter: pass %s\n", IcaMajorName(IoGetCurrentIrpStackLocation(Irp)->MajorFunction));
    IoSkipCurrentIrpStackLocation(Irp);
    return IoCallDriver(ext->Lower, Irp);
}

static NTSTATUS NTAPI FilterIoctlDone(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    PICA_FILTER_EXTENSION ext = Context;
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);

    UNREFERENCED_PARAMETER(DeviceObject);
    if (Irp->PendingReturned)
        IoMarkIrpPending(Irp);

    if (NT_SUCCESS(Irp->IoStatus.Status) &&
        stack->Parameters.DeviceIoControl.IoControlCode == IOCTL_ICA_ADD &&
        Irp->IoStatus.Information == sizeof(ULONG) &&
        Irp->AssociatedIrp.SystemBuffer != NULL) {
        ((ULONG UNALIGNED *)Irp->AssociatedIrp.SystemBuffer)[0] += 1;
        InterlockedIncrement(&ext->Counter);
    }
    return STATUS_CONTINUE_COMPLETION;
}

static NTSTATUS NTAPI FilterIoctl(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PICA_FILTER_EXTENSION ext = DeviceObject->DeviceExtension;

    IoCopyCurrentIrpStackLocationToNext(Irp);
    IoSetCompletionRoutine(Irp, FilterIoctlDone, ext, TRUE, TRUE, TRUE);
    return IoCallDriver(ext->Lower, Irp);
}

static NTSTATUS NTAPI FilterPnp(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PICA_FILTER_EXTENSION ext = DeviceObject->DeviceExtension;
    PDEVICE_OBJECT lower = ext->Lower;
    UCHAR minor = IoGetCurrentIrpStackLocation(Irp)->MinorFunction;
    NTSTATUS status;

    IoSkipCurrentIrpStackLocation(Irp);
    status = IoCallDriver(lower, Irp);
    if (minor == IRP_MN_REMOVE_DEVICE) {
        IoDetachDevice(lower);
        IoDeleteDevice(DeviceObject);
    }
    return status;
}

static NTSTATUS NTAPI FilterAddDevice(PDRIVER_OBJECT DriverObject, PDEVICE_OBJECT Pdo)
{
    PDEVICE_OBJECT filter, lower;
    PICA_FILTER_EXTENSION ext;
    NTSTATUS status;

    DbgPrint("filter: AddDevice\n");
    status = IoCreateDevice(DriverObject, sizeof(ICA_FILTER_EXTENSION), NULL,
                            FILE_DEVICE_UNKNOWN, 0, FALSE, &filter);
    if (!NT_SUCCESS(status))
        return status;

    ext = filter->DeviceExtension;
    ext->Counter = 0;
    lower = IoAttachDeviceToDeviceStack(filter, Pdo);
    ext->Lower = lower;
    if (lower == NULL) {
        IoDeleteDevice(filter);
        return STATUS_NO_SUCH_DEVICE;
    }

    filter->Flags |= lower->Flags & (DO_BUFFERED_IO | DO_DIRECT_IO | DO_POWER_PAGABLE);
    filter->DeviceType = lower->DeviceType;
    filter->Characteristics = lower->Characteristics;
    filter->Flags &= ~DO_DEVICE_INITIALIZING;
    return STATUS_SUCCESS;
}

static VOID NTAPI FilterUnload(PDRIVER_OBJECT DriverObject)
{
    UNREFERENCED_PARAMETER(DriverObject);
    DbgPrint("filter: DriverUnload\n");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    ULONG i;

    UNREFERENCED_PARAMETER(RegistryPath);
    DbgPrint("filter: DriverEntry\n");

    DriverObject->DriverExtension->AddDevice = FilterAddDevice;
    DriverObject->DriverUnload = FilterUnload;
    for (i = 0; i <= IRP_MJ_MAXIMUM_FUNCTION; i++)
        DriverObject->MajorFunction[i] = FilterPassThrough;
    DriverObject->MajorFunction[IRP_MJ_PNP] = FilterPnp;
    DriverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = FilterIoctl;
    return STATUS_SUCCESS;
}
