/*
 * norelocs.sys - a driver with nothing to relocate.
 *
 * Its code only uses RIP-relative addressing on x64, so the x64 image's
 * base-relocation directory is empty, yet it must run wherever the loader
 * maps it.  (The x86 build has ordinary HIGHLOW relocations.)
 */

#include <ntddk.h>

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD NoRelocsUnload;

static ULONG UnloadCount;

static VOID NTAPI NoRelocsUnload(PDRIVER_OBJECT DriverObject)
{
    UNREFERENCED_PARAMETER(DriverObject);
    UnloadCount++;
    DbgPrint("norelocs: DriverUnload\n");
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    UNREFERENCED_PARAMETER(RegistryPath);
    DbgPrint("norelocs: DriverEntry, %u unloads so far\n", UnloadCount);
    DriverObject->DriverUnload = NoRelocsUnload;
    return STATUS_SUCCESS;
}
