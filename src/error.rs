//! The library's one error type. Every variant renders as a single line that names what went
//! wrong, where (file, key, node or tensor) and, where there is one, the fix.

use std::path::PathBuf;

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", one_line(&.path.display().to_string()))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A TOML file did not parse (syntax, unknown key or wrong type).
    #[error("{}:{line}:{column}: {}", one_line(&.path.display().to_string()), one_line(.message))]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value parsed but is out of range or inconsistent.
    #[error("{}: key `{}`: {}", one_line(&.path.display().to_string()), one_line(.key), one_line(.message))]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A data file is missing, truncated or not in the expected format.
    #[error("{}: {}", one_line(&.path.display().to_string()), one_line(.message))]
    Data { path: PathBuf, message: String },
    /// A checkpoint does not fit the model graph.
    #[error("{}: tensor `{}`: {}", one_line(&.path.display().to_string()), one_line(.tensor), one_line(.message))]
    Checkpoint {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    /// A model graph is malformed (shapes do not line up, a node has the wrong inputs).
    #[error("graph node `{}`: {}", one_line(.node), one_line(.message))]
    Graph { node: String, message: String },
    /// A requested device is not available or not understood.
    #[error("device `{}`: {}", one_line(.device), one_line(.message))]
    Device { device: String, message: String },
    /// Spreading work over processes failed (MPI), or a fault injected by the fault tests.
    #[error("{}", one_line(.0))]
    Distributed(String),
    /// Training or evaluation produced a NaN or infinite value.
    #[error("{} is not finite ({value}); lower the learning rate or check the data", one_line(.what))]
    NonFinite { what: String, value: f64 },
    /// The user stopped the run (Ctrl-C) at a point where nothing could be kept; the message
    /// says what to run next. The command exits with 130, as after any Ctrl-C.
    #[error("interrupted: {}", one_line(.message))]
    Interrupted { message: String },
    /// An error raised inside libtorch.
    #[error("libtorch: {}", first_line(&.0.to_string()))]
    Torch(#[from] tch::TchError),
}

impl Error {
    /// The same error with a note on where it arose (`(after command-line overrides)`),
    /// appended to the message of errors that have one.
    pub fn noted(self, note: &str) -> Self {
        match self {
            Error::Invalid { path, key, message } => Error::Invalid {
                path,
                key,
                message: format!("{message} ({note})"),
            },
            Error::Data { path, message } => Error::Data {
                path,
                message: format!("{message} ({note})"),
            },
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn graph(node: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Graph {
            node: node.into(),
            message: message.into(),
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// libtorch messages carry a C++ backtrace after the first line; users need the first line.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

/// Text from a user's file (a key, a name) or a parser, kept on one line: control characters
/// such as a newline inside a quoted key are shown escaped.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_with_control_characters_stays_on_one_line() {
        let error = Error::Invalid {
            path: PathBuf::from("a\nb.toml"),
            key: "gr\nularity".into(),
            message: "unknown field `gr\nularity`\r".into(),
        };
        let text = error.to_string();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(text.contains("gr\\nularity"), "{text}");
    }
}
