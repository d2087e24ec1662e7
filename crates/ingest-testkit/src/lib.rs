//! The referee for the copy engine: deterministic test trees ([`generator`]) and a tree
//! comparison ([`compare`]) that shares no code with the engine, so the engine's tests and the
//! benchmark judge its output by an independent reading of both trees.
//!
//! ```
//! use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};
//!
//! let tmp = tempfile::tempdir().unwrap();
//! let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
//! generate(Dataset::Kinds, &src, &GenOptions::default()).unwrap();
//! // ... copy src to dst with the engine; here, the same tree again:
//! generate(Dataset::Kinds, &dst, &GenOptions::default()).unwrap();
//! let root = rustix::process::geteuid().is_root();
//! let diffs = compare(&src, &dst, &CompareOptions { owner: root, ..CompareOptions::all() });
//! assert!(diffs.is_empty(), "{}", diffs.iter().map(|d| format!("{d}\n")).collect::<String>());
//! ```

pub mod compare;
pub mod generator;
mod rng;
pub mod torture;

pub use compare::{Aspect, CompareOptions, Difference, compare, count_by_aspect};
pub use generator::{Dataset, GENERATOR_VERSION, GenError, GenOptions, GenSummary, generate};
pub use rng::Rng;

/// Panics, listing every difference, unless `b` is a faithful copy of `a` by [`compare`] with
/// every aspect ([`CompareOptions::all`]): entries, contents, modes, times (directories and the
/// root included), hard links and holes; owners too when run as root.
pub fn assert_identical(a: &std::path::Path, b: &std::path::Path) {
    let opts = CompareOptions {
        owner: rustix::process::geteuid().is_root(),
        ..CompareOptions::all()
    };
    let diffs = compare(a, b, &opts);
    assert!(
        diffs.is_empty(),
        "the copy differs:\n{}",
        diffs.iter().map(|d| format!("  {d}\n")).collect::<String>()
    );
}
