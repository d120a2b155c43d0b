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

/*
 * Completion routine that signals the KEVENT passed as its context and keeps
 * the IRP (STATUS_MORE_PROCESSING_REQUIRED): the caller finishes it.
 */
static inline NTSTATUS NTAPI IcaSetEventCompletion(PDEVICE_OBJECT DeviceObject, PIRP Irp,
                                                   PVOID Context)
{
    UNREFERENCED_PARAMETER(DeviceObject);
    UNREFERENCED_PARAMETER(Irp);
    KeSetEvent((PKEVENT)Context, IO_NO_INCREMENT, FALSE);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

/* Send Irp to the lower driver and wait until it has completed it. */
static inline NTSTATUS IcaForwardAndWait(PDEVICE_OBJECT Lower, PIRP Irp)
{
    KEVENT event;
    NTSTATUS status;

    KeInitializeEvent(&event, NotificationEvent, FALSE);
    IoCopyCurrentIrpStackLocationToNext(Irp);
    IoSetCompletionRoutine(Irp, IcaSetEventCompletion, &event, TRUE, TRUE, TRUE);
    status = IoCallDriver(Lower, Irp);
    if (status == STATUS_PENDING) {
        KeWaitForSingleObject(&event, Executive, KernelMode, FALSE, NULL);
        status = Irp->IoStatus.Status;
    }
    return status;
}

/*
 * In-driver self tests: count a check in r, keeping the name of the first
 * failing one (a plain loop: no dependence on the string routines under test).
 */
static inline void IcaRecord(PICA_SELFTEST_RESULT r, BOOLEAN ok, const char *name)
{
    ULONG i;

    if (ok) {
        r->Passed++;
        return;
    }
    if (r->Failed++ == 0) {
        for (i = 0; i + 1 < ICA_FAILURE_TEXT_LEN && name[i] != '\0'; i++)
            r->FirstFailure[i] = name[i];
        r->FirstFailure[i] = '\0';
    }
    DbgPrint("self test check failed: %s\n", name);
}

/* CHECK(cond, name) records one check in the PICA_SELFTEST_RESULT named r. */
#define CHECK(cond, name) IcaRecord(r, (BOOLEAN)((cond) ? TRUE : FALSE), (name))

#endif /* ICA_TEST_ICADRV_H */
