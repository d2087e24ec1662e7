//! Which entries are in a job's scope: the user's include and exclude patterns and age limits.
//!
//! One [`Filter`] decides for the scan, the copy, the verifier and the mirror, built from the one
//! [`FilterSpec`] the plan carries, so the phases of a pass cannot disagree about an entry (a file
//! the copy left out must not be "missing" to the verifier, nor "extraneous" to a mirror). The
//! age limits are measured from [`FilterSpec::reference_time`], fixed once when the pass starts:
//! a file does not drift out of scope between its copy and its check.
//!
//! Patterns are matched against the path relative to the job's root, as bytes (names need not be
//! UTF-8), the way `.gitignore` and rsync read them:
//! - a pattern without a `/` (a trailing one aside) matches an entry's *name* at any depth:
//!   `*.tmp`, `~$*`, `.snapshot/`;
//! - a pattern with a `/` elsewhere is anchored at the root and matches the whole path (a leading
//!   `/` only anchors): `/scratch`, `projects/*/cache`, `**/build/out`;
//! - a trailing `/` matches directories only;
//! - `*` and `?` stay within one name, `**` spans names, `[a-z]` is a class, `\` escapes.
//!
//! Excludes win. An excluded directory is left out whole: not walked, not created, not checked,
//! never deleted by a mirror. With includes, a non-directory entry is in scope only when it, or
//! a directory above it, matches one; directories are still walked (and created) so that the
//! included entries below them have their parents. Age limits apply to non-directories by mtime.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use ingest_path::RelPath;

/// The filters of one pass, as a plan stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Non-directories modified less than this many seconds before `reference_time` are out of
    /// scope (still being written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_seconds: Option<u64>,
    /// Non-directories modified more than this many seconds before `reference_time` are out of
    /// scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    /// Unix seconds the ages are measured from: when the pass's scan started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_time: Option<i64>,
}

impl FilterSpec {
    /// Keeps everything.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
            && self.exclude.is_empty()
            && self.min_age_seconds.is_none()
            && self.max_age_seconds.is_none()
    }

    /// The filters as the flags of `vfxt-ingest scan`, `copy` and `run` (`--exclude=GLOB`,
    /// `--include=GLOB`, `--min-age=Ns`, `--max-age=Ns`): how the operator hands `spec.filter`
    /// to its scan pod. `=` keeps a pattern that starts with `-` a value.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (flag, list) in [("--exclude", &self.exclude), ("--include", &self.include)] {
            out.extend(list.iter().map(|p| format!("{flag}={p}")));
        }
        for (flag, age) in [
            ("--min-age", self.min_age_seconds),
            ("--max-age", self.max_age_seconds),
        ] {
            out.extend(age.map(|a| format!("{flag}={a}s")));
        }
        out
    }

    /// The same filters with their ages measured from `now` (unix seconds), unless fixed already.
    pub fn fixed_at(mut self, now: i64) -> FilterSpec {
        if self.min_age_seconds.is_some() || self.max_age_seconds.is_some() {
            self.reference_time.get_or_insert(now);
        }
        self
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("{field}[{index}] {pattern:?}: {why}")]
    Pattern {
        field: &'static str,
        index: usize,
        pattern: String,
        why: String,
    },
    #[error(
        "minAge ({min} s) is more than maxAge ({max} s): no entry could be in scope; minAge must be at most maxAge"
    )]
    Ages { min: u64, max: u64 },
    #[error("an age limit needs the pass's reference time (a plan written by an older version?)")]
    NoReferenceTime,
}

/// A compiled [`FilterSpec`]. Cheap to ask; build it once per pass.
#[derive(Debug, Clone)]
pub struct Filter {
    spec: FilterSpec,
    exclude: Globs,
    include: Globs,
    /// Non-directories with a later mtime are out of scope (`minAge`).
    newest: Option<i64>,
    /// Non-directories with an earlier mtime are out of scope (`maxAge`).
    oldest: Option<i64>,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for Filter {}

impl Default for Filter {
    fn default() -> Self {
        Filter::none()
    }
}

impl Filter {
    /// Keeps everything.
    pub fn none() -> Filter {
        Filter::new(&FilterSpec::default()).expect("the empty filter compiles")
    }

