//! Errors and warnings of the INF parser; both name `file:line`.

use std::fmt;
use std::sync::Arc;

/// Where something came from: an INF file (as named by the caller) and a 1-based line number.
/// For a logical line continued with `\`, the line of its first physical line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u32,
}

impl Origin {
    pub fn new(file: &Arc<str>, line: u32) -> Origin {
        Origin {
            file: file.clone(),
            line,
        }
    }

    /// An error at this place.
    pub fn error(&self, message: impl Into<String>) -> InfError {
        InfError {
            file: self.file.to_string(),
            line: self.line,
            message: message.into(),
        }
    }

    /// A warning at this place.
    pub fn warning(&self, message: impl Into<String>) -> InfWarning {
        InfWarning {
            file: self.file.to_string(),
            line: self.line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A fatal problem: the INF (or the part of it an install needs) is malformed or incomplete.
/// Displayed as `file:line: message`. Problems that concern the whole file use line 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfError {
    pub file: String,
    pub line: u32,
    pub message: String,
}

impl fmt::Display for InfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for InfError {}

/// Something Windows would ignore (an unknown directive, an undefined `%strkey%`, a line outside
/// any section): recorded, displayed as `file:line: warning: message`, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfWarning {
    pub file: String,
    pub line: u32,
    pub message: String,
}

impl fmt::Display for InfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file, self.line, self.message)
    }
}
