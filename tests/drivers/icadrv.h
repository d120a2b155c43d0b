/*
 * Small helpers shared by the ICA C test drivers (not mirrored by the host).
 */
#ifndef ICA_TEST_ICADRV_H
#define ICA_TEST_ICADRV_H

/*
 * Names of the IRP major functions, for DbgPrint traces.  The table is
 * indexed at run time, so it stays an array of absolute pointers in the
 * image: this also gives every driver base relocations on x64, where the
 * code itself is RIP-relative.
 */
static const char *const IcaMajorNames[IRP_MJ_MAXIMUM_FUNCTION + 1] = {
    "CREATE", "CREATE_NAMED_PIPE", "CLOSE", "READ", "WRITE",
    "QUERY_INFORMATION", "SET_INFORMATION", "QUERY_EA", "SET_EA",
    "FLUSH_BUFFERS", "QUERY_VOLUME_INFORMATION", "SET_VOLUME_INFORMATION",
    "DIRECTORY_CONTROL", "FILE_SYSTEM_CONTROL", "DEVICE_CONTROL",
    "INTERNAL_DEVICE_CONTROL", "SHUTDOWN", "LOCK_CONTROL", "CLEANUP",
    "CREATE_MAILSLOT", "QUERY_SECURITY", "SET_SECURITY", "POWER",
    "SYSTEM_CONTROL", "DEVICE_CHANGE", "QUERY_QUOTA", "SET_QUOTA", "PNP",
};

static inline const char *IcaMajorName(UCHAR major)
{
    return major <= IRP_MJ_MAXIMUM_FUNCTION ? IcaMajorNames[major] : "?";
}

/* Complete Irp with Status/Information and return Status. */
static inline NTSTATUS IcaComplete(PIRP Irp, NTSTATUS Status, ULONG_PTR Information)
{
    Irp->IoStatus.Status = Status;
    Irp->IoStatus.Information = Information;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return Status;
}

/*
 * Create the named device DeviceName (buffered I/O, extension of ExtensionSize
 * bytes) with the symbolic link LinkName pointing at it, ready for use.
 */
static inline NTSTATUS IcaCreateLinkedDevice(PDRIVER_OBJECT DriverObject, PCWSTR DeviceName,
                                             PCWSTR LinkName, ULONG ExtensionSize,
                                             PDEVICE_OBJECT *Device)
{
    UNICODE_STRING name, link;
    NTSTATUS status;

    RtlInitUnicodeString(&name, DeviceName);
    status = IoCreateDevice(DriverObject, ExtensionSize, &name, FILE_DEVICE_UNKNOWN, 0, FALSE,
                            Device);
    if (!NT_SUCCESS(status))
        return status;
    RtlInitUnicodeString(&link, LinkName);
    status = IoCreateSymbolicLink(&link, &name);
    if (!NT_SUCCESS(status)) {
        IoDeleteDevice(*Device);
        return status;
    }
    (*Device)->Flags |= DO_BUFFERED_IO;
    (*Device)->Flags &= ~DO_DEVICE_INITIALIZING;
    return STATUS_SUCCESS;
}

/* Undo IcaCreateLinkedDevice: delete the link and the driver's device. */
static inline VOID IcaDeleteLinkedDevice(PDRIVER_OBJECT DriverObject, PCWSTR LinkName)
{
    UNICODE_STRING link;

    RtlInitUnicodeString(&link, LinkName);
    IoDeleteSymbolicLink(&link);
    if (DriverObject->DeviceObject != NULL)
        IoDeleteDevice(DriverObject->DeviceObject);
}

#endif /* ICA_TEST_ICADRV_H */
