//! rtl8139_ndis5.sys (an NDIS 5.1 miniport): DriverEntry initializes the NDIS wrapper and registers
//! the miniport; the host sees the recorded characteristics. The configuration API is exercised
//! from the host against the driver's service key.

use ica_tests::{driver_path, host, ARCHES};
use ndis::{config, Handler};
use ntoskrnl::registry::{self, RegValue};
use ntoskrnl::{ex, Kernel};

#[test]
fn driver_entry_registers_an_ndis51_miniport() {
    for arch in ARCHES {
        let mut h = host(arch);
        h.load_driver(&driver_path(arch, "rtl8139_ndis5"))
            .unwrap_or_else(|e| panic!("{}: {e}", arch.name()));
        let image =
            h.k.images
                .iter()
                .find(|i| i.name == "rtl8139_ndis5.sys")
                .cloned()
                .expect("image mapped");
        let wrappers = ndis::wrappers(&mut h.k);
        assert_eq!(wrappers.len(), 1, "{}: one wrapper", arch.name());
        let (_, w) = &wrappers[0];
        assert!(
            w.registry_path.ends_with(r"\Services\rtl8139_ndis5"),
            "{}",
            w.registry_path
        );
        assert_eq!(w.image, "rtl8139_ndis5.sys");
        let m = w.miniport.as_ref().expect("miniport registered");
        assert_eq!((m.major, m.minor), (5, 1));
        let inside = |a: u64| a >= image.base && a < image.base + image.size;
        for handler in [
            Handler::Initialize,
            Handler::Halt,
            Handler::QueryInformation,
            Handler::SetInformation,
            Handler::Reset,
            Handler::CheckForHang,
            Handler::Isr,
            Handler::HandleInterrupt,
            Handler::SendPackets,
            Handler::ReturnPacket,
            Handler::TransferData,
            Handler::AdapterShutdown,
        ] {
            assert!(
                inside(m.handler(handler)),
                "{}: {handler:?} = {:#x} inside the image",
                arch.name(),
                m.handler(handler)
            );
        }
        for absent in [Handler::Send, Handler::CoRequest] {
            assert_eq!(m.handler(absent), 0, "{}: {absent:?}", arch.name());
        }
    }
}

fn unicode(k: &mut Kernel, text: &str) -> u64 {
    ntoskrnl::rtl::alloc_unicode_string(k, text, 0x7473_6554).unwrap()
}

#[test]
fn configuration_reads_the_service_parameters_key() {
    for arch in ARCHES {
        let mut h = host(arch);
        h.load_driver(&driver_path(arch, "rtl8139_ndis5"))
            .unwrap_or_else(|e| panic!("{e}"));
        let k = &mut h.k;
        let params = format!(r"{}\Parameters", registry::service_path("rtl8139_ndis5"));
        let b = registry::backend(k);
        b.create_key_path(&params).unwrap();
        b.set_value(&params, "*SpeedDuplex", &RegValue::sz("6"))
            .unwrap();
        b.set_value(&params, "Mtu", &RegValue::dword(1500)).unwrap();
        b.set_value(&params, "NetworkAddress", &RegValue::sz("020000C0FFEE"))
            .unwrap();
        let wrapper = ndis::wrappers(k)[0].0;
        let ctx = config::configuration_context(k, wrapper).unwrap().unwrap();
        let scratch = ex::allocate(k, 64, 0, "test".into()).unwrap();
        let (status, out, len) = (scratch, scratch + 8, scratch + 16);
        config::open_configuration(k, status, out, ctx).unwrap();
        assert_eq!(k.m.mem.read_u32(status).unwrap(), ndis::NDIS_STATUS_SUCCESS);
        let cfg = k.read_ptr(out).unwrap();
        let ptr = k.ptr_size();

        let kw = unicode(k, "*SpeedDuplex");
        config::read_configuration(k, status, out, cfg, kw, config::parameter_type::INTEGER)
            .unwrap();
        assert_eq!(k.m.mem.read_u32(status).unwrap(), 0);
        let p = k.read_ptr(out).unwrap();
        assert_eq!(k.m.mem.read_u32(p).unwrap(), 0, "NdisParameterInteger");
        assert_eq!(k.m.mem.read_u32(p + ptr).unwrap(), 6);

        config::read_configuration(k, status, out, cfg, kw, config::parameter_type::STRING)
            .unwrap();
        let p = k.read_ptr(out).unwrap();
        assert_eq!(k.m.mem.read_u32(p).unwrap(), 2, "NdisParameterString");
        assert_eq!(ntoskrnl::rtl::read_unicode_string(k, p + ptr).unwrap(), "6");

        let kw = unicode(k, "mtu");
        config::read_configuration(k, status, out, cfg, kw, config::parameter_type::HEX_INTEGER)
            .unwrap();
        let p = k.read_ptr(out).unwrap();
        assert_eq!(k.m.mem.read_u32(p + ptr).unwrap(), 1500);

        let kw = unicode(k, "Missing");
        config::read_configuration(k, status, out, cfg, kw, 0).unwrap();
        assert_eq!(k.m.mem.read_u32(status).unwrap(), ndis::NDIS_STATUS_FAILURE);

        config::read_network_address(k, status, out, len, cfg).unwrap();
        assert_eq!(k.m.mem.read_u32(status).unwrap(), 0);
        let addr = k.read_ptr(out).unwrap();
        assert_eq!(k.m.mem.read_u32(len).unwrap(), 6);
        assert_eq!(
            k.m.mem.read_vec(addr, 6).unwrap(),
            [2, 0, 0, 0xC0, 0xFF, 0xEE]
        );

        let before = k.pool.bytes_owned_by("ndis.sys");
        config::close_configuration(k, cfg).unwrap();
        assert!(k.pool.bytes_owned_by("ndis.sys") < before);
        assert!(k.extension::<ndis::NdisState>().configs.is_empty());
    }
}
