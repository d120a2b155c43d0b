/*
 * regtest.sys - the registry test driver of ICA.
 *
 * DriverEntry creates \Device\IcaRegtest (symlink \DosDevices\IcaRegtest,
 * buffered I/O) and keeps a copy of its RegistryPath; the driver is also a
 * PnP function driver whose AddDevice attaches an unnamed FDO to the PDO.
 *   IOCTL_ICA_SELFTEST       in-driver checks of ZwCreateKey, ZwOpenKey,
 *                            ZwSetValueKey, ZwQueryValueKey (all three
 *                            classes, the buffer-too-small and overflow
 *                            paths), ZwEnumerateKey, ZwEnumerateValueKey,
 *                            ZwQueryKey, ZwDeleteValueKey, ZwDeleteKey,
 *                            ZwClose, RtlQueryRegistryValues (DIRECT and
 *                            query routines) and RtlWriteRegistryValue, under
 *                            Services\<name>\Parameters; leaves
 *                            Parameters\HostCheck for the host to read
 *   IOCTL_ICA_REG_PNP_RESULT results of the checks AddDevice, START and
 *                            REMOVE made: IoGetDeviceProperty,
 *                            IoOpenDeviceRegistryKey (device and driver
 *                            keys), IoRegisterDeviceInterface,
 *                            IoSetDeviceInterfaceState, interface change
 *                            notifications for its own interface class
 *                            (exactly one arrival after START, one removal
 *                            at REMOVE, existing interfaces reported to a
 *                            second registration), the interface's Device
 *                            Parameters key (leaves FromInterface = 7), an
 *                            interface property (UINT32 0x1234, pid 2),
 *                            MmAllocateContiguousMemorySpecifyCache bounds,
 *                            IoWMIRegistrationControl of the FDO,
 *                            WmiTraceMessage and WmiQueryTraceInformation
 *                            without a trace session, IoInvalidateDeviceRelations
 *                            at START (one BusRelations query, no children);
 *                            asked again after REMOVE it includes the
 *                            removal checks
 * Both return an ICA_SELFTEST_RESULT.
 */

#include <ntddk.h>
#include "common.h"
#include "icadrv.h"

int __cdecl _snwprintf(wchar_t *buffer, size_t count, const wchar_t *format, ...);
/* Not in mingw-w64's wdm.h (Windows 7; ntoskrnl_win10.def). */
typedef struct _ICA_DEVPROPKEY {
    GUID fmtid;
    ULONG pid;
} ICA_DEVPROPKEY;
NTKERNELAPI NTSTATUS NTAPI IoSetDeviceInterfacePropertyData(PUNICODE_STRING SymbolicLinkName,
                                                            const ICA_DEVPROPKEY *PropertyKey,
                                                            LCID Lcid, ULONG Flags, ULONG Type,
                                                            ULONG Size, PVOID Data);
/* wdm.h declares it only under RUN_WPP. */
NTKERNELAPI NTSTATUS __cdecl WmiTraceMessage(TRACEHANDLE LoggerHandle, ULONG MessageFlags,
                                             LPGUID MessageGuid, USHORT MessageNumber, ...);

#define ICA_REG_TAG 0x67655249UL /* 'IReg' */

/* {8C6D1A3E-2F4B-4C5E-9A1B-3C4D5E6F7081} */
static const GUID IcaRegtestInterface = {
    0x8c6d1a3e, 0x2f4b, 0x4c5e, {0x9a, 0x1b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0x81}};

/* GUID_DEVICE_INTERFACE_ARRIVAL and _REMOVAL (wdmguid.h) */
static const GUID IcaInterfaceArrival = {
    0xcb3a4004, 0x46f0, 0x11d0, {0xb0, 0x8f, 0x00, 0x60, 0x97, 0x13, 0x05, 0x3f}};
static const GUID IcaInterfaceRemoval = {
    0xcb3a4005, 0x46f0, 0x11d0, {0xb0, 0x8f, 0x00, 0x60, 0x97, 0x13, 0x05, 0x3f}};

typedef struct _ICA_REG_FDO {
    PDEVICE_OBJECT Lower;
} ICA_REG_FDO, *PICA_REG_FDO;

static PDEVICE_OBJECT g_Control;
static UNICODE_STRING g_ServicePath;   /* copy of RegistryPath, NUL-terminated */
static WCHAR g_ServiceName[64];        /* its last component */
static ICA_SELFTEST_RESULT g_Pnp;      /* checks made by AddDevice/START/REMOVE */
static UNICODE_STRING g_InterfaceLink; /* from IoRegisterDeviceInterface */
static PVOID g_Notify;                 /* interface change notification entry */
static KEVENT g_ArrivalEvent, g_RemovalEvent;
static LONG g_Arrivals, g_Removals, g_OtherEvents;
static LONG g_BusQueries;              /* IRP_MN_QUERY_DEVICE_RELATIONS (BusRelations) seen */
static BOOLEAN g_ArrivalLinkMatches, g_ArrivalChecked;

DRIVER_INITIALIZE DriverEntry;
static DRIVER_ADD_DEVICE IcaAddDevice;
static DRIVER_UNLOAD IcaUnload;
static DRIVER_DISPATCH IcaCreateClose;
static DRIVER_DISPATCH IcaDeviceControl;
static DRIVER_DISPATCH IcaPnp;

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */

static NTSTATUS IcaOpen(PHANDLE Key, HANDLE Root, PCWSTR Name)
{
    UNICODE_STRING us;
    OBJECT_ATTRIBUTES oa;

    RtlInitUnicodeString(&us, Name);
    InitializeObjectAttributes(&oa, &us, OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE, Root, NULL);
    return ZwOpenKey(Key, KEY_ALL_ACCESS, &oa);
}

static NTSTATUS IcaCreate(PHANDLE Key, HANDLE Root, PCWSTR Name, PULONG Disposition)
{
    UNICODE_STRING us;
    OBJECT_ATTRIBUTES oa;

    RtlInitUnicodeString(&us, Name);
    InitializeObjectAttributes(&oa, &us, OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE, Root, NULL);
    return ZwCreateKey(Key, KEY_ALL_ACCESS, &oa, 0, NULL, REG_OPTION_NON_VOLATILE, Disposition);
}

static NTSTATUS IcaSet(HANDLE Key, PCWSTR Name, ULONG Type, const void *Data, ULONG Size)
{
    UNICODE_STRING us;

    RtlInitUnicodeString(&us, Name);
    return ZwSetValueKey(Key, &us, 0, Type, (PVOID)Data, Size);
}

