//! Object manager references: ObfReferenceObject / ObfDereferenceObject (and the stdcall
//! ObDereferenceObject older drivers import), and the references
//! IoGetAttachedDeviceReference takes. Objects here are the I/O manager's (devices, drivers,
//! files); their lifetime is the I/O manager's, so a reference only keeps count: who took it
//! (driver image and call site), so that the verifier can name, at unload, references a driver took
//! and never dropped.

use std::collections::BTreeMap;

use crate::export::Export;
use crate::verifier::{self, irql, Rule};
use crate::{export_table, KResult, Kernel};

/// One reference a driver took: its image and the return address of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    owner: String,
    site: Option<u64>,
}

/// References taken through the object manager, by object (`k.extension::<References>()`).
#[derive(Debug, Default)]
pub struct References {
    taken: BTreeMap<u64, Vec<Reference>>,
}

impl References {
    /// References held on `object`.
    pub fn count(&self, object: u64) -> usize {
        self.taken.get(&object).map_or(0, Vec::len)
    }
}

/// Takes a reference on `object` for the driver making the current call; returns how many it
/// has now.
pub fn reference(k: &mut Kernel, object: u64) -> u64 {
    let r = Reference {
        owner: k.caller_image(),
        site: k.call_site().map(|s| s.address),
    };
    let refs = k.extension::<References>().taken.entry(object).or_default();
    refs.push(r);
    refs.len() as u64
}

/// ObfReferenceObject(Object) -> a value reserved for the system (the references held now).
pub fn reference_object(k: &mut Kernel, object: u64) -> KResult<u64> {
    Ok(reference(k, object))
}

/// ObfDereferenceObject(Object) -> a value reserved for the system (the references left). Drops a
/// reference the calling driver took if it holds one, else any; objects get their first reference
/// from their creator, which is not counted, so dropping one more than were taken is allowed.
pub fn dereference_object(k: &mut Kernel, object: u64) -> KResult<u64> {
    let owner = k.caller_image();
    let refs = k.extension::<References>();
    let Some(list) = refs.taken.get_mut(&object) else {
        return Ok(0);
    };
    let at = list
        .iter()
        .rposition(|r| r.owner == owner)
        .unwrap_or(list.len() - 1);
    list.remove(at);
    let left = list.len() as u64;
    if left == 0 {
        refs.taken.remove(&object);
    }
    Ok(left)
}

/// Unload check (the verifier is on): references the driver image took and never dropped, one
/// finding per object.
pub(crate) fn check_unload(k: &mut Kernel, image: &str) {
    let held: Vec<(u64, Vec<Option<u64>>)> = k
        .extension::<References>()
        .taken
        .iter()
        .map(|(&o, refs)| {
            let sites = refs.iter().filter(|r| r.owner == image).map(|r| r.site);
            (o, sites.collect::<Vec<_>>())
        })
        .filter(|(_, sites)| !sites.is_empty())
        .collect();
    for (object, sites) in held {
        let site = sites[0].map(|s| k.site(s));
        let at = site
            .as_ref()
            .map(|s| format!(", taken at {s}"))
            .unwrap_or_default();
        let detail = format!(
            "{} reference(s) to object {object:#x} never dropped (ObDereferenceObject){at}",
            sites.len()
        );
        verifier::note(k, Rule::ReferenceLeak, image, site, None, detail);
    }
}

pub(crate) static EXPORTS: &[Export] = export_table![
    fastcall ObfReferenceObject => reference_object(object: u64) @ irql::DISPATCH;
    fastcall ObfDereferenceObject => dereference_object(object: u64) @ irql::DISPATCH;
    stdcall ObDereferenceObject => dereference_object(object: u64) @ irql::DISPATCH;
];

#[cfg(test)]
mod tests {
    use dbt::{Arch, CallConv};

    use super::*;
    use crate::crt::test_support::Guest;
    use crate::MODULE;

    #[test]
    fn ob_dereference_object_is_the_stdcall_export_of_obf_dereference_object() {
        let export = MODULE.find("ObDereferenceObject").expect("bound");
        assert_eq!((export.conv, export.slots32), (CallConv::Stdcall, 1));
        let mut g = Guest::new(Arch::X86);
        let object = g.zeroed(16);
        reference(&mut g.k, object);
        reference(&mut g.k, object);
        assert_eq!((export.func)(&mut g.k, &[object]).unwrap(), 1);
        assert_eq!(g.k.extension::<References>().count(object), 1);
    }
}
