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
    /// An ASCII file with `solid` and `endsolid` but no facet between them.
    #[error("empty ASCII STL: `solid`/`endsolid` with no facets in between, nothing to repair")]
    EmptyAscii,
    /// Nothing printable would remain: every facet was removed. The message says what was
    /// removed and which option keeps it.
    #[error("{}", nothing_printable(self))]
    NothingPrintable {
        /// Facets in the input.
        input_facets: u64,
        /// Facets removed as degenerate: zero area, or a repeated vertex.
        degenerate: u64,
        /// Of `degenerate`, the facets with a repeated vertex (lines or points, removed
        /// whatever the options).
        repeated_vertex: u64,
        /// Of `repeated_vertex`, the facets whose corners were apart in the file and that the
        /// automatic weld merged (`weld: false` keeps them).
        collapsed: u64,
        /// Facets removed as copies of other facets.
        duplicates: u64,
        /// Facets removed where two solids share a face (both sides, joining the solids).
        shared_faces: u64,
        /// Shells removed as tiny.
        tiny_shells: u64,
        /// Facets in them.
        tiny_shell_facets: u64,
    },
    /// [`RepairOptions::deadline`](crate::RepairOptions::deadline) passed before the repair
    /// was done.
    #[error(
        "out of time: the repair's deadline passed during the {} stage, {seconds:.3} s after \
         parsing began",
        .stage.name()
    )]
    DeadlineExceeded {
        /// The stage that was running (or about to start).
        stage: crate::Stage,
        /// Seconds spent, parsing included.
        seconds: f64,
    },
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
    /// A NaN or infinite coordinate in a [`Soup`](crate::stl::Soup) built by the caller (the
    /// parser never gives one: it reports [`HealError::NonFinite`] with the byte offset).
    #[error("facet {facet} of the soup has a non-finite coordinate (NaN or infinity)")]
    NonFiniteSoup {
        /// Index of the facet.
        facet: u64,
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

/// The one-line message of [`HealError::NothingPrintable`]: each kind of removal found, with
/// the option that keeps it.
fn nothing_printable(e: &HealError) -> String {
    let HealError::NothingPrintable {
        input_facets: input,
        degenerate,
        repeated_vertex,
        collapsed,
        duplicates,
        shared_faces,
        tiny_shells: tiny,
        tiny_shell_facets: tiny_facets,
    } = *e
    else {
        return e.to_string();
    };
    // "1 facet was", "2 facets were".
    let facets = |n: u64| format!("{n} facet{}", if n == 1 { "" } else { "s" });
    let were = |n: u64| {
        if n == 1 {
            ("was", "has")
        } else {
            ("were", "have")
        }
    };
    let mut why = Vec::new();
    if tiny_facets > 0 {
        why.push(format!(
            "{} in {tiny} separate piece{} too small or too open to be printed on their own \
             {} removed as {} (--keep-tiny-shells, option `remove_tiny_shells: false`, keeps \
             them)",
            facets(tiny_facets),
            if tiny == 1 { "" } else { "s" },
            were(tiny_facets).0,
            if tiny == 1 {
                "a tiny shell"
            } else {
                "tiny shells"
            },
        ));
    }
    let zero_area = degenerate.saturating_sub(repeated_vertex);
    if zero_area > 0 {
        why.push(format!(
            "{} {} zero area (--keep-degenerate, option `remove_degenerate: false`, keeps them)",
            facets(zero_area),
            were(zero_area).1,
        ));
    }
    if collapsed > 0 {
        why.push(format!(
            "{} lost a side when the weld merged corners closer than its tolerance \
             (--exact-weld-only, option `weld: false`, keeps them)",
            facets(collapsed),
        ));
    }
    let lines = repeated_vertex.saturating_sub(collapsed);
    if lines > 0 {
        why.push(format!(
            "{} {} two corners on one point: lines or points, which no option keeps",
            facets(lines),
            were(lines).1,
        ));
    }
    if duplicates > 0 {
        why.push(format!(
            "{} {} copies of other facets (--keep-duplicates, option `remove_duplicates: \
             false`, keeps them)",
            facets(duplicates),
            were(duplicates).0,
        ));
    }
    if shared_faces > 0 {
        why.push(format!(
            "{} {} faces between two solids, removed to join them (--keep-duplicates, option \
             `remove_duplicates: false`, keeps them)",
            facets(shared_faces),
            were(shared_faces).0,
        ));
    }
    if why.is_empty() {
        why.push("no facet survived the repair".to_string());
    }
    format!(
        "nothing printable remains of the {} in the file: {}",
        facets(input),
        why.join("; ")
    )
}
