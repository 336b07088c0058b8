//! What is wrong with a configuration: each problem with its field, every
//! one a validation pass finds.

use super::*;

/// What is wrong with one field. The messages never hold the field's value
/// (it may be key material); names of references and ids are shown only
/// when they cannot be key material (see `config/shown.rs`), and described
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The JSON's shape: unknown field, wrong type, missing field (the
    /// parser's words).
    Shape(String),
    /// An identifier that breaks its rule.
    Identifier(IdError),
    /// A kid (a key store's key) that is not valid.
    Kid(KidError),
    /// Not the expected hex: what was expected.
    Hex(&'static str),
    /// A value outside its form or range: what was expected.
    Expected(&'static str),
    /// A number outside `min..=max`.
    OutOfRange { min: u64, max: u64 },
    /// An id given a second time.
    Duplicate { what: &'static str, id: String },
    /// A name that refers to nothing: `what` named `name` is not in `section`.
    Unresolved {
        what: &'static str,
        name: String,
        section: &'static str,
    },
    /// A value that must be given: when.
    Required(&'static str),
    /// `{"env": …}` names a variable that is not set.
    EnvUnset {
        variable: String,
        /// Where the host takes its variables from ([`Vars::unset_hint`]).
        hint: &'static str,
    },
    /// `{"env": …}` names a variable whose value is not what the field
    /// takes (`expected`); the value is never shown.
    EnvMalformed {
        variable: String,
        expected: &'static str,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape(text) => f.write_str(text),
            Self::Identifier(e) => e.fmt(f),
            Self::Kid(e) => write!(f, "invalid kid: {e}"),
            Self::Hex(what) | Self::Expected(what) => write!(f, "expected {what}"),
            Self::OutOfRange { min, max } => write!(f, "expected {min} to {max}"),
            Self::Duplicate { what, id } => write!(f, "duplicate {what} {}", Quoted(id)),
            Self::Unresolved {
                what,
                name,
                section,
            } => write!(f, "no {what} named {} in {section}", Quoted(name)),
            Self::Required(when) => f.write_str(when),
            Self::EnvUnset { variable, hint } => {
                write!(
                    f,
                    "environment variable {} is not set{hint}",
                    Quoted(variable)
                )
            }
            Self::EnvMalformed { variable, expected } => {
                write!(
                    f,
                    "environment variable {}: expected {expected}",
                    Quoted(variable)
                )
            }
        }
    }
}

/// A configuration problem: the field (JSON path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid fpgen configuration: {}: {}",
            self.field, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects the problems of one validation pass.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigError>);

impl Problems {
    pub(super) fn push(&mut self, field: impl Into<String>, problem: Problem) {
        self.0.push(ConfigError {
            field: field.into(),
            problem,
        });
    }

    pub(super) fn count(&self) -> usize {
        self.0.len()
    }
}
