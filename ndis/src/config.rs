//! The NDIS configuration API: NdisOpenConfiguration / NdisReadConfiguration /
//! NdisCloseConfiguration, NdisReadNetworkAddress and the subkeys of an open key
//! (NdisOpenConfigurationKeyByName / ByIndex, whose handles NdisCloseConfiguration closes too),
//! reading the registry backend, and NdisWriteConfiguration writing it.
//!
//! Which key: NDIS reads a miniport's per-adapter values from the adapter's driver key
//! (`Control\Class\{4D36E972-...}\NNNN`). Until adapters are bound, a WrapperConfigurationContext
//! made by [`configuration_context`] reads the service key's `Parameters` subkey
//! (`Services\<name>\Parameters`, from the RegistryPath given to NdisInitializeWrapper);
//! [`configuration_context_for_key`] names any key explicitly.
//!
//! What a read returns (all memory belongs to the configuration handle and is freed by
//! NdisCloseConfiguration): a REG_DWORD as NdisParameterInteger (or HexInteger if that was asked);
//! a REG_SZ / REG_EXPAND_SZ as NdisParameterString, or converted to a number (base 10 for
//! NdisParameterInteger, 16 for NdisParameterHexInteger) when an integer type was asked; a
//! REG_MULTI_SZ as NdisParameterMultiString; REG_BINARY as NdisParameterBinary. The reserved
//! keywords `Environment` (NdisEnvironmentWindowsNt), `ProcessorType` and `NdisVersion` (5.1, or
//! 6.0 for an NDIS 6 driver) are answered by NDIS itself. A missing value is NDIS_STATUS_FAILURE.

use ntoskrnl::export::Export;
use ntoskrnl::registry::{self, reg_type, RegValue};
use ntoskrnl::{dbt, ex, export_table, rtl, KResult, Kernel};

use crate::{
    alloc_handle, put_status, ConfigContext, NdisState, NdisStatus, OpenConfiguration, NDIS_OWNER,
    NDIS_STATUS_FAILURE, NDIS_STATUS_INVALID_PARAMETER, NDIS_STATUS_SUCCESS,
};

/// NDIS_PARAMETER_TYPE values.
pub mod parameter_type {
    /// NdisParameterInteger.
    pub const INTEGER: u32 = 0;
    /// NdisParameterHexInteger.
    pub const HEX_INTEGER: u32 = 1;
    /// NdisParameterString.
    pub const STRING: u32 = 2;
    /// NdisParameterMultiString.
    pub const MULTI_STRING: u32 = 3;
    /// NdisParameterBinary.
    pub const BINARY: u32 = 4;
}

/// NdisEnvironmentWindowsNt.
const ENVIRONMENT_WINDOWS_NT: u32 = 1;
/// NdisProcessorX86 / NdisProcessorAmd64.
const PROCESSOR_X86: u32 = 0;
const PROCESSOR_AMD64: u32 = 4;

/// Makes a WrapperConfigurationContext for a miniport of `wrapper`: it reads
/// `<RegistryPath>\Parameters` (see the module documentation).
pub fn configuration_context(k: &mut Kernel, wrapper: u64) -> KResult<Option<u64>> {
    let Some(w) = crate::wrapper(k, wrapper) else {
        return Ok(None);
    };
    let key = format!(r"{}\Parameters", w.registry_path.trim_end_matches('\\'));
    configuration_context_for_key(k, &key).map(Some)
}

/// Makes a WrapperConfigurationContext that reads the registry key `key` (absolute path).
pub fn configuration_context_for_key(k: &mut Kernel, key: &str) -> KResult<u64> {
    let ctx = alloc_handle(k, b"NDcc")?;
    k.extension::<NdisState>().config_contexts.insert(
        ctx,
        ConfigContext {
            key: key.to_string(),
            adapter: None,
        },
    );
    Ok(ctx)
}

/// A configuration handle reading the registry key `key`.
fn open_key(k: &mut Kernel, key: String) -> KResult<u64> {
    let handle = alloc_handle(k, b"NDcf")?;
    k.extension::<NdisState>().configs.insert(
        handle,
        OpenConfiguration {
            key,
            blocks: Vec::new(),
        },
    );
    Ok(handle)
}