    pub fn new(spec: &FilterSpec) -> Result<Filter, FilterError> {
        if let (Some(min), Some(max)) = (spec.min_age_seconds, spec.max_age_seconds)
            && min > max
        {
            return Err(FilterError::Ages { min, max });
        }
        let at = |age: Option<u64>| -> Result<Option<i64>, FilterError> {
            match age {
                None => Ok(None),
                Some(a) => {
                    let now = spec.reference_time.ok_or(FilterError::NoReferenceTime)?;
                    Ok(Some(
                        now.saturating_sub(i64::try_from(a).unwrap_or(i64::MAX)),
                    ))
                }
            }
        };
        Ok(Filter {
            exclude: Globs::new("exclude", &spec.exclude)?,
            include: Globs::new("include", &spec.include)?,
            newest: at(spec.min_age_seconds)?,
            oldest: at(spec.max_age_seconds)?,
            spec: spec.clone(),
        })
    }

    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Keeps everything: callers skip the per-entry questions.
    pub fn is_empty(&self) -> bool {
        self.spec.is_empty()
    }

    /// Whether the age limits need an entry's mtime (a `stat` the walk might not do otherwise).
    pub fn has_age(&self) -> bool {
        self.newest.is_some() || self.oldest.is_some()
    }

    /// A directory at `rel` is walked (and copied, checked, mirrored): no exclude matches it.
    /// Its ancestors are the caller's business (an excluded one is never walked into).
    pub fn keeps_dir(&self, rel: &RelPath) -> bool {
        !self.exclude.matches(rel, true)
    }

    /// A non-directory entry at `rel` is in scope by its path: no exclude matches it and, with
    /// includes, it or a directory above it matches one. Its age is [`Filter::keeps_mtime`].
    pub fn keeps_path(&self, rel: &RelPath) -> bool {
        if self.exclude.matches(rel, false) {
            return false;
        }
        if self.include.is_empty() || self.include.matches(rel, false) {
            return true;
        }
        let mut dir = rel.parent();
        while !dir.is_root() {
            if self.include.matches(&dir, true) {
                return true;
            }
            dir = dir.parent();
        }
        false
    }

    /// A non-directory entry with this mtime (unix seconds) is in scope by age.
    pub fn keeps_mtime(&self, mtime: i64) -> bool {
        self.newest.is_none_or(|n| mtime <= n) && self.oldest.is_none_or(|o| mtime >= o)
    }

    /// The whole question for an entry whose type and mtime are known.
    pub fn keeps(&self, rel: &RelPath, is_dir: bool, mtime: i64) -> bool {
        if is_dir {
            self.keeps_dir(rel)
        } else {
            self.keeps_path(rel) && self.keeps_mtime(mtime)
        }
    }
}

/// One list of patterns, sorted by how they match.
#[derive(Debug, Clone)]
struct Globs {
    empty: bool,
    /// Patterns without a `/`: matched against the name.
    name: GlobSet,
    name_dirs: GlobSet,
    /// Anchored patterns: matched against the whole relative path.
    path: GlobSet,
    path_dirs: GlobSet,
}

impl Globs {
    fn new(field: &'static str, patterns: &[String]) -> Result<Globs, FilterError> {
        let mut sets: [GlobSetBuilder; 4] = std::array::from_fn(|_| GlobSetBuilder::new());
        for (index, pattern) in patterns.iter().enumerate() {
            let bad = |why: &str| FilterError::Pattern {
                field,
                index,
                pattern: pattern.clone(),
                why: why.to_string(),
            };
            let (body, dirs_only) = match pattern.strip_suffix('/') {
                Some(b) => (b, true),
                None => (pattern.as_str(), false),
            };
            let (body, anchored) = match body.strip_prefix('/') {
                Some(b) => (b, true),
                None => (body, body.contains('/')),
            };
            if body.is_empty() {
                return Err(bad(
                    "matches no name; give a name or a glob such as '*.tmp', '.snapshot/' or 'projects/*/cache'",
                ));
            }
            if body
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad(
                    "has an empty, '.' or '..' component; paths are relative to the job's root, without '//', '.' or '..'",
                ));
            }
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .empty_alternates(true)
                .build()
                .map_err(|e| bad(&e.kind().to_string()))?;
            sets[usize::from(anchored) * 2 + usize::from(dirs_only)].add(glob);
        }
        let [name, name_dirs, path, path_dirs] = sets.map(|b| {
            b.build()
                .expect("globs that compiled one by one compile together")
        });
        Ok(Globs {
            empty: patterns.is_empty(),
            name,
            name_dirs,
            path,
            path_dirs,
        })
    }

    fn is_empty(&self) -> bool {
        self.empty
    }

    fn matches(&self, rel: &RelPath, is_dir: bool) -> bool {
        if self.empty || rel.is_root() {
            return false;
        }
        let name = Candidate::new(OsStr::from_bytes(rel.file_name()));
        let path = Candidate::new(OsStr::from_bytes(rel.as_bytes()));
        self.name.is_match_candidate(&name)
            || self.path.is_match_candidate(&path)
            || (is_dir
                && (self.name_dirs.is_match_candidate(&name)
                    || self.path_dirs.is_match_candidate(&path)))
    }
}

