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
            Out::Gzip(GzEncoder::new(file, Compression::default()))
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
    #[arg(long)]
    pub jsonl: bool,
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
    let mut entries: Vec<(usize, ReportEntry)> = Vec::new();
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
        // The checksum audit trail (matched files) is counted, not listed: the list is what went wrong.
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
