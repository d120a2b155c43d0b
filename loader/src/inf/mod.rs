//! The INF parser: reads a driver's `.inf` (any encoding Windows accepts) and turns the part
//! an install needs into an [`InstallPlan`] for the installer.
//!
//! Two layers:
//! - [`syntax`]: bytes -> [`InfFile`]: sections, lines, fields, `%strkey%` substitution
//!   (locale-aware), `%N%` DIRIDs kept symbolic ([`DirId`]), every line with its `file:line`;
//! - the semantic layer ([`Inf`], [`model`], [`install`], [`reg`], [`net`]): `[Version]`,
//!   `[Manufacturer]` and the TargetOS decoration that fits a [`TargetOs`], Models, DDInstall
//!   with its `.HW` / `.Services` subsections, CopyFiles / SourceDisks* / DestinationDirs,
//!   AddReg / DelReg, AddService, Include / Needs (through an [`IncludeResolver`]) and the Net
//!   class keys, resolved into an [`InstallPlan`].
//!
//! Errors are [`InfError`]s displayed as `file:line: message`; a plan is built completely or not
//! at all. Unknown directives are ignored with an [`InfWarning`], as Windows ignores them.
//!
//! ```
//! use loader::inf::{Arch, Inf, NoIncludes, TargetOs};
//! let text = "[Version]\nSignature=\"$Windows NT$\"\n[DefaultInstall.NTamd64]\nCopyFiles=@a.sys\n\
//!             [DefaultInstall.NTamd64.Services]\nAddService=A,,A_Svc\n[A_Svc]\nServiceType=1\n\
//!             StartType=3\nErrorControl=1\nServiceBinary=%12%\\a.sys\n[DestinationDirs]\n\
//!             DefaultDestDir=12\n[SourceDisksNames]\n1=\"Disk\"\n[SourceDisksFiles]\na.sys=1\n";
//! let inf = Inf::parse("a.inf", text.as_bytes()).unwrap();
//! let plan = inf.plan_default_install(&TargetOs::windows10(Arch::Amd64), &NoIncludes).unwrap();
//! assert_eq!(plan.services[0].binary.to_string(), "%12%\\a.sys");
//! assert_eq!(plan.files[0].source_path, "a.sys");
//! ```

mod decode;
pub mod dirid;
mod error;
pub mod install;
pub mod model;
pub mod net;
pub mod reg;
pub mod syntax;
pub mod target;

pub use decode::{decode, Encoding};
pub use dirid::{DirId, InfPath};
pub use error::{InfError, InfWarning, Origin};
pub use install::{
    DirResolver, EventLogInstall, FileCopy, IncludeResolver, IncludedInf, InstallPlan, KmdfService,
    NoIncludes, PlanKind, ServiceInstall,
};
pub use model::{parse_int, DeviceMatch, DriverVer, Guid, Inf, Manufacturer, Model, Version};
pub use net::{NdiEnumValue, NdiParam, NdiParamType, NetInfo};
pub use reg::{HkrBase, RegAction, RegData, RegOp, RegRoot};
pub use syntax::{Field, InfFile, Line, ParseOptions, Piece, Section};
pub use target::{Arch, Decoration, TargetOs};
