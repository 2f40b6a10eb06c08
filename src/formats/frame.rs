//! Reading a Parquet part back: typed columns with errors that name the file.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::{Error, Result};

/// A part read into memory, remembering its path for error messages.
pub struct Frame {
    pub df: DataFrame,
    path: PathBuf,
}

impl Frame {
    /// Reads `path`, all columns or only `columns`.
    pub fn read(path: &Path, columns: Option<&[&str]>) -> Result<Frame> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let cols = columns.map(|c| c.iter().map(|s| s.to_string()).collect());
        let df = ParquetReader::new(file).with_columns(cols).finish().map_err(|e| Error::polars(path, e))?;
        Ok(Frame { df, path: path.to_path_buf() })
    }

    pub fn height(&self) -> usize {
        self.df.height()
    }

    fn col(&self, c: &str) -> Result<&Column> {
        self.df.column(c).map_err(|e| Error::polars(&self.path, e))
    }

    fn typed<T: Clone>(&self, c: &str, f: impl FnOnce(&Column) -> PolarsResult<&T>) -> Result<T> {
        f(self.col(c)?).cloned().map_err(|e| Error::polars(&self.path, e))
    }

    pub fn str(&self, c: &str) -> Result<StringChunked> {
        self.typed(c, |x| x.str())
    }
    pub fn u64(&self, c: &str) -> Result<UInt64Chunked> {
        self.typed(c, |x| x.u64())
    }
    pub fn u32(&self, c: &str) -> Result<UInt32Chunked> {
        self.typed(c, |x| x.u32())
    }
    pub fn f32(&self, c: &str) -> Result<Float32Chunked> {
        self.typed(c, |x| x.f32())
    }
    pub fn bool(&self, c: &str) -> Result<BooleanChunked> {
        self.typed(c, |x| x.bool())
    }
    /// `v`, the value at row `i` of `column`, which every row must have: a missing one is an
    /// error naming the file, the row and the column (a damaged part), never a silent 0.
    pub fn required<T>(&self, column: &str, i: usize, v: Option<T>) -> Result<T> {
        v.ok_or_else(|| {
            Error::invalid(
                format!("{}: row {i}", self.path.display()),
                format!("column `{column}` has no value; the part is damaged: delete it and rerun the stage"),
            )
        })
    }
    pub fn binary(&self, c: &str) -> Result<BinaryChunked> {
        self.typed(c, |x| x.binary())
    }
    pub fn list(&self, c: &str) -> Result<ListChunked> {
        self.typed(c, |x| x.list())
    }
}

/// The string at row `i`, empty when null.
pub fn text(c: &StringChunked, i: usize) -> String {
    c.get(i).unwrap_or_default().to_string()
}

/// The string at row `i`, if any.
pub fn opt_text(c: &StringChunked, i: usize) -> Option<String> {
    c.get(i).map(str::to_string)
}
