//! Entries the scan could not read. Each is already one failed entry of the run (the plan lists
//! it); when a copy or verify pass meets the same entry and fails again, that is the same entry,
//! not a second failure. A directory the scan could not list hides its contents from every pass,
//! so a failure below it is the same failure too.

use std::collections::BTreeSet;

use ingest_path::RelPath;

/// The scan's failed paths, asked "is this entry one of them (or inside one)?".
#[derive(Debug, Clone, Default)]
pub struct ScanFailed {
    paths: BTreeSet<RelPath>,
}

impl ScanFailed {
    pub fn new(paths: impl IntoIterator<Item = RelPath>) -> ScanFailed {
        ScanFailed {
            paths: paths.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// `path` is a failed path of the scan or lies below one.
    pub fn covers(&self, path: &RelPath) -> bool {
        if self.paths.is_empty() {
            return false;
        }
        let mut p = path.clone();
        loop {
            if self.paths.contains(&p) {
                return true;
            }
            if p.is_root() {
                return false;
            }
            p = p.parent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::from_escaped(s).unwrap()
    }

    #[test]
    fn covers_the_path_and_what_is_below_it_only() {
        let s = ScanFailed::new([rel("a/locked"), rel("gone")]);
        assert!(s.covers(&rel("a/locked")));
        assert!(s.covers(&rel("a/locked/x/y")));
        assert!(s.covers(&rel("gone")));
        assert!(!s.covers(&rel("a")));
        assert!(!s.covers(&rel("a/locked2")));
        assert!(!s.covers(&rel("a/lock")));
        assert!(!s.covers(&RelPath::root()));
        assert!(!ScanFailed::default().covers(&rel("a")));
        // A failed root (the scan could not read the tree at all) covers everything.
        assert!(ScanFailed::new([RelPath::root()]).covers(&rel("x/y")));
    }
}