/// Parses an age such as `90s`, `10m`, `12h`, `7d` or `2w` into seconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not an age: give a whole number and a unit, s, m, h, d or w (for example 10m, 12h, 7d)"
        )
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&s| s <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{text:?} is too long an age: at most 100 years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::from_bytes(s.as_bytes()).unwrap()
    }

    fn filter(include: &[&str], exclude: &[&str]) -> Filter {
        Filter::new(&FilterSpec {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..FilterSpec::default()
        })
        .unwrap()
    }

    #[test]
    fn a_name_pattern_matches_at_any_depth_and_an_anchored_one_only_from_the_root() {
        let f = filter(&[], &["*.tmp", "~$*", "/scratch", "projects/*/cache"]);
        for out in ["a.tmp", "x/y/z.tmp", "docs/~$report.docx", "scratch"] {
            assert!(!f.keeps_path(&rel(out)), "{out} should be excluded");
        }
        assert!(!f.keeps_dir(&rel("scratch")));
        assert!(!f.keeps_dir(&rel("projects/p1/cache")));
        for kept in [
            "a.tmpx",
            "x/scratch",
            "projects/p1/x/cache",
            "projects/cache",
            "report~$.docx",
        ] {
            assert!(f.keeps_path(&rel(kept)), "{kept} should be kept");
        }
        assert!(f.keeps_dir(&rel("x/scratch")));
    }

    #[test]
    fn a_trailing_slash_matches_directories_only() {
        let f = filter(&[], &[".snapshot/"]);
        assert!(!f.keeps_dir(&rel(".snapshot")));
        assert!(!f.keeps_dir(&rel("a/b/.snapshot")));
        assert!(
            f.keeps_path(&rel(".snapshot")),
            "a file named .snapshot stays"
        );
    }

    #[test]
    fn a_star_stays_within_a_name_and_a_double_star_spans_names() {
        let f = filter(&[], &["a/*.log", "b/**/*.log"]);
        assert!(!f.keeps_path(&rel("a/x.log")));
        assert!(f.keeps_path(&rel("a/sub/x.log")));
        assert!(!f.keeps_path(&rel("b/x.log")));
        assert!(!f.keeps_path(&rel("b/1/2/x.log")));
    }

    #[test]
    fn includes_keep_matching_files_and_everything_below_a_matching_directory() {
        let f = filter(&["*.csv", "keep/"], &["old.csv"]);
        assert!(f.keeps_path(&rel("x/y.csv")));
        assert!(!f.keeps_path(&rel("x/y.txt")));
        assert!(f.keeps_path(&rel("a/keep/deep/y.txt")));
        assert!(
            !f.keeps_path(&rel("a/keep")),
            "keep/ names directories only"
        );
        assert!(!f.keeps_path(&rel("a/keep/old.csv")), "excludes win");
        // Directories are walked whatever the includes say.
        assert!(f.keeps_dir(&rel("x")));
    }

    #[test]
    fn names_that_are_not_utf8_are_matched_as_bytes() {
        let f = filter(&[], &["*.tmp"]);
        let name = RelPath::from_bytes(b"d/\xff\xfe.tmp".to_vec()).unwrap();
        assert!(!f.keeps_path(&name));
        let kept = RelPath::from_bytes(b"d/\xff\xfe.dat".to_vec()).unwrap();
        assert!(f.keeps_path(&kept));
    }

    #[test]
    fn ages_are_measured_from_the_reference_time() {
        let spec = FilterSpec {
            min_age_seconds: Some(600),
            max_age_seconds: Some(86_400),
            ..FilterSpec::default()
        };
        assert_eq!(
            Filter::new(&spec).unwrap_err(),
            FilterError::NoReferenceTime
        );
        let f = Filter::new(&spec.fixed_at(1_000_000)).unwrap();
        assert!(f.has_age());
        assert!(!f.keeps_mtime(1_000_000 - 599), "too new");
        assert!(f.keeps_mtime(1_000_000 - 600));
        assert!(f.keeps_mtime(1_000_000 - 86_400));
        assert!(!f.keeps_mtime(1_000_000 - 86_401), "too old");
        assert!(f.keeps(&rel("d"), true, 0), "directories have no age");
        assert!(!f.keeps(&rel("f"), false, 0));
    }

    #[test]
    fn a_reference_time_once_fixed_stays() {
        let spec = FilterSpec {
            min_age_seconds: Some(1),
            ..FilterSpec::default()
        };
        let fixed = spec.fixed_at(5).fixed_at(9);
        assert_eq!(fixed.reference_time, Some(5));
        assert_eq!(FilterSpec::default().fixed_at(5).reference_time, None);
    }

    #[test]
    fn bad_patterns_and_ages_name_what_is_wrong() {
        let bad = |p: &str| {
            Filter::new(&FilterSpec {
                exclude: vec!["ok".into(), p.into()],
                ..FilterSpec::default()
            })
            .unwrap_err()
            .to_string()
        };
        assert!(
            bad("[a").starts_with("exclude[1] \"[a\": "),
            "{}",
            bad("[a")
        );
        assert!(bad("/").contains("matches no name"));
        assert!(bad("a/../b").contains("'..'"));
        assert!(bad("a//b").contains("empty"));
        let ages = Filter::new(&FilterSpec {
            min_age_seconds: Some(10),
            max_age_seconds: Some(5),
            reference_time: Some(0),
            ..FilterSpec::default()
        })
        .unwrap_err();
        assert!(ages.to_string().contains("minAge must be at most maxAge"));
    }

    #[test]
    fn ages_parse_with_a_unit() {
        assert_eq!(parse_age("90s"), Ok(90));
        assert_eq!(parse_age("10m"), Ok(600));
        assert_eq!(parse_age("2w"), Ok(14 * 86_400));
        for bad in ["", "10", "m", "1.5h", "-1d", "10 m", "7y"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
        assert!(parse_age("99999999999w").unwrap_err().contains("100 years"));
    }

    #[test]
    fn the_empty_filter_keeps_everything() {
        let f = Filter::none();
        assert!(f.is_empty() && !f.has_age());
        assert!(f.keeps(&rel("a/b.tmp"), false, 0));
        assert!(f.keeps(&rel(".snapshot"), true, 0));
    }

    #[test]
    fn the_spec_round_trips_through_json() {
        let spec = FilterSpec {
            include: vec!["*.csv".into()],
            exclude: vec![".snapshot/".into()],
            min_age_seconds: Some(60),
            max_age_seconds: None,
            reference_time: Some(7),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<FilterSpec>(&json).unwrap(), spec);
        assert_eq!(serde_json::to_string(&FilterSpec::default()).unwrap(), "{}");
    }
}
