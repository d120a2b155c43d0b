//! The API-coverage report: which Windows exports the personality implements, generated from the
//! same export tables the import binder uses, optionally measured against a reference list of the
//! functions real drivers import (`interfaces.tsv`: module, function, ..., priority columns).
//!
//! Reference rows whose `xp_export` column says `macro->block` are NDIS 5 macros that call through
//! an NDIS_MINIPORT_BLOCK field (no import entry): they count as implemented exactly when ndis's
//! [`BLOCK_MACROS`](ndis::miniport::BLOCK_MACROS) table, which also fills the block, has a handler
//! for them, and the report lists them as implemented through the block.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ntoskrnl::Module;

/// One reference row: a function real drivers import, with its priority (P0, P1, P2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Module file name, e.g. `ntoskrnl.exe`.
    pub module: String,
    /// Function name.
    pub function: String,
    /// Priority label.
    pub priority: String,
    /// An NDIS 5 macro that calls through an NDIS_MINIPORT_BLOCK field (`xp_export` column
    /// `macro->block...`), not an import.
    pub through_block: bool,
}

/// Parses the reference TSV (a header row naming at least `module`, `function` and `priority`;
/// an optional `xp_export` column marks the macros that call through the miniport block).
pub fn parse_reference(text: &str) -> Result<Vec<Wanted>, String> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or("empty reference file")?;
    let columns: Vec<&str> = header.split('\t').collect();
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or(format!("line 1: no '{name}' column"))
    };
    let (m, f, p) = (col("module")?, col("function")?, col("priority")?);
    let xp_export = col("xp_export").ok();
    let mut rows = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        let cell = |i: usize| {
            cells
                .get(i)
                .map(|s| s.trim().to_string())
                .ok_or(format!("line {}: too few columns", n + 1))
        };
        let through_block = match xp_export {
            Some(x) => cell(x)?.starts_with("macro->block"),
            None => false,
        };
        rows.push(Wanted {
            module: cell(m)?,
            function: cell(f)?,
            priority: cell(p)?,
            through_block,
        });
    }
    Ok(rows)
}

fn implements(modules: &[&'static Module], module: &str, function: &str) -> bool {
    modules
        .iter()
        .any(|m| m.name.eq_ignore_ascii_case(module) && m.provides(function))
}

/// The block macro a `macro->block` row names, if ndis implements the field it calls through.
fn through_block(w: &Wanted) -> Option<&'static ndis::miniport::BlockMacro> {
    let ndis = w.module.eq_ignore_ascii_case(ndis::MODULE.name);
    ndis.then(|| ndis::miniport::block_macro(&w.function))
        .flatten()
}