static NTSTATUS IcaQuery(HANDLE Key, PCWSTR Name, KEY_VALUE_INFORMATION_CLASS Class, PVOID Buffer,
                         ULONG Length, PULONG Result)
{
    UNICODE_STRING us;

    RtlInitUnicodeString(&us, Name);
    return ZwQueryValueKey(Key, &us, Class, Buffer, Length, Result);
}

static BOOLEAN IcaNameIs(PCWSTR Name, ULONG Bytes, PCWSTR Expected)
{
    ULONG n = (ULONG)wcslen(Expected);

    return Bytes == n * sizeof(WCHAR) && memcmp(Name, Expected, Bytes) == 0;
}

/* ---------------------------------------------------------------------- */
/* IOCTL_ICA_SELFTEST: Zw* and Rtl* registry services                      */

typedef struct _ICA_QUERY_CONTEXT {
    ULONG ListCalls;     /* REG_MULTI_SZ "List" split into REG_SZ calls */
    BOOLEAN ListOk;
    BOOLEAN PathOk;      /* REG_EXPAND_SZ "Path" arrived expanded */
    BOOLEAN WholeListOk; /* RTL_QUERY_REGISTRY_NOEXPAND: one REG_MULTI_SZ call */
    ULONG Enumerated;    /* calls for a NULL Name (every value) */
} ICA_QUERY_CONTEXT, *PICA_QUERY_CONTEXT;

static const WCHAR IcaMulti[] = L"one\0two\0three\0"; /* the compiler adds the final NUL */
static PCWSTR const IcaMultiItems[] = {L"one", L"two", L"three"};

static NTSTATUS NTAPI IcaQueryRoutine(PWSTR ValueName, ULONG ValueType, PVOID ValueData,
                                      ULONG ValueLength, PVOID Context, PVOID EntryContext)
{
    PICA_QUERY_CONTEXT c = Context;
    PCWSTR data = ValueData;

    switch ((ULONG_PTR)EntryContext) {
    case 1:
        if (c->ListCalls < 3 && ValueType == REG_SZ && ValueName != NULL &&
            _wcsicmp(ValueName, L"list") == 0 &&
            ValueLength == (wcslen(data) + 1) * sizeof(WCHAR) &&
            wcscmp(data, IcaMultiItems[c->ListCalls]) == 0)
            c->ListOk = (BOOLEAN)(c->ListCalls == 0 ? TRUE : c->ListOk);
        else
            c->ListOk = FALSE;
        c->ListCalls++;
        break;
    case 2:
        c->PathOk = (BOOLEAN)(ValueType == REG_SZ && wcschr(data, L'%') == NULL &&
                              ValueLength == (wcslen(data) + 1) * sizeof(WCHAR) &&
                              _wcsicmp(data + wcslen(data) - 4, L"\\ica") == 0);
        break;
    case 3:
        c->Enumerated++;
        break;
    case 4:
        c->WholeListOk = (BOOLEAN)(ValueType == REG_MULTI_SZ && ValueLength >= sizeof(IcaMulti) &&
                                   memcmp(data, IcaMulti, sizeof(IcaMulti)) == 0);
        break;
    default:
        return STATUS_INVALID_PARAMETER;
    }
    return STATUS_SUCCESS;
}

