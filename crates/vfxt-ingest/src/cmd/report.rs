//! Report files (`--report FILE` of `worker`) and `vfxt-ingest report`, which reads and merges them.
//!
//! A report file is JSON Lines, one [`ReportEntry`] per line; a name ending in `.gz` is written
//! gzip-compressed (what the cluster's pods write: a failure list of millions of paths shrinks
//! about tenfold). It is written under a temporary name in the same directory
//! (`.<name>.tmp-<pid>`) and renamed when complete, so a report file that exists is whole; a pod
//! killed part-way leaves only the hidden temporary file, which `report` skips and mentions.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use ingest_copy::{JsonLines, Outcome as EntryOutcome, ReportEntry, ReportSink};

use crate::Outcome;

enum Out {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Plain(w) => w.write(buf),
            Out::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Plain(w) => w.flush(),
            Out::Gzip(w) => w.flush(),
        }
    }
}

/// The report's stream until it is finished; entries after that have nowhere to go.
struct Open(Option<Out>);

impl Write for Open {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(o) => o.write(buf),
            None => Err(io::Error::other("the report is finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// A report being written: a [`ReportSink`] until [`ReportFile::finish`] makes it appear under its name.
pub struct ReportFile {
    path: PathBuf,
    temp: PathBuf,
    sink: JsonLines<Open>,
}

impl ReportFile {
    /// Creates the parent directories and the temporary file. `path` ending in `.gz`: gzip.
    pub fn create(path: &Path) -> io::Result<ReportFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "names no file"))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(d) = dir {
            std::fs::create_dir_all(d)?;
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp-{}", std::process::id()));
        let temp = match dir {
            Some(d) => d.join(temp_name),
            None => PathBuf::from(temp_name),
        };
        let file = BufWriter::new(File::create(&temp)?);
        let out = if is_gzip_name(path) {
            // The fastest level: records are written under the sink's lock, from every walk thread
            // of the worker, and at the default level the compression was 8% of a verify pass of
            // small files (with `perf`). The demo's reports came out no larger (1.23 MB against
            // 1.27 MB for 21,000 files copied and verified).
            Out::Gzip(GzEncoder::new(file, Compression::fast()))
        } else {
            Out::Plain(file)
        };
        Ok(ReportFile {
            path: path.to_path_buf(),
            temp,
            sink: JsonLines::new(Open(Some(out))),
        })
    }

    /// Ends the stream (the gzip trailer), syncs the file and renames it to its name. Through a
    /// shared reference, so that a worker about to exit on a hung destination (its threads stuck
    /// in the kernel) can still publish what it recorded; a second call does nothing.
    pub fn finish(&self) -> io::Result<()> {
        let Some(out) = self.sink.with_writer(|w| w.0.take()) else {
            return Ok(());
        };
        let file = match out {
            Out::Plain(w) => w.into_inner().map_err(|e| e.into_error())?,
            Out::Gzip(w) => w.finish()?.into_inner().map_err(|e| e.into_error())?,
        };
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp, &self.path)
    }
}

impl ReportSink for ReportFile {
    fn record(&self, entry: ReportEntry) {
        self.sink.record(entry);
    }
}

fn is_gzip_name(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "gz")
}

/// A report file by its name: `*.jsonl` or `*.jsonl.gz`, not hidden (temporary files are).
fn is_report_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".jsonl") || name.ends_with(".jsonl.gz"))
}

/// A temporary report file left by a writer that did not finish.
fn is_unfinished_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".jsonl.tmp-") || name.contains(".jsonl.gz.tmp-"))
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Report files (`.jsonl`, `.jsonl.gz`) or directories, read recursively: the cluster's report
    /// location (`status.report.location`) or a local `run`'s state directory.
    #[arg(value_name = "DIR|FILE", required = true)]
    pub inputs: Vec<PathBuf>,
    /// How many entries the summary lists.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Print one JSON document: the counts and every entry.
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,
    /// Print every entry as a JSON line (with the `file` it came from).
    #[arg(long, conflicts_with = "csv")]
    pub jsonl: bool,
    /// Print every entry as CSV: path, outcome, operation, type, size, mtime, digest, error.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Compare with an earlier pass's reports (its run directory, or its report location): which
    /// entries the later pass found that the earlier did not, which it no longer found, and which
    /// changed (type, size, mtime, or content digest), from each pass's audit trail (the entries
    /// its verify pass compared).
    #[arg(long, value_name = "DIR|FILE")]
    pub against: Option<PathBuf>,
}

