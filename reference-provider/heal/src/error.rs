//! [`HealError`]: why an input could not be repaired.

/// Why an input could not be repaired. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum HealError {
    /// The input has no bytes at all.
    #[error("empty file: an STL file needs at least an 84-byte header")]
    Empty,
    /// The input is larger than [`RepairOptions::max_file_bytes`].
    #[error("file is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// More facets than [`RepairOptions::max_facets`].
    #[error("file holds {facets} facets, over the limit of {limit}")]
    TooManyFacets {
        /// Facets in the input.
        facets: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Binary STL shorter than its 84-byte header.
    #[error("binary STL truncated inside the header: {len} bytes, the header alone needs 84")]
    TruncatedHeader {
        /// Size of the input.
        len: u64,
    },
    /// A binary header that declares zero facets.
    #[error("binary STL declares 0 facets (header only): nothing to repair")]
    NoFacets,
    /// The header declares more facets than the data holds.
    #[error(
        "binary STL truncated: header declares {declared} facets ({expected} bytes) but the file \
         has {actual} bytes; facet {facet} is cut off at byte offset {offset}"
    )]
    Truncated {
        /// Facet count from the header.
        declared: u64,
        /// File size the header implies.
        expected: u64,
        /// Actual file size.
        actual: u64,
        /// Index of the first incomplete facet.
        facet: u64,
        /// Byte offset where that facet starts.
        offset: u64,
    },
    /// The header declares fewer facets than the data holds.
    #[error(
        "binary STL facet count mismatch: header declares {declared} facets ({expected} bytes) but \
         the file has {actual} bytes; {extra} unexpected bytes start at byte offset {offset}"
    )]
    TrailingData {
        /// Facet count from the header.
        declared: u64,
        /// File size the header implies.
        expected: u64,
        /// Actual file size.
        actual: u64,
        /// Bytes beyond what the header declares.
        extra: u64,
        /// Byte offset of the first unexpected byte.
        offset: u64,
    },
    /// A NaN or infinite coordinate.
    #[error("facet {facet} (byte offset {offset}) has a non-finite coordinate (NaN or infinity)")]
    NonFinite {
        /// Index of the facet.
        facet: u64,
        /// Byte offset of the facet (binary) or of its `facet` keyword (ASCII).
        offset: u64,
    },
    /// A syntax error in an ASCII STL file.
    #[error("ASCII STL, line {line} (byte offset {offset}): {problem}")]
    Ascii {
        /// 1-based line number.
        line: u64,
        /// Byte offset of the offending token.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}