static void IcaTestValues(PICA_SELFTEST_RESULT r, HANDLE params)
{
    ULONGLONG storage[32];
    PUCHAR buf = (PUCHAR)storage;
    PKEY_VALUE_PARTIAL_INFORMATION pi = (PVOID)storage;
    PKEY_VALUE_BASIC_INFORMATION bi = (PVOID)storage;
    PKEY_VALUE_FULL_INFORMATION fi = (PVOID)storage;
    static const UCHAR blob[5] = {1, 2, 3, 4, 5};
    static PCWSTR const order[] = {L"Speed", L"Name", L"Blob", L"List", L"Big", L"", L"Path"};
    ULONG speed = 100, len, i;
    ULONGLONG big = 0x1122334455667788ULL;
    NTSTATUS st;
    BOOLEAN ok;

    ok = NT_SUCCESS(IcaSet(params, L"Speed", REG_DWORD, &speed, sizeof(speed))) &&
         NT_SUCCESS(IcaSet(params, L"Name", REG_SZ, L"IcaReg", sizeof(L"IcaReg"))) &&
         NT_SUCCESS(IcaSet(params, L"Blob", REG_BINARY, blob, sizeof(blob))) &&
         NT_SUCCESS(IcaSet(params, L"List", REG_MULTI_SZ, IcaMulti, sizeof(IcaMulti))) &&
         NT_SUCCESS(IcaSet(params, L"Big", REG_QWORD, &big, sizeof(big))) &&
         NT_SUCCESS(IcaSet(params, L"", REG_SZ, L"dflt", sizeof(L"dflt"))) &&
         NT_SUCCESS(IcaSet(params, L"Path", REG_EXPAND_SZ, L"%SystemRoot%\\ica",
                           sizeof(L"%SystemRoot%\\ica")));
    CHECK(ok, "ZwSetValueKey");

    /* KeyValuePartialInformation: exact, too small, header only, size query. */
    st = IcaQuery(params, L"sPEED", KeyValuePartialInformation, buf, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && len == FIELD_OFFSET(KEY_VALUE_PARTIAL_INFORMATION, Data) + 4 &&
          pi->Type == REG_DWORD && pi->DataLength == 4 && *(ULONG UNALIGNED *)pi->Data == 100,
          "ZwQueryValueKey partial");
    len = 0;
    st = IcaQuery(params, L"Speed", KeyValuePartialInformation, buf, 4, &len);
    CHECK(st == STATUS_BUFFER_TOO_SMALL && len == 16, "ZwQueryValueKey partial too small");
    memset(buf, 0xCC, sizeof(storage));
    st = IcaQuery(params, L"Speed", KeyValuePartialInformation, buf,
                  FIELD_OFFSET(KEY_VALUE_PARTIAL_INFORMATION, Data), &len);
    CHECK(st == STATUS_BUFFER_OVERFLOW && len == 16 && pi->Type == REG_DWORD &&
          pi->DataLength == 4 && pi->Data[0] == 0xCC, "ZwQueryValueKey partial overflow");
    st = IcaQuery(params, L"Name", KeyValuePartialInformation, NULL, 0, &len);
    CHECK(st == STATUS_BUFFER_TOO_SMALL && len == 12 + sizeof(L"IcaReg"),
          "ZwQueryValueKey size query");
    st = IcaQuery(params, L"Big", KeyValuePartialInformation, buf, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && pi->Type == REG_QWORD && pi->DataLength == 8 &&
          *(ULONGLONG UNALIGNED *)pi->Data == big, "ZwQueryValueKey REG_QWORD");
    st = IcaQuery(params, L"", KeyValuePartialInformation, buf, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && pi->Type == REG_SZ && wcscmp((PCWSTR)pi->Data, L"dflt") == 0,
          "ZwQueryValueKey default value");
    st = IcaQuery(params, L"Nope", KeyValuePartialInformation, buf, sizeof(storage), &len);
    CHECK(st == STATUS_OBJECT_NAME_NOT_FOUND, "ZwQueryValueKey missing");

    /* KeyValueBasicInformation: the stored name, cut on overflow. */
    st = IcaQuery(params, L"NAME", KeyValueBasicInformation, buf, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && bi->Type == REG_SZ && IcaNameIs(bi->Name, bi->NameLength, L"Name") &&
          len == FIELD_OFFSET(KEY_VALUE_BASIC_INFORMATION, Name) + 8, "ZwQueryValueKey basic");
    memset(buf, 0, sizeof(storage));
    st = IcaQuery(params, L"Name", KeyValueBasicInformation, buf,
                  FIELD_OFFSET(KEY_VALUE_BASIC_INFORMATION, Name) + 2, &len);
    CHECK(st == STATUS_BUFFER_OVERFLOW && bi->NameLength == 8 && bi->Name[0] == L'N' &&
          bi->Name[1] == 0 && len == 20, "ZwQueryValueKey basic overflow");

    /* KeyValueFullInformation: data 4-aligned after the name. */
    st = IcaQuery(params, L"blob", KeyValueFullInformation, buf, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && fi->Type == REG_BINARY && fi->DataLength == 5 &&
          IcaNameIs(fi->Name, fi->NameLength, L"Blob") && fi->DataOffset == 28 &&
          memcmp(buf + fi->DataOffset, blob, 5) == 0 && len == 33, "ZwQueryValueKey full");
    st = IcaQuery(params, L"blob", KeyValueFullInformation, buf,
                  FIELD_OFFSET(KEY_VALUE_FULL_INFORMATION, Name) - 1, &len);
    CHECK(st == STATUS_BUFFER_TOO_SMALL && len == 33, "ZwQueryValueKey full too small");
    st = IcaQuery(params, L"blob", KeyValueFullInformation, buf, 30, &len);
    CHECK(st == STATUS_BUFFER_OVERFLOW && fi->DataLength == 5 && len == 33,
          "ZwQueryValueKey full overflow");

    /* Values enumerate in creation order; replacing one keeps its place and name. */
    speed = 200;
    CHECK(NT_SUCCESS(IcaSet(params, L"SPEED", REG_DWORD, &speed, sizeof(speed))), "ZwSetValueKey replace");
    ok = TRUE;
    for (i = 0; i < ARRAYSIZE(order); i++) {
        st = ZwEnumerateValueKey(params, i, KeyValueBasicInformation, buf, sizeof(storage), &len);
        if (st != STATUS_SUCCESS || !IcaNameIs(bi->Name, bi->NameLength, order[i]))
            ok = FALSE;
    }
    CHECK(ok, "ZwEnumerateValueKey order");
    st = ZwEnumerateValueKey(params, 0, KeyValuePartialInformation, buf, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && *(ULONG UNALIGNED *)pi->Data == 200, "ZwEnumerateValueKey data");
    st = ZwEnumerateValueKey(params, ARRAYSIZE(order), KeyValueBasicInformation, buf,
                             sizeof(storage), &len);
    CHECK(st == STATUS_NO_MORE_ENTRIES, "ZwEnumerateValueKey end");
}

static void IcaTestKeys(PICA_SELFTEST_RESULT r, HANDLE params)
{
    ULONGLONG storage[32];
    PKEY_BASIC_INFORMATION kb = (PVOID)storage;
    PKEY_NODE_INFORMATION kn = (PVOID)storage;
    PKEY_FULL_INFORMATION kf = (PVOID)storage;
    static PCWSTR const sorted[] = {L"alpha", L"Beta", L"Gamma"};
    HANDLE h, gamma = NULL;
    ULONG len, i, disp;
    NTSTATUS st;
    BOOLEAN ok = TRUE;
    UNICODE_STRING us;

    for (i = 0; i < 3; i++) {
        static PCWSTR const created[] = {L"Beta", L"Gamma", L"alpha"};
        st = IcaCreate(&h, params, created[i], &disp);
        if (!NT_SUCCESS(st) || disp != REG_CREATED_NEW_KEY)
            ok = FALSE;
        else if (i == 1)
            gamma = h;
        else
            ZwClose(h);
    }
    CHECK(ok && gamma != NULL, "ZwCreateKey subkeys");

    ok = TRUE;
    for (i = 0; i < 3; i++) {
        st = ZwEnumerateKey(params, i, KeyBasicInformation, storage, sizeof(storage), &len);
        if (st != STATUS_SUCCESS || !IcaNameIs(kb->Name, kb->NameLength, sorted[i]) ||
            len != FIELD_OFFSET(KEY_BASIC_INFORMATION, Name) + kb->NameLength)
            ok = FALSE;
    }
    CHECK(ok, "ZwEnumerateKey sorted case-insensitively");
    st = ZwEnumerateKey(params, 3, KeyBasicInformation, storage, sizeof(storage), &len);
    CHECK(st == STATUS_NO_MORE_ENTRIES, "ZwEnumerateKey end");
    st = ZwEnumerateKey(params, 0, KeyNodeInformation, storage, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && kn->ClassOffset == 0xFFFFFFFF && kn->ClassLength == 0 &&
          IcaNameIs(kn->Name, kn->NameLength, L"alpha"), "ZwEnumerateKey node");
    st = ZwEnumerateKey(params, 1, KeyBasicInformation, storage, 4, &len);
    CHECK(st == STATUS_BUFFER_TOO_SMALL && len == 16 + 8, "ZwEnumerateKey too small");

    st = ZwQueryKey(params, KeyFullInformation, storage, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && kf->SubKeys == 3 && kf->Values == 7 && kf->MaxNameLen == 10 &&
          kf->MaxValueNameLen == 10 && kf->MaxValueDataLen == sizeof(L"%SystemRoot%\\ica") &&
          kf->ClassOffset == 0xFFFFFFFF && len == FIELD_OFFSET(KEY_FULL_INFORMATION, Class),
          "ZwQueryKey full");
    st = ZwQueryKey(params, KeyBasicInformation, storage, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && IcaNameIs(kb->Name, kb->NameLength, L"Parameters"),
          "ZwQueryKey basic keeps the created case");

    /* Delete: not with subkeys; a deleted key's handle says so; ZwClose still works. */
    st = ZwDeleteKey(params);
    CHECK(st == STATUS_CANNOT_DELETE, "ZwDeleteKey with subkeys");
    st = ZwDeleteKey(gamma);
    CHECK(st == STATUS_SUCCESS, "ZwDeleteKey");
    st = ZwQueryKey(gamma, KeyBasicInformation, storage, sizeof(storage), &len);
    CHECK(st == STATUS_KEY_DELETED, "deleted key handle");
    CHECK(ZwClose(gamma) == STATUS_SUCCESS, "ZwClose deleted key");
    st = IcaOpen(&h, params, L"gamma");
    CHECK(st == STATUS_OBJECT_NAME_NOT_FOUND, "ZwOpenKey deleted key");

    RtlInitUnicodeString(&us, L"Blob");
    CHECK(ZwDeleteValueKey(params, &us) == STATUS_SUCCESS, "ZwDeleteValueKey");
    CHECK(ZwDeleteValueKey(params, &us) == STATUS_OBJECT_NAME_NOT_FOUND, "ZwDeleteValueKey missing");

    st = IcaOpen(&h, params, L"Missing");
    CHECK(st == STATUS_OBJECT_NAME_NOT_FOUND, "ZwOpenKey missing");
    st = IcaCreate(&h, params, L"Missing\\Child", &disp);
    CHECK(st == STATUS_OBJECT_NAME_NOT_FOUND, "ZwCreateKey without parent");
    st = ZwQueryKey((HANDLE)(ULONG_PTR)0x1234, KeyBasicInformation, storage, sizeof(storage), &len);
    CHECK(st == STATUS_INVALID_HANDLE, "bad handle");
}

