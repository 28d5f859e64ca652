//! The library's one error type. Every variant renders as a single line that names what went
//! wrong, where (file, key, node or tensor) and, where there is one, the fix.

use std::path::PathBuf;

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A TOML file did not parse (syntax, unknown key or wrong type).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value parsed but is out of range or inconsistent.
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// A data file is missing, truncated or not in the expected format.
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    /// A checkpoint does not fit the model graph.
    #[error("{}: tensor `{tensor}`: {message}", path.display())]
    Checkpoint {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    /// A model graph is malformed (shapes do not line up, a node has the wrong inputs).
    #[error("graph node `{node}`: {message}")]
    Graph { node: String, message: String },
    /// A requested device is not available or not understood.
    #[error("device `{device}`: {message}")]
    Device { device: String, message: String },
    /// Training or evaluation produced a NaN or infinite value.
    #[error("{what} is not finite ({value}); lower the learning rate or check the data")]
    NonFinite { what: String, value: f64 },
    /// An error raised inside libtorch.
    #[error("libtorch: {}", first_line(&.0.to_string()))]
    Torch(#[from] tch::TchError),
}

impl Error {
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