/// One entry as a pass's audit trail left it: what the verify pass found at the source (and,
/// checksummed, its content's digest). The trail is the verify's `matched` and `repaired` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    meta: Option<ingest_copy::EntryMeta>,
    digest: Option<String>,
}

/// Path (escaped) -> what the trail says of it.
fn trail(entries: &[(usize, ReportEntry)]) -> BTreeMap<String, Seen> {
    entries
        .iter()
        .filter(|(_, e)| matches!(e.outcome, EntryOutcome::Matched | EntryOutcome::Repaired))
        .map(|(_, e)| {
            (
                e.path.to_escaped(),
                Seen {
                    meta: e.meta.clone(),
                    digest: e.digest.clone(),
                },
            )
        })
        .collect()
}

/// What changed between two trails.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
struct Changes {
    added: Vec<String>,
    removed: Vec<String>,
    /// Path and what differs (`type`, `size`, `mtime`, `content`).
    changed: Vec<(String, Vec<&'static str>)>,
}

fn compare(old: &BTreeMap<String, Seen>, new: &BTreeMap<String, Seen>) -> Changes {
    let mut c = Changes::default();
    for (path, n) in new {
        let Some(o) = old.get(path) else {
            c.added.push(path.clone());
            continue;
        };
        let mut what = Vec::new();
        if let (Some(om), Some(nm)) = (&o.meta, &n.meta) {
            if om.kind != nm.kind {
                what.push("type");
            }
            if om.size != nm.size {
                what.push("size");
            }
            if om.mtime != nm.mtime {
                what.push("mtime");
            }
        }
        // Only when both passes read the content: a metadata verify has no digest to compare.
        if let (Some(od), Some(nd)) = (&o.digest, &n.digest)
            && od != nd
        {
            what.push("content");
        }
        if !what.is_empty() {
            c.changed.push((path.clone(), what));
        }
    }
    c.removed = old
        .keys()
        .filter(|p| !new.contains_key(*p))
        .cloned()
        .collect();
    c
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_line(e: &ReportEntry) -> String {
    let meta = e.meta.as_ref();
    [
        e.path.to_escaped(),
        outcome_name(e.outcome),
        e.op.clone(),
        meta.map(|m| m.kind.to_string()).unwrap_or_default(),
        meta.map(|m| m.size.to_string()).unwrap_or_default(),
        meta.map(|m| m.mtime.clone()).unwrap_or_default(),
        e.digest.clone().unwrap_or_default(),
        match (&e.error, e.mismatches.is_empty()) {
            (Some(err), _) => err.clone(),
            (None, false) => format!("{:?}", e.mismatches),
            (None, true) => String::new(),
        },
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

/// Every entry of the report files under `inputs`, with the index of its file.
fn read_all(
    files: &[PathBuf],
    errors: &mut Vec<String>,
) -> (Vec<(usize, ReportEntry)>, usize, usize) {
    let mut entries = Vec::new();
    let (mut read, mut gz_files) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        match read_file(f) {
            Ok(es) => {
                read += 1;
                if is_gzip_name(f) {
                    gz_files += 1;
                }
                entries.extend(es.into_iter().map(|e| (i, e)));
            }
            Err(e) => errors.push(e),
        }
    }
    (entries, read, gz_files)
}

/// Every report file under the inputs, sorted, and the unfinished (temporary) ones seen.
fn collect(inputs: &[PathBuf], errors: &mut Vec<String>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    fn walk(
        dir: &Path,
        files: &mut Vec<PathBuf>,
        tmp: &mut Vec<PathBuf>,
        errors: &mut Vec<String>,
    ) {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                errors.push(format!("{}: cannot be read ({e})", dir.display()));
                return;
            }
        };
        let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                // Symlinked directories are not followed (no loops); symlinked files are read.
                Ok(t) if t.is_dir() => walk(&p, files, tmp, errors),
                Ok(_) if is_report_name(&name) => files.push(p),
                Ok(_) if is_unfinished_name(&name) => tmp.push(p),
                Ok(_) => {}
                Err(err) => errors.push(format!("{}: cannot be read ({err})", p.display())),
            }
        }
    }
    let (mut files, mut tmp) = (Vec::new(), Vec::new());
    for input in inputs {
        match std::fs::metadata(input) {
            Ok(m) if m.is_dir() => walk(input, &mut files, &mut tmp, errors),
            // A file named on the command line is read whatever its name.
            Ok(_) => files.push(input.clone()),
            Err(e) => errors.push(format!("{}: cannot be read ({e})", input.display())),
        }
    }
    (files, tmp)
}