static void IcaTestRtl(PICA_SELFTEST_RESULT r, HANDLE params)
{
    RTL_QUERY_REGISTRY_TABLE table[6];
    ICA_QUERY_CONTEXT ctx;
    UNICODE_STRING name = {0, 0, NULL};
    WCHAR path[160];
    ULONG speed = 0, missing = 0, dflt = 42, v;
    ULONGLONG storage[16];
    PKEY_VALUE_PARTIAL_INFORMATION pi = (PVOID)storage;
    ULONG len;
    NTSTATUS st;
    HANDLE h;

    /* RTL_REGISTRY_SERVICES, "<service>\Parameters". */
    _snwprintf(path, ARRAYSIZE(path), L"%ws\\Parameters", g_ServiceName);
    RtlZeroMemory(table, sizeof(table));
    RtlZeroMemory(&ctx, sizeof(ctx));
    table[0].Flags = RTL_QUERY_REGISTRY_DIRECT;
    table[0].Name = L"Speed";
    table[0].EntryContext = &speed;
    table[1].Flags = RTL_QUERY_REGISTRY_DIRECT;
    table[1].Name = L"name";
    table[1].EntryContext = &name;
    table[2].Flags = RTL_QUERY_REGISTRY_DIRECT;
    table[2].Name = L"Missing";
    table[2].EntryContext = &missing;
    table[2].DefaultType = REG_DWORD;
    table[2].DefaultData = &dflt;
    table[2].DefaultLength = sizeof(dflt);
    table[3].QueryRoutine = IcaQueryRoutine;
    table[3].Name = L"List";
    table[3].EntryContext = (PVOID)1;
    table[4].QueryRoutine = IcaQueryRoutine;
    table[4].Name = L"Path";
    table[4].EntryContext = (PVOID)2;
    st = RtlQueryRegistryValues(RTL_REGISTRY_SERVICES, path, table, &ctx, NULL);
    CHECK(st == STATUS_SUCCESS, "RtlQueryRegistryValues");
    CHECK(speed == 200, "RtlQueryRegistryValues DIRECT ULONG");
    CHECK(name.Buffer != NULL && name.Length == 12 && name.MaximumLength == 14 &&
          memcmp(name.Buffer, L"IcaReg", 12) == 0, "RtlQueryRegistryValues DIRECT string");
    if (name.Buffer != NULL)
        RtlFreeUnicodeString(&name);
    CHECK(missing == 42, "RtlQueryRegistryValues default");
    CHECK(ctx.ListCalls == 3 && ctx.ListOk, "RtlQueryRegistryValues REG_MULTI_SZ routine");
    CHECK(ctx.PathOk, "RtlQueryRegistryValues REG_EXPAND_SZ expanded");

    /* A caller buffer that is too small is left alone (and the call succeeds). */
    {
        WCHAR small[3];
        UNICODE_STRING s = {0, sizeof(small), small};
        RtlZeroMemory(table, sizeof(table));
        table[0].Flags = RTL_QUERY_REGISTRY_DIRECT;
        table[0].Name = L"Name";
        table[0].EntryContext = &s;
        st = RtlQueryRegistryValues(RTL_REGISTRY_SERVICES, path, table, NULL, NULL);
        CHECK(st == STATUS_SUCCESS && s.Length == 0, "RtlQueryRegistryValues small string");
    }

    /* RTL_REGISTRY_ABSOLUTE with a SUBKEY entry and a routine for every value; NOEXPAND. */
    _snwprintf(path, ARRAYSIZE(path), L"%wZ", &g_ServicePath);
    RtlZeroMemory(table, sizeof(table));
    RtlZeroMemory(&ctx, sizeof(ctx));
    table[0].Flags = RTL_QUERY_REGISTRY_SUBKEY;
    table[0].Name = L"Parameters";
    table[1].QueryRoutine = IcaQueryRoutine;
    table[1].EntryContext = (PVOID)3;
    table[2].QueryRoutine = IcaQueryRoutine;
    table[2].Flags = RTL_QUERY_REGISTRY_NOEXPAND;
    table[2].Name = L"List";
    table[2].EntryContext = (PVOID)4;
    st = RtlQueryRegistryValues(RTL_REGISTRY_ABSOLUTE, path, table, &ctx, NULL);
    /* Speed, Name, List (3 strings), Big, default, Path. */
    CHECK(st == STATUS_SUCCESS && ctx.Enumerated == 8, "RtlQueryRegistryValues every value");
    CHECK(ctx.WholeListOk, "RtlQueryRegistryValues NOEXPAND");

    /* RTL_QUERY_REGISTRY_REQUIRED; a missing key; RTL_REGISTRY_HANDLE. */
    _snwprintf(path, ARRAYSIZE(path), L"%ws\\Parameters", g_ServiceName);
    RtlZeroMemory(table, sizeof(table));
    table[0].Flags = RTL_QUERY_REGISTRY_DIRECT | RTL_QUERY_REGISTRY_REQUIRED;
    table[0].Name = L"Nope";
    table[0].EntryContext = &missing;
    st = RtlQueryRegistryValues(RTL_REGISTRY_SERVICES, path, table, NULL, NULL);
    CHECK(st == STATUS_OBJECT_NAME_NOT_FOUND, "RtlQueryRegistryValues REQUIRED");
    st = RtlQueryRegistryValues(RTL_REGISTRY_SERVICES, L"NoSuchService\\Parameters", table, NULL, NULL);
    CHECK(st == STATUS_OBJECT_NAME_NOT_FOUND, "RtlQueryRegistryValues missing key");
    table[0].Flags = RTL_QUERY_REGISTRY_DIRECT;
    table[0].Name = L"Speed";
    table[0].EntryContext = &v;
    v = 0;
    st = RtlQueryRegistryValues(RTL_REGISTRY_HANDLE, (PCWSTR)params, table, NULL, NULL);
    CHECK(st == STATUS_SUCCESS && v == 200, "RtlQueryRegistryValues HANDLE");
    CHECK(RtlCheckRegistryKey(RTL_REGISTRY_SERVICES, path) == STATUS_SUCCESS, "RtlCheckRegistryKey");

    /* RtlWriteRegistryValue: into an existing key, and creating the last component. */
    v = 0x1234;
    st = RtlWriteRegistryValue(RTL_REGISTRY_SERVICES, path, L"Written", REG_DWORD, &v, sizeof(v));
    CHECK(st == STATUS_SUCCESS, "RtlWriteRegistryValue");
    st = IcaQuery(params, L"written", KeyValuePartialInformation, storage, sizeof(storage), &len);
    CHECK(st == STATUS_SUCCESS && *(ULONG UNALIGNED *)pi->Data == 0x1234, "RtlWriteRegistryValue readback");
    _snwprintf(path, ARRAYSIZE(path), L"%wZ\\Parameters\\Created", &g_ServicePath);
    st = RtlWriteRegistryValue(RTL_REGISTRY_ABSOLUTE, path, L"Str", REG_SZ, L"made", sizeof(L"made"));
    CHECK(st == STATUS_SUCCESS, "RtlWriteRegistryValue new key");
    st = IcaOpen(&h, params, L"created");
    CHECK(st == STATUS_SUCCESS, "RtlWriteRegistryValue created the key");
    if (NT_SUCCESS(st))
        ZwClose(h);

    /* Left for the host to find in the store. */
    _snwprintf(path, ARRAYSIZE(path), L"%ws\\Parameters\\HostCheck", g_ServiceName);
    st = RtlCreateRegistryKey(RTL_REGISTRY_SERVICES, path);
    CHECK(st == STATUS_SUCCESS, "RtlCreateRegistryKey");
    v = 42;
    st = RtlWriteRegistryValue(RTL_REGISTRY_SERVICES, path, L"Answer", REG_DWORD, &v, sizeof(v));
    CHECK(st == STATUS_SUCCESS, "RtlWriteRegistryValue Answer");
    st = RtlWriteRegistryValue(RTL_REGISTRY_SERVICES, path, L"FromDriver", REG_SZ,
                               L"hello from regtest", sizeof(L"hello from regtest"));
    CHECK(st == STATUS_SUCCESS, "RtlWriteRegistryValue FromDriver");
}