/// The report: exports implemented per module and, given a reference list, per module and priority
/// how many of the wanted functions are implemented (listing the missing ones when `list_missing`).
pub fn report(
    modules: &[&'static Module],
    reference: Option<&[Wanted]>,
    list_missing: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "implemented exports:");
    for m in modules {
        let _ = writeln!(out, "  {:<13} {}", m.name, m.exports().count());
    }
    let block_macros = ndis::miniport::BLOCK_MACROS
        .iter()
        .filter(|m| m.handler().is_some())
        .count();
    let _ = writeln!(
        out,
        "  {:<13} {block_macros} NDIS 5 macros through NDIS_MINIPORT_BLOCK fields",
        ndis::MODULE.name
    );
    let Some(reference) = reference else {
        return out;
    };
    let mut table: BTreeMap<(String, String), (usize, usize, Vec<String>)> = BTreeMap::new();
    let mut via_block = Vec::new();
    for w in reference {
        let entry = table
            .entry((w.module.to_ascii_lowercase(), w.priority.clone()))
            .or_default();
        entry.1 += 1;
        let done = if w.through_block {
            let m = through_block(w);
            if let Some(m) = m {
                via_block.push(format!("{} -> {} ({})", m.name, m.field, w.priority));
            }
            m.is_some()
        } else {
            implements(modules, &w.module, &w.function)
        };
        if done {
            entry.0 += 1;
        } else {
            entry.2.push(w.function.clone());
        }
    }
    let _ = writeln!(
        out,
        "reference functions implemented (module, priority: implemented/listed):"
    );
    for ((module, priority), (done, total, missing)) in &table {
        let _ = writeln!(out, "  {module:<13} {priority}: {done}/{total}");
        if list_missing && !missing.is_empty() {
            let _ = writeln!(out, "    missing: {}", missing.join(", "));
        }
    }
    if !via_block.is_empty() {
        let _ = writeln!(
            out,
            "implemented through NDIS_MINIPORT_BLOCK fields (NDIS 5 macros, no import):"
        );
        for line in via_block {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "module\tfunction\tcategory\tpriority\n\
        ntoskrnl.exe\tIoCreateDevice\tio\tP0\n\
        ntoskrnl.exe\tFsRtlIsNameInExpression\tfs\tP0\n\
        HAL.dll\tKfRaiseIrql\tirql\tP1\n\
        ndis.sys\tNdisMIndicateStatus\tndis\tP0\n\
        ndis.sys\tNdisRegisterPoll\tndis\tP0\n";

    #[test]
    fn report_counts_implemented_reference_functions_from_the_export_tables() {
        let modules = crate::host::modules();
        let rows = parse_reference(SAMPLE).unwrap();
        let text = report(&modules, Some(&rows), true);
        assert!(text.contains("ntoskrnl.exe  P0: 1/2"), "{text}");
        assert!(text.contains("missing: FsRtlIsNameInExpression"), "{text}");
        assert!(text.contains("hal.dll       P1: 1/1"), "{text}");
        assert!(text.contains("ndis.sys      P0: 1/2"), "{text}");
        assert!(text.contains("missing: NdisRegisterPoll"), "{text}");
        let implemented = modules[0].exports().count();
        assert!(
            text.contains(&format!("ntoskrnl.exe  {implemented}")),
            "{text}"
        );
    }

    const WITH_MACROS: &str = "module\tfunction\tpriority\txp_export\n\
        ndis.sys\tNdisMEthIndicateReceive\tP1\tmacro->block\n\
        ndis.sys\tNdisMIndicateReceivePacket\tP1\tmacro->block\n\
        ndis.sys\tNdisMSendComplete\tP1\tmacro->block(also exported)\n\
        ndis.sys\tNdisMTrIndicateReceive\tP1\tmacro->block\n\
        ndis.sys\tNdisMMapIoSpace\tP0\tyes\n\
        ndis.sys\tPacketIndicateHandler\tP0\tyes\n";

    #[test]
    fn macro_rows_count_through_the_miniport_block_table() {
        let rows = parse_reference(WITH_MACROS).unwrap();
        assert!(rows[0].through_block && rows[2].through_block && !rows[4].through_block);
        let text = report(&crate::host::modules(), Some(&rows), true);
        // Ethernet and packet indications and send completion go through fields ndis fills;
        // token ring (TrRxIndicateHandler) does not. A block handler is no export of its own.
        assert!(text.contains("ndis.sys      P1: 3/4"), "{text}");
        assert!(text.contains("missing: NdisMTrIndicateReceive"), "{text}");
        assert!(text.contains("ndis.sys      P0: 1/2"), "{text}");
        assert!(text.contains("missing: PacketIndicateHandler"), "{text}");
        assert!(
            text.contains(
                "implemented through NDIS_MINIPORT_BLOCK fields (NDIS 5 macros, no import):\n  \
                 NdisMEthIndicateReceive -> EthRxIndicateHandler (P1)\n  \
                 NdisMIndicateReceivePacket -> PacketIndicateHandler (P1)\n  \
                 NdisMSendComplete -> SendCompleteHandler (P1)\n"
            ),
            "{text}"
        );
        let fields = ndis::miniport::BLOCK_MACROS.len();
        assert!(
            text.contains(&format!(
                "ndis.sys      {fields} NDIS 5 macros through NDIS_MINIPORT_BLOCK fields"
            )),
            "{text}"
        );
    }

    #[test]
    fn malformed_reference_names_the_line() {
        assert_eq!(
            parse_reference("a\tb\n").unwrap_err(),
            "line 1: no 'module' column"
        );
        let err = parse_reference("module\tfunction\tpriority\nntoskrnl.exe\tX\n").unwrap_err();
        assert_eq!(err, "line 2: too few columns");
    }
}