/// Reads one report file, plain or gzip (by its first bytes, not its name).
pub fn read_file(path: &Path) -> Result<Vec<ReportEntry>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{}: cannot be read ({e})", path.display());
    let mut f = BufReader::new(File::open(path).map_err(|e| bad(&e))?);
    let gz = f
        .fill_buf()
        .map_err(|e| bad(&e))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead> = if gz {
        Box::new(BufReader::new(MultiGzDecoder::new(f)))
    } else {
        Box::new(f)
    };
    let mut out = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| bad(&e))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: ReportEntry = serde_json::from_slice(&line).map_err(|e| {
            format!(
                "{}: line {}: not a report entry ({e})",
                path.display(),
                i + 1
            )
        })?;
        out.push(entry);
    }
    Ok(out)
}

fn outcome_name(o: EntryOutcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{o:?}"))
}

pub fn run(args: Args) -> Outcome {
    let mut errors = Vec::new();
    let (files, unfinished) = collect(&args.inputs, &mut errors);
    let (entries, read, gz_files) = read_all(&files, &mut errors);
    if let Some(against) = &args.against {
        let (old_files, old_unfinished) = collect(std::slice::from_ref(against), &mut errors);
        let (old, _, _) = read_all(&old_files, &mut errors);
        for t in unfinished.iter().chain(&old_unfinished) {
            eprintln!(
                "note: {}: an unfinished report (its writer stopped before the end), not read",
                t.display()
            );
        }
        if !errors.is_empty() {
            for e in &errors {
                eprintln!("error: {e}");
            }
            return Outcome::UnusableInput;
        }
        let (old, new) = (trail(&old), trail(&entries));
        if old.is_empty() || new.is_empty() {
            eprintln!(
                "error: {}: no audit trail (entries its verify pass compared); a pass with verify.mode None has none",
                if old.is_empty() {
                    against.display().to_string()
                } else {
                    args.inputs[0].display().to_string()
                }
            );
            return Outcome::UnusableInput;
        }
        return print_changes(&args, &compare(&old, &new), (old.len(), new.len()));
    }
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_op: BTreeMap<String, u64> = BTreeMap::new();
    for (_, e) in &entries {
        *by_outcome.entry(outcome_name(e.outcome)).or_default() += 1;
        *by_op.entry(e.op.clone()).or_default() += 1;
    }
    let with_file = |i: usize, e: &ReportEntry| {
        let mut v = serde_json::to_value(e).expect("report entries serialize");
        v["file"] = files[i].display().to_string().into();
        v
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.jsonl {
        for (i, e) in &entries {
            let _ = writeln!(out, "{}", with_file(*i, e));
        }
    } else if args.csv {
        let _ = writeln!(out, "path,outcome,op,type,size,mtime,digest,error");
        for (_, e) in &entries {
            let _ = writeln!(out, "{}", csv_line(e));
        }
    } else if args.json {
        let doc = serde_json::json!({
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "unfinished": unfinished.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "errors": errors,
            "entries": entries.len(),
            "byOutcome": by_outcome,
            "byOp": by_op,
            "list": entries.iter().map(|(i, e)| with_file(*i, e)).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        let _ = writeln!(
            out,
            "{} entries from {read} report file(s) ({gz_files} gzip)",
            entries.len(),
        );
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !entries.is_empty() {
            let _ = writeln!(out, "by outcome: {}", join(&by_outcome));
            let _ = writeln!(out, "by operation: {}", join(&by_op));
        }
        // The audit trail (matched entries) is counted, not listed: the list is what went wrong.
        let listed: Vec<&(usize, ReportEntry)> = entries
            .iter()
            .filter(|(_, e)| e.outcome != EntryOutcome::Matched)
            .collect();
        if !listed.is_empty() {
            let n = listed.len().min(args.limit);
            let _ = writeln!(out, "first {n} of {}:", listed.len());
            for (i, e) in listed.iter().take(n) {
                let what = match (&e.error, e.mismatches.is_empty()) {
                    (Some(err), _) => err.clone(),
                    (None, false) => format!("{:?}", e.mismatches),
                    (None, true) => String::new(),
                };
                let file = files[*i]
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} {} {}: {what} [{file}]",
                    outcome_name(e.outcome),
                    e.op,
                    e.path
                );
            }
        }
    }
    let _ = out.flush();
    if files.is_empty() && errors.is_empty() {
        eprintln!(
            "note: no report files (*.jsonl, *.jsonl.gz) under {}",
            args.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for t in &unfinished {
        eprintln!(
            "note: {}: an unfinished report (its writer stopped before the end), not read",
            t.display()
        );
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if errors.is_empty() {
        Outcome::Success
    } else {
        Outcome::UnusableInput
    }
}

/// `--against`: the differences between two passes, as a summary, JSON or CSV.
fn print_changes(args: &Args, c: &Changes, (old, new): (usize, usize)) -> Outcome {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let doc = serde_json::json!({
            "earlier": old, "later": new,
            "added": c.added, "removed": c.removed,
            "changed": c.changed.iter().map(|(p, w)| serde_json::json!({"path": p, "what": w})).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else if args.csv || args.jsonl {
        let rows = c
            .added
            .iter()
            .map(|p| ("added", p, String::new()))
            .chain(c.removed.iter().map(|p| ("removed", p, String::new())))
            .chain(c.changed.iter().map(|(p, w)| ("changed", p, w.join(" "))));
        if args.csv {
            let _ = writeln!(out, "change,path,what");
        }
        for (kind, p, what) in rows {
            let _ = if args.csv {
                writeln!(out, "{kind},{},{}", csv_field(p), csv_field(&what))
            } else {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"change": kind, "path": p, "what": what})
                )
            };
        }
    } else {
        let _ = writeln!(
            out,
            "{old} entries in the earlier pass's trail, {new} in the later's: {} added, {} removed, {} changed",
            c.added.len(),
            c.removed.len(),
            c.changed.len()
        );
        for (label, list) in [("added", &c.added), ("removed", &c.removed)] {
            for p in list.iter().take(args.limit) {
                let _ = writeln!(out, "  {label} {p}");
            }
        }
        for (p, what) in c.changed.iter().take(args.limit) {
            let _ = writeln!(out, "  changed {p}: {}", what.join(", "));
        }
    }
    let _ = out.flush();
    Outcome::Success
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(kind: char, size: u64, mtime: &str, digest: Option<&str>) -> Seen {
        Seen {
            meta: Some(ingest_copy::EntryMeta {
                kind,
                size,
                mtime: mtime.into(),
            }),
            digest: digest.map(str::to_owned),
        }
    }

    #[test]
    fn two_trails_differ_by_what_was_added_removed_and_changed() {
        let old = BTreeMap::from([
            ("a".to_owned(), seen('f', 1, "1.0", Some("aa"))),
            ("b".to_owned(), seen('f', 2, "1.0", None)),
            ("c".to_owned(), seen('f', 3, "1.0", Some("cc"))),
            ("gone".to_owned(), seen('l', 4, "1.0", None)),
        ]);
        let new = BTreeMap::from([
            ("a".to_owned(), seen('f', 1, "1.0", Some("aa"))),
            ("b".to_owned(), seen('d', 5, "2.0", None)),
            // Same size and mtime, other content (a checksum pass on both sides sees it).
            ("c".to_owned(), seen('f', 3, "1.0", Some("cd"))),
            ("new".to_owned(), seen('f', 0, "3.0", None)),
        ]);
        let c = compare(&old, &new);
        assert_eq!(c.added, ["new"]);
        assert_eq!(c.removed, ["gone"]);
        assert_eq!(
            c.changed,
            [
                ("b".to_owned(), vec!["type", "size", "mtime"]),
                ("c".to_owned(), vec!["content"])
            ]
        );
        assert_eq!(compare(&new, &new), Changes::default());
    }

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("plain/path"), "plain/path");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