static void IcaRegSelfTest(PICA_SELFTEST_RESULT r)
{
    HANDLE svc, params, again;
    ULONG disp;
    NTSTATUS st;
    OBJECT_ATTRIBUTES oa;

    InitializeObjectAttributes(&oa, &g_ServicePath, OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
                               NULL, NULL);
    st = ZwOpenKey(&svc, KEY_ALL_ACCESS, &oa);
    CHECK(st == STATUS_SUCCESS, "ZwOpenKey RegistryPath");
    if (!NT_SUCCESS(st))
        return;
    st = IcaCreate(&params, svc, L"Parameters", &disp);
    CHECK(st == STATUS_SUCCESS && disp == REG_CREATED_NEW_KEY, "ZwCreateKey new");
    if (!NT_SUCCESS(st)) {
        ZwClose(svc);
        return;
    }
    st = IcaCreate(&again, svc, L"PARAMETERS", &disp);
    CHECK(st == STATUS_SUCCESS && disp == REG_OPENED_EXISTING_KEY, "ZwCreateKey existing");
    if (NT_SUCCESS(st))
        ZwClose(again);

    IcaTestValues(r, params);
    IcaTestKeys(r, params);
    IcaTestRtl(r, params);

    CHECK(ZwClose(params) == STATUS_SUCCESS && ZwClose(svc) == STATUS_SUCCESS, "ZwClose");
    CHECK(ZwClose(svc) == STATUS_INVALID_HANDLE, "ZwClose twice");
}

/* ---------------------------------------------------------------------- */
/* PnP: device properties, device and driver keys, device interfaces       */

static BOOLEAN IcaSameGuid(const GUID *a, const GUID *b)
{
    return RtlCompareMemory(a, b, sizeof(GUID)) == sizeof(GUID);
}

/* Interface change callback (Context: the counter of the registration). */
static NTSTATUS NTAPI IcaInterfaceChange(PVOID Notification, PVOID Context)
{
    PDEVICE_INTERFACE_CHANGE_NOTIFICATION n = Notification;

    if (n->Version != 1 || n->Size != sizeof(*n) ||
        !IcaSameGuid(&n->InterfaceClassGuid, &IcaRegtestInterface)) {
        g_OtherEvents++;
    } else if (Context != NULL) {
        if (IcaSameGuid(&n->Event, &IcaInterfaceArrival))
            ++*(LONG *)Context;
    } else if (IcaSameGuid(&n->Event, &IcaInterfaceArrival)) {
        g_Arrivals++;
        g_ArrivalLinkMatches = g_InterfaceLink.Buffer != NULL &&
                               RtlEqualUnicodeString(n->SymbolicLinkName, &g_InterfaceLink, TRUE);
        KeSetEvent(&g_ArrivalEvent, IO_NO_INCREMENT, FALSE);
    } else if (IcaSameGuid(&n->Event, &IcaInterfaceRemoval)) {
        g_Removals++;
        KeSetEvent(&g_RemovalEvent, IO_NO_INCREMENT, FALSE);
    } else {
        g_OtherEvents++;
    }
    return STATUS_SUCCESS;
}

