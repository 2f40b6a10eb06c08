//! Library errors. A failed *sample* is data (a status in its part); these are the
//! failures that stop a run: bad config, bad taxonomy, I/O, a corrupt artifact.

use std::path::{Path, PathBuf};

/// Everything a library function can fail with. Messages say what, where and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Invalid input at a known place: `file:line:col: message`, or `file: message`.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    /// A run directory holds artifacts that do not match what is being asked.
    #[error("{}: {message}", path.display())]
    Conflict { path: PathBuf, message: String },
    /// Parquet or dataframe failure, with the file it concerned.
    #[error("{}: {source}", path.display())]
    Polars {
        path: PathBuf,
        #[source]
        source: polars::error::PolarsError,
    },
    /// An image (chart) could not be encoded.
    #[error("{}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn invalid(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { location: location.into(), message: message.into() }
    }

    pub fn polars(path: impl AsRef<Path>, source: polars::error::PolarsError) -> Self {
        Error::Polars { path: path.as_ref().to_path_buf(), source }
    }
}

/// 1-based (line, column) of a byte offset in `src`; columns count characters.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = src[line_start..offset].chars().count() + 1;
    (line, col)
}

/// `file:line:col` for a byte offset in the file's text.
pub fn locate(file: &str, src: &str, offset: usize) -> String {
    let (line, col) = line_col(src, offset);
    format!("{file}:{line}:{col}")
}

/// Turns a TOML parse/deserialize error into `file:line:col: message`.
pub fn from_toml(file: &str, src: &str, err: &toml::de::Error) -> Error {
    let location = match err.span() {
        Some(span) => locate(file, src, span.start),
        None => file.to_string(),
    };
    Error::invalid(location, err.message().trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
    }
}