/// NdisOpenConfiguration(Status, ConfigurationHandle, WrapperConfigurationContext).
pub fn open_configuration(
    k: &mut Kernel,
    status: u64,
    handle_out: u64,
    context: u64,
) -> KResult<()> {
    let Some(key) = k
        .extension::<NdisState>()
        .config_contexts
        .get(&context)
        .map(|c| c.key.clone())
    else {
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let handle = open_key(k, key)?;
    k.write_ptr(handle_out, handle)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NDIS_OBJECT_TYPE_CONFIGURATION_OBJECT.
const OBJECT_TYPE_CONFIGURATION_OBJECT: u8 = 0xA9;

/// NdisOpenConfigurationEx(ConfigObject, ConfigurationHandle) (NDIS 6): NdisHandle is an adapter
/// handle (the adapter's configuration key) or an NDIS 6 driver handle (the driver's
/// `<RegistryPath>\Parameters`).
pub fn open_configuration_ex(k: &mut Kernel, object: u64, handle_out: u64) -> KResult<NdisStatus> {
    let l = crate::layout6(k);
    let (kind, _, size) = crate::ndis6::object_header(k, object)?;
    if kind != OBJECT_TYPE_CONFIGURATION_OBJECT || size < l.config_object_flags + 4 {
        tracing::warn!(target: "ica::ndis", "NdisOpenConfigurationEx: bad object header (type {kind:#x}, size {size})");
        return Ok(NDIS_STATUS_INVALID_PARAMETER);
    }
    let owner = k.read_ptr(object + l.config_object_ndis_handle)?;
    let key = match crate::miniport::adapter_mut(k, owner) {
        Some(a) => a.config_key.clone(),
        None => match crate::ndis6::driver(k, owner) {
            Some(d) => format!(r"{}\Parameters", d.registry_path.trim_end_matches('\\')),
            None => {
                tracing::warn!(target: "ica::ndis", "NdisOpenConfigurationEx with {owner:#x}, which is neither an adapter nor a driver handle");
                return Ok(NDIS_STATUS_FAILURE);
            }
        },
    };
    let handle = open_key(k, key)?;
    k.write_ptr(handle_out, handle)?;
    Ok(NDIS_STATUS_SUCCESS)
}

/// The registry key an open configuration handle reads.
fn handle_key(k: &mut Kernel, handle: u64) -> Option<String> {
    k.extension::<NdisState>()
        .configs
        .get(&handle)
        .map(|c| c.key.clone())
}

/// NdisOpenConfigurationKeyByName(Status, ConfigurationHandle, SubKeyName, SubKeyHandle): a
/// configuration handle for the subkey `SubKeyName` (a relative path, `A\B` allowed) of the key
/// `ConfigurationHandle` reads. NDIS_STATUS_FAILURE if the handle is not open or the subkey does
/// not exist.
pub fn open_configuration_key_by_name(
    k: &mut Kernel,
    status: u64,
    handle: u64,
    name: u64,
    subkey_out: u64,
) -> KResult<()> {
    let name = rtl::read_unicode_string(k, name)?;
    let Some(parent) = handle_key(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisOpenConfigurationKeyByName({name}) with {handle:#x}, which is not an open configuration handle");
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let valid = !name.is_empty() && name.split('\\').all(|c| !c.is_empty());
    let key = registry::join_path(&parent, &name);
    if !valid || registry::backend(k).key_info(&key).is_err() {
        tracing::debug!(target: "ica::ndis", "NdisOpenConfigurationKeyByName({name}): no such subkey of {parent}");
        return put_status(k, status, NDIS_STATUS_FAILURE);
    }
    let sub = open_key(k, key)?;
    k.write_ptr(subkey_out, sub)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisOpenConfigurationKeyByIndex(Status, ConfigurationHandle, Index, KeyName, KeyHandle): a
/// configuration handle for the `Index`th subkey of the key `ConfigurationHandle` reads, and its
/// name in `*KeyName` (the string's buffer belongs to the new handle). NDIS_STATUS_FAILURE past
/// the last subkey or for a handle that is not open.
pub fn open_configuration_key_by_index(
    k: &mut Kernel,
    status: u64,
    handle: u64,
    index: u32,
    name_out: u64,
    subkey_out: u64,
) -> KResult<()> {
    let Some(parent) = handle_key(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisOpenConfigurationKeyByIndex({index}) with {handle:#x}, which is not an open configuration handle");
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let Ok(Some(info)) = registry::backend(k).enum_key(&parent, index) else {
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let sub = open_key(k, registry::join_path(&parent, &info.name))?;
    let units: Vec<u16> = info.name.encode_utf16().collect();
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    let buffer = ex::allocate(
        k,
        bytes.len() as u64 + 2,
        u32::from_le_bytes(*b"NDkn"),
        NDIS_OWNER.to_string(),
    )?;
    if let Some(c) = k.extension::<NdisState>().configs.get_mut(&sub) {
        c.blocks.push(buffer);
    }
    k.m.mem.write_bytes(buffer, &bytes)?;
    let len = bytes.len().min(0xFFFC) as u16;
    rtl::write_unicode_string_struct(k, name_out, buffer, len, len + 2)?;
    k.write_ptr(subkey_out, sub)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisCloseConfiguration(ConfigurationHandle): frees the handle and everything read through it.
pub fn close_configuration(k: &mut Kernel, handle: u64) -> KResult<()> {
    let Some(cfg) = k.extension::<NdisState>().configs.remove(&handle) else {
        return Ok(());
    };
    for block in cfg.blocks {
        ex::free(k, block, None)?;
    }
    ex::free(k, handle, None)
}

/// A value as NdisReadConfiguration hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parameter {
    Integer(u32, u32),
    Units(u32, Vec<u16>),
    Binary(Vec<u8>),
}

fn parse_integer(text: &str, hex: bool) -> Option<u32> {
    let t = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if hex {
        u32::from_str_radix(t, 16).ok()
    } else if let Some(neg) = t.strip_prefix('-') {
        neg.parse::<u32>().ok().map(u32::wrapping_neg)
    } else {
        t.parse::<u32>().ok()
    }
}

fn convert(value: &RegValue, requested: u32) -> Option<Parameter> {
    use parameter_type::*;
    let int_type = if requested == HEX_INTEGER {
        HEX_INTEGER
    } else {
        INTEGER
    };
    match value.kind {
        reg_type::DWORD => value.as_dword().map(|v| Parameter::Integer(int_type, v)),
        reg_type::SZ | reg_type::EXPAND_SZ => {
            let text = value.as_str()?;
            if requested == INTEGER || requested == HEX_INTEGER {
                parse_integer(&text, requested == HEX_INTEGER)
                    .map(|v| Parameter::Integer(requested, v))
            } else {
                Some(Parameter::Units(STRING, text.encode_utf16().collect()))
            }
        }
        reg_type::MULTI_SZ => {
            let mut units = registry::units_of(&value.data);
            while units.len() >= 2 && units[units.len() - 1] == 0 && units[units.len() - 2] == 0 {
                units.pop();
            }
            Some(Parameter::Units(MULTI_STRING, units))
        }
        reg_type::BINARY => Some(Parameter::Binary(value.data.clone())),
        _ => None,
    }
}

fn reserved_keyword(k: &mut Kernel, keyword: &str) -> Option<Parameter> {
    let v = if keyword.eq_ignore_ascii_case("Environment") {
        ENVIRONMENT_WINDOWS_NT
    } else if keyword.eq_ignore_ascii_case("ProcessorType") {
        match k.arch() {
            dbt::Arch::X86 => PROCESSOR_X86,
            dbt::Arch::X64 => PROCESSOR_AMD64,
        }
    } else if keyword.eq_ignore_ascii_case("NdisVersion") {
        crate::sync::version_for_caller(k)
    } else {
        return None;
    };
    Some(Parameter::Integer(parameter_type::INTEGER, v))
}

/// Writes an NDIS_CONFIGURATION_PARAMETER (and its data) into a pool block owned by `cfg`.
fn store_parameter(k: &mut Kernel, cfg: u64, p: &Parameter) -> KResult<u64> {
    let l = crate::layout(k);
    let header = l.configuration_parameter_size;
    let type_at = l.configuration_parameter_parameter_type;
    let payload = match p {
        Parameter::Integer(..) => 0,
        Parameter::Units(_, u) => (u.len() as u64 + 1) * 2,
        Parameter::Binary(b) => b.len() as u64,
    };
    let block = ex::allocate(
        k,
        header + payload,
        u32::from_le_bytes(*b"NDcp"),
        NDIS_OWNER.to_string(),
    )?;
    if let Some(c) = k.extension::<NdisState>().configs.get_mut(&cfg) {
        c.blocks.push(block);
    }
    let buffer = block + header;
    match p {
        Parameter::Integer(t, v) => {
            k.m.mem.write_u32(block + type_at, *t)?;
            k.m.mem
                .write_u32(block + l.configuration_parameter_integer_data, *v)?;
        }
        Parameter::Units(t, units) => {
            k.m.mem.write_u32(block + type_at, *t)?;
            let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
            k.m.mem.write_bytes(buffer, &bytes)?;
            let len = bytes.len().min(0xFFFC) as u16;
            rtl::write_unicode_string_struct(
                k,
                block + l.configuration_parameter_string_data,
                buffer,
                len,
                len + 2,
            )?;
        }
        Parameter::Binary(b) => {
            k.m.mem.write_u32(block + type_at, parameter_type::BINARY)?;
            k.m.mem.write_bytes(buffer, b)?;
            k.m.mem.write_u16(
                block + l.configuration_parameter_binary_data_length,
                b.len().min(0xFFFF) as u16,
            )?;
            k.write_ptr(block + l.configuration_parameter_binary_data_buffer, buffer)?;
        }
    }
    Ok(block)
}

fn query(k: &mut Kernel, cfg: u64, name: &str) -> Option<RegValue> {
    let key = k.extension::<NdisState>().configs.get(&cfg)?.key.clone();
    registry::backend(k)
        .query_value(&key, name)
        .ok()
        .flatten()
        .map(|(_, v)| v)
}

/// NdisReadConfiguration(Status, ParameterValue, ConfigurationHandle, Keyword, ParameterType).
pub fn read_configuration(
    k: &mut Kernel,
    status: u64,
    param_out: u64,
    cfg: u64,
    keyword: u64,
    requested: u32,
) -> KResult<()> {
    let keyword = rtl::read_unicode_string(k, keyword)?;
    if !k.extension::<NdisState>().configs.contains_key(&cfg) {
        return put_status(k, status, NDIS_STATUS_FAILURE);
    }
    let param = match reserved_keyword(k, &keyword) {
        Some(p) => Some(p),
        None => query(k, cfg, &keyword).and_then(|v| convert(&v, requested)),
    };
    let Some(param) = param else {
        tracing::debug!(target: "ica::ndis", "NdisReadConfiguration({keyword}): not found");
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let block = store_parameter(k, cfg, &param)?;
    k.write_ptr(param_out, block)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// The bytes of a NetworkAddress string: hex digit pairs, nothing else.
pub fn parse_network_address(text: &str) -> Option<Vec<u8>> {
    let t = text.trim_end_matches('\0').trim();
    if t.is_empty() || !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).ok())
        .collect()
}

/// NdisReadNetworkAddress(Status, NetworkAddress, NetworkAddressLength, ConfigurationHandle): the
/// `NetworkAddress` string value as bytes; NDIS_STATUS_FAILURE if absent or not a hex string.
pub fn read_network_address(
    k: &mut Kernel,
    status: u64,
    addr_out: u64,
    len_out: u64,
    cfg: u64,
) -> KResult<()> {
    let bytes = query(k, cfg, "NetworkAddress")
        .filter(|v| v.kind == reg_type::SZ || v.kind == reg_type::EXPAND_SZ)
        .and_then(|v| v.as_str())
        .and_then(|s| parse_network_address(&s));
    let Some(bytes) = bytes else {
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let block = ex::allocate(
        k,
        bytes.len() as u64,
        u32::from_le_bytes(*b"NDna"),
        NDIS_OWNER.to_string(),
    )?;
    if let Some(c) = k.extension::<NdisState>().configs.get_mut(&cfg) {
        c.blocks.push(block);
    }
    k.m.mem.write_bytes(block, &bytes)?;
    k.write_ptr(addr_out, block)?;
    k.m.mem.write_u32(len_out, bytes.len() as u32)?;
    put_status(k, status, NDIS_STATUS_SUCCESS)
}

/// NdisWriteConfiguration(Status, ConfigurationHandle, Keyword, ParameterValue): writes the value
/// into the key the handle reads, through the registry backend (in a confined driver host the
/// write goes to the driver manager): NdisParameterInteger and NdisParameterHexInteger as
/// REG_DWORD, NdisParameterString as REG_SZ, NdisParameterMultiString as REG_MULTI_SZ,
/// NdisParameterBinary as REG_BINARY. NDIS_STATUS_FAILURE for a handle that is not open, an
/// unknown type or a write the registry refuses.
pub fn write_configuration(
    k: &mut Kernel,
    status: u64,
    handle: u64,
    keyword: u64,
    parameter: u64,
) -> KResult<()> {
    use parameter_type::*;
    let keyword = rtl::read_unicode_string(k, keyword)?;
    let Some(key) = handle_key(k, handle) else {
        tracing::warn!(target: "ica::ndis", "NdisWriteConfiguration({keyword}) with {handle:#x}, which is not an open configuration handle");
        return put_status(k, status, NDIS_STATUS_FAILURE);
    };
    let l = crate::layout(k);
    let kind =
        k.m.mem
            .read_u32(parameter + l.configuration_parameter_parameter_type)?;
    let value = match kind {
        INTEGER | HEX_INTEGER => RegValue::dword(
            k.m.mem
                .read_u32(parameter + l.configuration_parameter_integer_data)?,
        ),
        STRING | MULTI_STRING => {
            let mut units =
                rtl::read_unicode_units(k, parameter + l.configuration_parameter_string_data)?;
            units.push(0);
            if kind == MULTI_STRING && units.len() >= 2 && units[units.len() - 2] != 0 {
                units.push(0);
            }
            let data = units.iter().flat_map(|u| u.to_le_bytes()).collect();
            let reg = if kind == STRING {
                reg_type::SZ
            } else {
                reg_type::MULTI_SZ
            };
            RegValue::new(reg, data)
        }
        BINARY => {
            let len =
                k.m.mem
                    .read_u16(parameter + l.configuration_parameter_binary_data_length)?;
            let buffer = k.read_ptr(parameter + l.configuration_parameter_binary_data_buffer)?;
            let mut data = vec![0; usize::from(len)];
            k.m.mem.read_bytes(buffer, &mut data)?;
            RegValue::binary(&data)
        }
        other => {
            tracing::warn!(target: "ica::ndis", "NdisWriteConfiguration({keyword}): unknown parameter type {other}");
            return put_status(k, status, NDIS_STATUS_FAILURE);
        }
    };
    match registry::backend(k).set_value(&key, &keyword, &value) {
        Ok(()) => put_status(k, status, NDIS_STATUS_SUCCESS),
        Err(e) => {
            tracing::warn!(target: "ica::ndis", "NdisWriteConfiguration({key}\\{keyword}): {e}");
            put_status(k, status, NDIS_STATUS_FAILURE)
        }
    }
}

pub(crate) static EXPORTS: &[Export] = export_table![
    stdcall NdisOpenConfiguration => open_configuration(status: u64, configuration_handle: u64, wrapper_configuration_context: u64);
    stdcall NdisReadConfiguration => read_configuration(status: u64, parameter_value: u64, configuration_handle: u64, keyword: u64, parameter_type: u32);
    stdcall NdisOpenConfigurationEx => open_configuration_ex(config_object: u64, configuration_handle: u64);
    stdcall NdisWriteConfiguration => write_configuration(status: u64, configuration_handle: u64, keyword: u64, parameter_value: u64);
    stdcall NdisCloseConfiguration => close_configuration(configuration_handle: u64);
    stdcall NdisOpenConfigurationKeyByName => open_configuration_key_by_name(status: u64, configuration_handle: u64, sub_key_name: u64, sub_key_handle: u64);
    stdcall NdisOpenConfigurationKeyByIndex => open_configuration_key_by_index(status: u64, configuration_handle: u64, index: u32, key_name: u64, key_handle: u64);
    stdcall NdisReadNetworkAddress => read_network_address(status: u64, network_address: u64, network_address_length: u64, configuration_handle: u64);
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{block, kernel, ARCHES};

    const KEY: &str = r"\Registry\Machine\System\CurrentControlSet\Control\Class\Test\0000";

    fn string(k: &mut Kernel, text: &str) -> u64 {
        rtl::alloc_unicode_string(k, text, 0x7473_6554).unwrap()
    }

    #[test]
    fn subkeys_open_by_name_and_by_index_and_close_with_their_storage() {
        for arch in ARCHES {
            let mut k = kernel(arch);
            let b = registry::backend(&mut k);
            for sub in [r"Ndi\params\IoMode", r"Ndi\params\*SpeedDuplex"] {
                b.create_key_path(&format!(r"{KEY}\{sub}")).unwrap();
            }
            b.set_value(
                &format!(r"{KEY}\Ndi\params\IoMode"),
                "default",
                &RegValue::sz("1"),
            )
            .unwrap();
            let ctx = configuration_context_for_key(&mut k, KEY).unwrap();
            let out = block(&mut k, 64);
            let (status, handle, name) = (out, out + 8, out + 16);
            open_configuration(&mut k, status, handle, ctx).unwrap();
            let cfg = k.read_ptr(handle).unwrap();
            let open = |k: &mut Kernel, parent: u64, text: &str| {
                let s = string(k, text);
                open_configuration_key_by_name(k, status, parent, s, handle).unwrap();
                let st = k.m.mem.read_u32(status).unwrap();
                (st == NDIS_STATUS_SUCCESS).then(|| k.read_ptr(handle).unwrap())
            };
            let ndi = open(&mut k, cfg, "ndi").expect("names are case-insensitive");
            let params = open(&mut k, ndi, "params").expect("params");
            assert!(
                open(&mut k, cfg, r"Ndi\params\IoMode").is_some(),
                "a relative path"
            );
            for bad in ["nothing", "", r"Ndi\\params", r"\Ndi"] {
                assert!(open(&mut k, cfg, bad).is_none(), "{arch:?}: {bad:?}");
            }
            assert!(
                open(&mut k, 0x4321, "Ndi").is_none(),
                "not a configuration handle"
            );

            let mut names = Vec::new();
            for index in 0.. {
                open_configuration_key_by_index(&mut k, status, params, index, name, handle)
                    .unwrap();
                if k.m.mem.read_u32(status).unwrap() != NDIS_STATUS_SUCCESS {
                    break;
                }
                names.push(rtl::read_unicode_string(&k, name).unwrap());
                let sub = k.read_ptr(handle).unwrap();
                let kw = string(&mut k, "default");
                read_configuration(&mut k, status, out + 24, sub, kw, parameter_type::INTEGER)
                    .unwrap();
                let found = k.m.mem.read_u32(status).unwrap() == NDIS_STATUS_SUCCESS;
                assert_eq!(found, names.last().unwrap() == "IoMode");
                close_configuration(&mut k, sub).unwrap();
            }
            names.sort();
            assert_eq!(names, ["*SpeedDuplex", "IoMode"], "{arch:?}");
            for h in [params, ndi, cfg] {
                close_configuration(&mut k, h).unwrap();
            }
            assert!(
                k.extension::<NdisState>().configs.len() == 1,
                "the path-opened handle"
            );
            for tag in [b"NDkn", b"NDcp"] {
                let usage = k.pool.tag_usage(u32::from_le_bytes(*tag));
                assert!(
                    usage.allocations > 0 && usage.blocks == 0,
                    "{tag:?}: {usage:?}"
                );
            }
        }
    }

    #[test]
    fn network_address_parsing() {
        assert_eq!(
            parse_network_address("0200DEADBEEF"),
            Some(vec![2, 0, 0xDE, 0xAD, 0xBE, 0xEF])
        );
        assert_eq!(parse_network_address("02-00"), None);
        assert_eq!(parse_network_address("123"), None);
        assert_eq!(parse_network_address(""), None);
    }

    #[test]
    fn string_to_integer_conversion() {
        let v = RegValue::sz("10");
        assert_eq!(
            convert(&v, parameter_type::INTEGER),
            Some(Parameter::Integer(0, 10))
        );
        assert_eq!(
            convert(&v, parameter_type::HEX_INTEGER),
            Some(Parameter::Integer(1, 16))
        );
        assert_eq!(
            convert(&RegValue::dword(7), parameter_type::STRING),
            Some(Parameter::Integer(0, 7))
        );
        assert_eq!(convert(&RegValue::sz("x"), parameter_type::INTEGER), None);
    }
}