/* Contiguous memory within bounds, WMI registration, WMI tracing without a session. */
static void IcaMemoryAndWmiChecks(PICA_SELFTEST_RESULT r, PDEVICE_OBJECT Fdo)
{
    PHYSICAL_ADDRESS low, high, boundary, pa;
    PUCHAR p;
    TRACEHANDLE th = 0;
    ULONG flags = 0, len = 0;
    GUID msg = IcaRegtestInterface;

    low.QuadPart = 0;
    high.QuadPart = 0xFFFFFFFF;
    boundary.QuadPart = 0x10000;
    p = MmAllocateContiguousMemorySpecifyCache(0x3000, low, high, boundary, MmCached);
    CHECK(p != NULL && ((ULONG_PTR)p & 0xFFF) == 0, "MmAllocateContiguousMemorySpecifyCache");
    if (p != NULL) {
        pa = MmGetPhysicalAddress(p);
        CHECK(pa.QuadPart != 0 && pa.QuadPart + 0x2FFF <= high.QuadPart &&
              pa.QuadPart / 0x10000 == (pa.QuadPart + 0x2FFF) / 0x10000 &&
              MmGetPhysicalAddress(p + 0x2000).QuadPart == pa.QuadPart + 0x2000,
              "contiguous memory bounds");
        RtlFillMemory(p, 0x3000, 0xA5);
        CHECK(p[0x2FFF] == 0xA5, "contiguous memory writable");
        MmFreeContiguousMemorySpecifyCache(p, 0x3000, MmCached);
    }
    boundary.QuadPart = 0x2000;
    CHECK(MmAllocateContiguousMemorySpecifyCache(0x3000, low, high, boundary, MmCached) == NULL,
          "contiguous memory larger than the boundary multiple");

    CHECK(IoWMIRegistrationControl(Fdo, WMIREG_ACTION_REGISTER) == STATUS_SUCCESS,
          "IoWMIRegistrationControl register");
    CHECK(IoWMIRegistrationControl(Fdo, 99) == STATUS_INVALID_PARAMETER,
          "IoWMIRegistrationControl unknown action");
    CHECK(WmiTraceMessage(0x1234, 0, &msg, 1, &flags, sizeof(flags), NULL) == STATUS_INVALID_HANDLE,
          "WmiTraceMessage without a session");
    CHECK(WmiQueryTraceInformation(GlobalLoggerHandleClass, &th, sizeof(th), &len, NULL) ==
              STATUS_NOT_FOUND && len == sizeof(th), "WmiQueryTraceInformation global logger");
    CHECK(WmiQueryTraceInformation(TraceEnableFlagsClass, &flags, 2, NULL, NULL) ==
              STATUS_INFO_LENGTH_MISMATCH, "WmiQueryTraceInformation length");
}

static void IcaPnpChecks(PDEVICE_OBJECT Pdo)
{
    PICA_SELFTEST_RESULT r = &g_Pnp;
    WCHAR buf[128];
    ULONG len = 0;
    NTSTATUS st;
    HANDLE h;
    ULONG one = 1;
    ULONGLONG storage[16];
    PKEY_VALUE_PARTIAL_INFORMATION pi = (PVOID)storage;
    UNICODE_STRING s, prefix;

    st = IoGetDeviceProperty(Pdo, DevicePropertyHardwareID, 0, NULL, &len);
    CHECK(st == STATUS_BUFFER_TOO_SMALL && len == sizeof(L"Root\\ICA_REGTEST\0"),
          "IoGetDeviceProperty size");
    st = IoGetDeviceProperty(Pdo, DevicePropertyHardwareID, sizeof(buf), buf, &len);
    CHECK(st == STATUS_SUCCESS && _wcsicmp(buf, L"root\\ica_regtest") == 0 &&
          buf[wcslen(buf) + 1] == 0, "IoGetDeviceProperty HardwareID");
    st = IoGetDeviceProperty(Pdo, DevicePropertyDeviceDescription, sizeof(buf), buf, &len);
    CHECK(st == STATUS_SUCCESS && wcscmp(buf, L"ICA registry test device") == 0,
          "IoGetDeviceProperty DeviceDescription");
    st = IoGetDeviceProperty(Pdo, DevicePropertyEnumeratorName, sizeof(buf), buf, &len);
    CHECK(st == STATUS_SUCCESS && wcscmp(buf, L"ROOT") == 0 && len == 10,
          "IoGetDeviceProperty EnumeratorName");
    st = IoGetDeviceProperty(Pdo, DevicePropertyDriverKeyName, sizeof(buf), buf, &len);
    CHECK(st == STATUS_SUCCESS && buf[0] == L'{' && wcschr(buf, L'\\') != NULL,
          "IoGetDeviceProperty DriverKeyName");
    st = IoGetDeviceProperty(Pdo, DevicePropertyPhysicalDeviceObjectName, sizeof(buf), buf, &len);
    CHECK(st == STATUS_SUCCESS && wcsncmp(buf, L"\\Device\\", 8) == 0,
          "IoGetDeviceProperty PhysicalDeviceObjectName");
    st = IoGetDeviceProperty(Pdo, DevicePropertyFriendlyName, sizeof(buf), buf, &len);
    CHECK(st == STATUS_OBJECT_NAME_NOT_FOUND, "IoGetDeviceProperty missing");

    st = IoOpenDeviceRegistryKey(Pdo, PLUGPLAY_REGKEY_DRIVER, KEY_READ, &h);
    CHECK(st == STATUS_SUCCESS, "IoOpenDeviceRegistryKey driver");
    if (NT_SUCCESS(st)) {
        st = IcaQuery(h, L"NetworkAddress", KeyValuePartialInformation, storage, sizeof(storage), &len);
        CHECK(st == STATUS_SUCCESS && pi->Type == REG_SZ &&
              wcscmp((PCWSTR)pi->Data, L"02AABBCCDDEE") == 0, "driver key AddReg value");
        ZwClose(h);
    }
    st = IoOpenDeviceRegistryKey(Pdo, PLUGPLAY_REGKEY_DEVICE, KEY_ALL_ACCESS, &h);
    CHECK(st == STATUS_SUCCESS, "IoOpenDeviceRegistryKey device");
    if (NT_SUCCESS(st)) {
        CHECK(NT_SUCCESS(IcaSet(h, L"FromAddDevice", REG_DWORD, &one, sizeof(one))),
              "Device Parameters write");
        ZwClose(h);
    }

    st = IoRegisterDeviceInterface(Pdo, &IcaRegtestInterface, NULL, &g_InterfaceLink);
    RtlInitUnicodeString(&prefix, L"\\??\\ROOT#ICA_REGTEST#");
    s = g_InterfaceLink;
    if (s.Length > prefix.Length)
        s.Length = prefix.Length;
    CHECK(st == STATUS_SUCCESS && RtlEqualUnicodeString(&s, &prefix, TRUE),
          "IoRegisterDeviceInterface");
    if (!NT_SUCCESS(st))
        return;

    st = IoOpenDeviceInterfaceRegistryKey(&g_InterfaceLink, KEY_ALL_ACCESS, &h);
    CHECK(st == STATUS_SUCCESS, "IoOpenDeviceInterfaceRegistryKey");
    if (NT_SUCCESS(st)) {
        ULONG seven = 7;
        CHECK(NT_SUCCESS(IcaSet(h, L"FromInterface", REG_DWORD, &seven, sizeof(seven))),
              "interface Device Parameters write");
        ZwClose(h);
    }

    {
        ICA_DEVPROPKEY key = {IcaRegtestInterface, 2};
        ULONG value = 0x1234;
        CHECK(IoSetDeviceInterfacePropertyData(&g_InterfaceLink, &key, 0, 1 /* PERSISTENT */,
                                               7 /* DEVPROP_TYPE_UINT32 */, sizeof(value),
                                               &value) == STATUS_SUCCESS,
              "IoSetDeviceInterfacePropertyData");
    }

    /* Not enabled yet: including existing interfaces reports none. */
    KeInitializeEvent(&g_ArrivalEvent, NotificationEvent, FALSE);
    KeInitializeEvent(&g_RemovalEvent, NotificationEvent, FALSE);
    st = IoRegisterPlugPlayNotification(EventCategoryDeviceInterfaceChange,
                                        PNPNOTIFY_DEVICE_INTERFACE_INCLUDE_EXISTING_INTERFACES,
                                        (PVOID)&IcaRegtestInterface, g_Control->DriverObject,
                                        IcaInterfaceChange, NULL, &g_Notify);
    CHECK(st == STATUS_SUCCESS && g_Notify != NULL && g_Arrivals == 0,
          "IoRegisterPlugPlayNotification");
}

