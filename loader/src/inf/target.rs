//! Target platforms and TargetOS decorations (`NTamd64`, `NTx86.5.1`, `NTamd64.10.0...16299`).
//!
//! Decoration syntax: `NT[Architecture][.[OSMajorVersion][.[OSMinorVersion][.[ProductType]
//! [.[SuiteMask][.[BuildNumber]]]]]]`. A decoration applies to a target if every part it names
//! matches: the architecture is the target's, the OS version (with build) is not newer than the
//! target's, the product type is the target's, the target has all suite bits of the mask.

use std::fmt;

use super::model::parse_int;

/// Processor architecture of a driver / target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86,
    Amd64,
    Ia64,
    Arm,
    Arm64,
}

impl Arch {
    /// The name used in decorations (`NTamd64`) and in `SourceDisksFiles.amd64`.
    pub fn inf_name(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::Amd64 => "amd64",
            Arch::Ia64 => "ia64",
            Arch::Arm => "arm",
            Arch::Arm64 => "arm64",
        }
    }

    /// Parse an INF architecture name (case-insensitive).
    pub fn from_inf_name(s: &str) -> Option<Arch> {
        Some(match s.to_ascii_lowercase().as_str() {
            "x86" => Arch::X86,
            "amd64" => Arch::Amd64,
            "ia64" => Arch::Ia64,
            "arm" => Arch::Arm,
            "arm64" => Arch::Arm64,
            _ => return None,
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.inf_name())
    }
}

/// `VER_NT_WORKSTATION`.
pub const PRODUCT_WORKSTATION: u32 = 1;
/// `VER_NT_DOMAIN_CONTROLLER`.
pub const PRODUCT_DOMAIN_CONTROLLER: u32 = 2;
/// `VER_NT_SERVER`.
pub const PRODUCT_SERVER: u32 = 3;

/// The Windows an install is done for: the architecture of the driver, and the OS version the
/// sandbox pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetOs {
    pub arch: Arch,
    pub major: u32,
    pub minor: u32,
    pub build: u32,
    /// 1 workstation, 2 domain controller, 3 server.
    pub product_type: u32,
    pub suite_mask: u32,
}

impl TargetOs {
    /// Windows 10 22H2 workstation.
    pub fn windows10(arch: Arch) -> TargetOs {
        TargetOs {
            arch,
            major: 10,
            minor: 0,
            build: 19045,
            product_type: PRODUCT_WORKSTATION,
            suite_mask: 0,
        }
    }

    /// Windows 7 SP1 workstation.
    pub fn windows7(arch: Arch) -> TargetOs {
        TargetOs {
            arch,
            major: 6,
            minor: 1,
            build: 7601,
            product_type: PRODUCT_WORKSTATION,
            suite_mask: 0,
        }
    }

    /// Windows XP (x64 edition is 5.2) workstation, for old drivers.
    pub fn windows_xp(arch: Arch) -> TargetOs {
        let (minor, build) = if arch == Arch::X86 {
            (1, 2600)
        } else {
            (2, 3790)
        };
        TargetOs {
            arch,
            major: 5,
            minor,
            build,
            product_type: PRODUCT_WORKSTATION,
            suite_mask: 0,
        }
    }

    /// The platform extension of install sections for this architecture (`NTamd64`).
    pub fn platform_extension(&self) -> String {
        format!("NT{}", self.arch.inf_name())
    }
}

/// A parsed TargetOS decoration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoration {
    /// The text as written (e.g. `NTamd64.10.0...16299`).
    pub text: String,
    pub arch: Option<Arch>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub product_type: Option<u32>,
    pub suite_mask: Option<u32>,
    pub build: Option<u32>,
}

impl Decoration {
    /// Parse a decoration; None if it is not of the `NT...` form.
    pub fn parse(text: &str) -> Option<Decoration> {
        let t = text.trim();
        if t.len() < 2 || !t.is_char_boundary(2) || !t[..2].eq_ignore_ascii_case("NT") {
            return None;
        }
        let rest = &t[2..];
        let (arch_s, vers) = match rest.find('.') {
            Some(p) => (&rest[..p], Some(&rest[p + 1..])),
            None => (rest, None),
        };
        let arch = if arch_s.is_empty() {
            None
        } else {
            Some(Arch::from_inf_name(arch_s)?)
        };
        let mut parts: [Option<u32>; 5] = [None; 5];
        if let Some(v) = vers {
            let split: Vec<&str> = v.split('.').collect();
            if split.len() > 5 {
                return None;
            }
            for (i, p) in split.iter().enumerate() {
                let p = p.trim();
                if !p.is_empty() {
                    parts[i] = Some(parse_int(p)?);
                }
            }
        }
        Some(Decoration {
            text: t.to_string(),
            arch,
            major: parts[0],
            minor: parts[1],
            product_type: parts[2],
            suite_mask: parts[3],
            build: parts[4],
        })
    }

    /// Whether the decoration applies to `target`.
    pub fn applies_to(&self, target: &TargetOs) -> bool {
        if self.arch.is_some_and(|a| a != target.arch) {
            return false;
        }
        let want = (
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.build.unwrap_or(0),
        );
        if want > (target.major, target.minor, target.build) {
            return false;
        }
        if self.product_type.is_some_and(|p| p != target.product_type) {
            return false;
        }
        if self.suite_mask.is_some_and(|m| target.suite_mask & m != m) {
            return false;
        }
        true
    }

    /// Specificity: among decorations that apply, the greatest is chosen. Architecture first
    /// (the binaries must match), then the newest OS version, then product type and suite.
    pub fn rank(&self) -> (bool, u32, u32, u32, bool, bool) {
        (
            self.arch.is_some(),
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.build.unwrap_or(0),
            self.product_type.is_some(),
            self.suite_mask.is_some(),
        )
    }
}

impl fmt::Display for Decoration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decorations() {
        let d = Decoration::parse("NTamd64.10.0...16299").unwrap();
        assert_eq!(
            (d.arch, d.major, d.minor, d.product_type, d.build),
            (Some(Arch::Amd64), Some(10), Some(0), None, Some(16299))
        );
        assert!(d.applies_to(&TargetOs::windows10(Arch::Amd64)));
        assert!(!d.applies_to(&TargetOs {
            build: 14393,
            ..TargetOs::windows10(Arch::Amd64)
        }));
        assert!(!d.applies_to(&TargetOs::windows10(Arch::X86)));
        assert!(Decoration::parse("nt")
            .unwrap()
            .applies_to(&TargetOs::windows_xp(Arch::X86)));
        assert!(Decoration::parse("NTfoo").is_none());
        assert!(Decoration::parse("Win9x").is_none());
        assert!(Decoration::parse("NTx86.a").is_none());
        assert!(!Decoration::parse("NTx86.6.0")
            .unwrap()
            .applies_to(&TargetOs::windows_xp(Arch::X86)));
        assert!(Decoration::parse("NTamd64.6.3.0x3")
            .unwrap()
            .applies_to(&TargetOs {
                product_type: 3,
                ..TargetOs::windows10(Arch::Amd64)
            }));
    }
}
