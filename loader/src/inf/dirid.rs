//! Directory identifiers (DIRIDs): the numbers INFs use for well-known directories, in
//! `[DestinationDirs]` and as `%N%` tokens in paths. The parser keeps them symbolic; the installer
//! maps them to real directories of its driver store.

use std::fmt;

use super::syntax::{Field, Piece};

/// A DIRID. Known values have associated constants; any number is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirId(pub i32);

impl DirId {
    /// An absolute path follows (`-1`).
    pub const ABSOLUTE: DirId = DirId(-1);
    /// The directory the INF was installed from (the source media / package directory).
    pub const SOURCE: DirId = DirId(1);
    /// `%SystemRoot%` (e.g. `C:\Windows`).
    pub const WINDOWS: DirId = DirId(10);
    /// `%SystemRoot%\System32`.
    pub const SYSTEM32: DirId = DirId(11);
    /// `%SystemRoot%\System32\drivers`.
    pub const DRIVERS: DirId = DirId(12);
    /// The driver package's directory in the driver store (Windows 10 1709 and later).
    pub const DRIVER_STORE: DirId = DirId(13);
    /// `%SystemRoot%\INF`.
    pub const INF: DirId = DirId(17);
    /// `%SystemRoot%\Help`.
    pub const HELP: DirId = DirId(18);
    /// `%SystemRoot%\Fonts`.
    pub const FONTS: DirId = DirId(20);
    /// Viewers directory.
    pub const VIEWERS: DirId = DirId(21);
    /// Color profiles (`System32\spool\drivers\color`).
    pub const COLOR: DirId = DirId(23);
    /// Root of the system disk (`C:\`).
    pub const SYSTEM_DISK_ROOT: DirId = DirId(24);
    /// Shared directory.
    pub const SHARED: DirId = DirId(25);
    /// Root of the boot drive.
    pub const BOOT_ROOT: DirId = DirId(30);
    /// 16-bit system directory (`%SystemRoot%\System`).
    pub const SYSTEM16: DirId = DirId(50);
    /// Spool directory.
    pub const SPOOL: DirId = DirId(51);
    /// Spool drivers directory.
    pub const SPOOL_DRIVERS: DirId = DirId(52);
    /// User profile directory.
    pub const USER_PROFILE: DirId = DirId(53);
    /// Directory of the boot loader.
    pub const BOOT_LOADER: DirId = DirId(54);
    /// Print processors directory.
    pub const PRINT_PROCESSORS: DirId = DirId(55);
    /// `Program Files` (CSIDL_PROGRAM_FILES + 16384).
    pub const PROGRAM_FILES: DirId = DirId(16422);
    /// `Program Files\Common Files`.
    pub const COMMON_FILES: DirId = DirId(16427);
    /// All users' application data.
    pub const COMMON_APPDATA: DirId = DirId(16419);

    /// The directory relative to `%SystemRoot%` for DIRIDs under it (`System32\drivers` for
    /// 12); None for the others (driver store, source, user and absolute paths ...).
    pub fn under_system_root(self) -> Option<&'static str> {
        Some(match self.0 {
            10 => "",
            11 => "System32",
            12 => "System32\\drivers",
            17 => "INF",
            18 => "Help",
            20 => "Fonts",
            50 => "System",
            51 => "System32\\spool",
            52 => "System32\\spool\\drivers",
            _ => return None,
        })
    }

    /// A short description of a known DIRID (None for others).
    pub fn describe(self) -> Option<&'static str> {
        Some(match self.0 {
            -1 => "absolute path",
            1 => "source directory",
            10 => "Windows directory",
            11 => "System32",
            12 => "System32\\drivers",
            13 => "driver store",
            17 => "Windows\\INF",
            18 => "Windows\\Help",
            20 => "Windows\\Fonts",
            21 => "viewers",
            23 => "color profiles",
            24 => "system disk root",
            25 => "shared directory",
            30 => "boot drive root",
            50 => "Windows\\System",
            51 => "spool",
            52 => "spool drivers",
            53 => "user profile",
            54 => "boot loader directory",
            55 => "print processors",
            16419 => "common application data",
            16422 => "Program Files",
            16427 => "Common Files",
            _ => return None,
        })
    }
}

impl fmt::Display for DirId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}%", self.0)
    }
}

/// A path as an INF writes it (`%12%\foo.sys`, `%13%\sub\x.sys`, `\SystemRoot\x.sys`): the DIRID
/// it starts with, if any, and the rest with `\` separators and without a leading separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfPath {
    pub dir: Option<DirId>,
    pub path: String,
}

impl InfPath {
    /// Split a field into its leading DIRID and the rest. DIRIDs after the start (rare) are
    /// kept in the text as `%N%`.
    pub fn from_field(field: &Field) -> InfPath {
        let mut pieces = field.pieces().iter();
        let mut dir = None;
        let mut path = String::new();
        if let Some(first) = pieces.next() {
            match first {
                Piece::DirId(d) => dir = Some(*d),
                Piece::Text(t) => path.push_str(t),
            }
        }
        for p in pieces {
            match p {
                Piece::DirId(d) => path.push_str(&d.to_string()),
                Piece::Text(t) => path.push_str(t),
            }
        }
        if dir.is_some() {
            path = path.trim_start_matches(['\\', '/']).to_string();
        }
        InfPath { dir, path }
    }

    /// The path as a service's `ImagePath` would hold it when its DIRID lies under
    /// `%SystemRoot%` (`\SystemRoot\System32\drivers\x.sys`); None otherwise.
    pub fn system_root_path(&self) -> Option<String> {
        let base = self.dir?.under_system_root()?;
        let mut out = String::from("\\SystemRoot");
        for part in [base, self.path.as_str()] {
            if !part.is_empty() {
                out.push('\\');
                out.push_str(part);
            }
        }
        Some(out)
    }

    /// The file name (last component).
    pub fn file_name(&self) -> &str {
        self.path.rsplit(['\\', '/']).next().unwrap_or("")
    }
}

impl fmt::Display for InfPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dir {
            Some(d) if self.path.is_empty() => write!(f, "{d}"),
            Some(d) => write!(f, "{d}\\{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}