/* After START (asked through the IOCTL): the arrival reached the callback, once. */
static void IcaArrivalChecks(void)
{
    PICA_SELFTEST_RESULT r = &g_Pnp;
    LARGE_INTEGER timeout;
    LONG existing = 0;
    PVOID entry = NULL;
    NTSTATUS st;

    if (g_ArrivalChecked || g_Notify == NULL)
        return;
    g_ArrivalChecked = TRUE;
    timeout.QuadPart = -10 * 1000 * 1000; /* 1 s */
    st = KeWaitForSingleObject(&g_ArrivalEvent, Executive, KernelMode, FALSE, &timeout);
    CHECK(st == STATUS_SUCCESS && g_Arrivals == 1 && g_ArrivalLinkMatches && g_Removals == 0 &&
          g_OtherEvents == 0, "interface arrival notification");
    CHECK(g_BusQueries == 1, "IoInvalidateDeviceRelations: one BusRelations query");
    st = IoRegisterPlugPlayNotification(EventCategoryDeviceInterfaceChange,
                                        PNPNOTIFY_DEVICE_INTERFACE_INCLUDE_EXISTING_INTERFACES,
                                        (PVOID)&IcaRegtestInterface, g_Control->DriverObject,
                                        IcaInterfaceChange, &existing, &entry);
    CHECK(st == STATUS_SUCCESS && existing == 1, "existing interfaces reported at registration");
    if (NT_SUCCESS(st))
        CHECK(IoUnregisterPlugPlayNotificationEx(entry) == STATUS_SUCCESS,
              "IoUnregisterPlugPlayNotificationEx");
}

static NTSTATUS NTAPI IcaPnp(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PICA_SELFTEST_RESULT r = &g_Pnp;
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    PICA_REG_FDO ext = DeviceObject->DeviceExtension;
    PDEVICE_OBJECT lower = ext->Lower;
    NTSTATUS status;

    switch (stack->MinorFunction) {
    case IRP_MN_START_DEVICE:
        status = IcaForwardAndWait(lower, Irp);
        /* Asks the PnP manager for a BusRelations query, before the interface arrival. */
        if (NT_SUCCESS(status))
            IoInvalidateDeviceRelations(lower, BusRelations);
        if (NT_SUCCESS(status) && g_InterfaceLink.Buffer != NULL)
            CHECK(IoSetDeviceInterfaceState(&g_InterfaceLink, TRUE) == STATUS_SUCCESS,
                  "IoSetDeviceInterfaceState enable");
        Irp->IoStatus.Status = status;
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        return status;

    case IRP_MN_REMOVE_DEVICE:
        if (g_InterfaceLink.Buffer != NULL) {
            LARGE_INTEGER timeout;
            CHECK(IoSetDeviceInterfaceState(&g_InterfaceLink, FALSE) == STATUS_SUCCESS,
                  "IoSetDeviceInterfaceState disable");
            timeout.QuadPart = -10 * 1000 * 1000; /* 1 s */
            CHECK(g_Notify != NULL &&
                  KeWaitForSingleObject(&g_RemovalEvent, Executive, KernelMode, FALSE, &timeout) ==
                      STATUS_SUCCESS && g_Removals == 1 && g_Arrivals == 1 && g_OtherEvents == 0,
                  "interface removal notification");
            RtlFreeUnicodeString(&g_InterfaceLink);
        }
        if (g_Notify != NULL) {
            CHECK(IoUnregisterPlugPlayNotificationEx(g_Notify) == STATUS_SUCCESS,
                  "IoUnregisterPlugPlayNotificationEx at removal");
            g_Notify = NULL;
        }
        CHECK(IoWMIRegistrationControl(DeviceObject, WMIREG_ACTION_DEREGISTER) == STATUS_SUCCESS,
              "IoWMIRegistrationControl deregister");
        Irp->IoStatus.Status = STATUS_SUCCESS;
        IoSkipCurrentIrpStackLocation(Irp);
        status = IoCallDriver(lower, Irp);
        IoDetachDevice(lower);
        IoDeleteDevice(DeviceObject);
        return status;

    case IRP_MN_QUERY_DEVICE_RELATIONS:
        if (stack->Parameters.QueryDeviceRelations.Type == BusRelations) {
            /* No children: an empty list the PnP manager frees. */
            PDEVICE_RELATIONS rel = ExAllocatePoolWithTag(PagedPool, sizeof(*rel), ICA_REG_TAG);
            g_BusQueries++;
            if (rel != NULL) {
                rel->Count = 0;
                Irp->IoStatus.Information = (ULONG_PTR)rel;
                Irp->IoStatus.Status = STATUS_SUCCESS;
            }
        }
        IoSkipCurrentIrpStackLocation(Irp);
        return IoCallDriver(lower, Irp);

    default:
        IoSkipCurrentIrpStackLocation(Irp);
        return IoCallDriver(lower, Irp);
    }
}

static NTSTATUS NTAPI IcaAddDevice(PDRIVER_OBJECT DriverObject, PDEVICE_OBJECT Pdo)
{
    PDEVICE_OBJECT fdo;
    PICA_REG_FDO ext;
    NTSTATUS status;

    DbgPrint("regtest: AddDevice\n");
    status = IoCreateDevice(DriverObject, sizeof(ICA_REG_FDO), NULL, FILE_DEVICE_UNKNOWN, 0,
                            FALSE, &fdo);
    if (!NT_SUCCESS(status))
        return status;
    ext = fdo->DeviceExtension;
    ext->Lower = IoAttachDeviceToDeviceStack(fdo, Pdo);
    if (ext->Lower == NULL) {
        IoDeleteDevice(fdo);
        return STATUS_NO_SUCH_DEVICE;
    }
    IcaPnpChecks(Pdo);
    IcaMemoryAndWmiChecks(&g_Pnp, fdo);
    fdo->Flags &= ~DO_DEVICE_INITIALIZING;
    return STATUS_SUCCESS;
}

/* ---------------------------------------------------------------------- */
/* Control device                                                          */

static NTSTATUS NTAPI IcaCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    UNREFERENCED_PARAMETER(DeviceObject);
    return IcaComplete(Irp, STATUS_SUCCESS, 0);
}

static NTSTATUS NTAPI IcaDeviceControl(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(Irp);
    ULONG outLen = stack->Parameters.DeviceIoControl.OutputBufferLength;
    PICA_SELFTEST_RESULT out = Irp->AssociatedIrp.SystemBuffer;

    if (DeviceObject != g_Control)
        return IcaComplete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    switch (stack->Parameters.DeviceIoControl.IoControlCode) {
    case IOCTL_ICA_SELFTEST:
        if (outLen < sizeof(ICA_SELFTEST_RESULT) || out == NULL)
            return IcaComplete(Irp, STATUS_BUFFER_TOO_SMALL, 0);
        RtlZeroMemory(out, sizeof(*out));
        IcaRegSelfTest(out);
        return IcaComplete(Irp, STATUS_SUCCESS, sizeof(ICA_SELFTEST_RESULT));
    case IOCTL_ICA_REG_PNP_RESULT:
        if (outLen < sizeof(ICA_SELFTEST_RESULT) || out == NULL)
            return IcaComplete(Irp, STATUS_BUFFER_TOO_SMALL, 0);
        IcaArrivalChecks();
        RtlCopyMemory(out, &g_Pnp, sizeof(g_Pnp));
        return IcaComplete(Irp, STATUS_SUCCESS, sizeof(ICA_SELFTEST_RESULT));
    default:
        return IcaComplete(Irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
}

static VOID NTAPI IcaUnload(PDRIVER_OBJECT DriverObject)
{
    DbgPrint("regtest: DriverUnload\n");
    IcaDeleteLinkedDevice(DriverObject, L"\\DosDevices\\IcaRegtest");
    if (g_ServicePath.Buffer != NULL)
        ExFreePoolWithTag(g_ServicePath.Buffer, ICA_REG_TAG);
    g_ServicePath.Buffer = NULL;
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    NTSTATUS status;
    USHORT i, start;

    DbgPrint("regtest: DriverEntry %wZ\n", RegistryPath);
    g_ServicePath.Buffer = ExAllocatePoolWithTag(NonPagedPool, RegistryPath->Length + sizeof(WCHAR),
                                                 ICA_REG_TAG);
    if (g_ServicePath.Buffer == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    g_ServicePath.MaximumLength = RegistryPath->Length + sizeof(WCHAR);
    RtlCopyUnicodeString(&g_ServicePath, RegistryPath);
    g_ServicePath.Buffer[g_ServicePath.Length / sizeof(WCHAR)] = 0;

    start = 0;
    for (i = 0; i < g_ServicePath.Length / sizeof(WCHAR); i++)
        if (g_ServicePath.Buffer[i] == L'\\')
            start = i + 1;
    for (i = 0; start + i < g_ServicePath.Length / sizeof(WCHAR) && i + 1 < ARRAYSIZE(g_ServiceName); i++)
        g_ServiceName[i] = g_ServicePath.Buffer[start + i];
    g_ServiceName[i] = 0;

    status = IcaCreateLinkedDevice(DriverObject, L"\\Device\\IcaRegtest", L"\\DosDevices\\IcaRegtest",
                                   0, &g_Control);
    if (!NT_SUCCESS(status)) {
        ExFreePoolWithTag(g_ServicePath.Buffer, ICA_REG_TAG);
        g_ServicePath.Buffer = NULL;
        return status;
    }

    DriverObject->MajorFunction[IRP_MJ_CREATE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLEANUP] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = IcaCreateClose;
    DriverObject->MajorFunction[IRP_MJ_DEVICE_CONTROL] = IcaDeviceControl;
    DriverObject->MajorFunction[IRP_MJ_PNP] = IcaPnp;
    DriverObject->DriverExtension->AddDevice = IcaAddDevice;
    DriverObject->DriverUnload = IcaUnload;
    return STATUS_SUCCESS;
}
