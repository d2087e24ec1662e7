//! The shard planner: from a [`Scan`], about K shards of similar predicted cost, dealt to workers.
//!
//! 1. Decompose, top down. A directory whose subtree costs at most the target `t = total / K` (and
//!    holds no file to be cut) is one `Tree` unit. A larger directory is cut into name ranges of its
//!    own entries (`Entries`, subtrees included) of about `t` each; children too large for a range
//!    and files much larger than `t` are left out of the ranges (a range ends at the name, the next
//!    starts just after it) and handled on their own: children recursively, files as `FileRange`s.
//!    Where a directory's entries are many, the scan's sampled names mark where ranges may be cut.
//! 2. Pack consecutive small units (neighbours in the tree) into shards of at most `t`.
//! 3. Give each hard-linked inode's paths, as one `LinkGroup`, to the least loaded shard.
//! 4. Order shards by cost, largest first, and deal them to workers longest-processing-time first
//!    (each to the least loaded worker), which bounds the makespan by 4/3 of the optimum.
//! 5. Number them in the order they are handed out: largest first, but the name ranges that
//!    create the files of one crowded directory spread over the first half ([`dispatch_order`]).
//!
//! Every step is a pure function of the scan and the options, so the same tree gives the same plan.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use ingest_path::RelPath;

use crate::format::{
    CostModel, DirectoryTotals, LARGEST_DIRECTORIES, PLAN_API_VERSION, PLAN_KIND, Plan, Prediction,
    Shard, ShardScope, Totals,
};
use crate::scan::Scan;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Shards wanted (K).
    pub shards: u32,
    /// Workers in all, spread round robin over `servers`.
    pub workers: u32,
    pub servers: Vec<String>,
    pub cost: CostModel,
    /// A file is cut into byte ranges when it costs more than this many target shards.
    pub split_factor: f64,
    /// Byte ranges are multiples of this many bytes.
    pub range_align: u64,
    /// Upper bounds on one shard's files and bytes (the spec's `shards.maxFiles` / `maxBytes`).
    /// They lower the cost target, so a shard meets them unless it is one indivisible piece.
    pub max_files: Option<u64>,
    pub max_bytes: Option<u64>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            shards: 256,
            workers: 1,
            servers: vec!["local".to_string()],
            cost: CostModel::default(),
            split_factor: 2.0,
            range_align: 1 << 20,
            max_files: None,
            max_bytes: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("shards must be at least 1 (got 0)")]
    Shards,
    #[error("workers must be at least 1 (got 0)")]
    Workers,
    #[error("at least one destination server is needed (got none)")]
    Servers,
    #[error("the scan holds no directories (the root is missing)")]
    EmptyScan,
}

/// Work of a unit or a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Load {
    cost: f64,
    files: u64,
    bytes: u64,
    /// Of `files`, those a name range creates in its directory itself (not in subtrees): what
    /// makes a range crowded (see [`dispatch_order`]).
    own: u64,
}

impl Load {
    fn add(&mut self, o: Load) {
        self.cost += o.cost;
        self.files += o.files;
        self.bytes += o.bytes;
        self.own += o.own;
    }
}

struct Unit {
    scope: ShardScope,
    load: Load,
    /// A name range mostly of its directory's own files: that directory (its scan index).
    crowds: Option<usize>,
}

struct Planner<'a> {
    scan: &'a Scan,
    opts: &'a PlanOptions,
    target: f64,
    units: Vec<Unit>,
}

pub fn plan(scan: &Scan, opts: &PlanOptions) -> Result<Plan, PlanError> {
    if opts.shards == 0 {
        return Err(PlanError::Shards);
    }
    if opts.workers == 0 {
        return Err(PlanError::Workers);
    }
    if opts.servers.is_empty() {
        return Err(PlanError::Servers);
    }
    if scan.dirs.is_empty() {
        return Err(PlanError::EmptyScan);
    }
    let groups = scan.link_groups();
    let m = &opts.cost;
    let group_loads: Vec<Load> = groups
        .iter()
        .map(|(paths, size)| Load {
            cost: m.cost(paths.len() as u64, *size),
            files: paths.len() as u64,
            bytes: *size,
            own: 0,
        })
        .collect();
    let total = tree_load(scan, 0, m).cost + group_loads.iter().map(|l| l.cost).sum::<f64>();
    // A unit costing at most `cost(max_files, 0)` holds at most `max_files` entries, and one
    // costing at most `cost(0, max_bytes)` at most `max_bytes` bytes.
    let mut target = total / opts.shards as f64;
    if let Some(f) = opts.max_files {
        target = target.min(m.cost(f.max(1), 0));
    }
    if let Some(b) = opts.max_bytes {
        target = target.min(m.cost(0, b.max(1)));
    }
    let target = target.max(f64::MIN_POSITIVE);

    let mut p = Planner {
        scan,
        opts,
        target,
        units: Vec::new(),
    };
    p.decompose(0);
    let mut shards = pack(p.units, target);

    // Link groups: each to the least loaded shard (ties: the earliest), so they even things out.
    let mut heap: BinaryHeap<MinSlot> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| MinSlot {
            load: s.load.cost,
            index: i,
        })
        .collect();
    for ((paths, _), load) in groups.into_iter().zip(group_loads) {
        let mut slot = heap.pop().expect("at least one shard");
        shards[slot.index]
            .scopes
            .push(ShardScope::LinkGroup { paths });
        shards[slot.index].load.add(load);
        slot.load = shards[slot.index].load.cost;
        heap.push(slot);
    }

    // Largest first; ties keep tree order (the sort is stable).
    shards.sort_by(|a, b| b.load.cost.total_cmp(&a.load.cost));
    let costs: Vec<f64> = shards.iter().map(|s| s.load.cost).collect();
    let dealt = deal(&costs, opts.workers);
    let prediction = predict(&costs, &dealt, opts.workers);
    let nservers = opts.servers.len() as u32;
    // Handed out in this order (a shard's id is its place in it); each keeps its worker.
    let order = dispatch_order(&shards.iter().map(|s| s.crowds).collect::<Vec<_>>());
    let mut dealt_shards: Vec<Option<_>> = shards.into_iter().zip(dealt).map(Some).collect();
    let shards = order
        .into_iter()
        .filter_map(|i| dealt_shards[i].take())
        .enumerate()
        .map(|(id, (Packed { scopes, load, .. }, worker))| Shard {
            id: id as u32,
            cost: round6(load.cost),
            files: load.files,
            bytes: load.bytes,
            server: worker % nservers,
            worker,
            scopes,
        })
        .collect();
    Ok(Plan {
        api_version: PLAN_API_VERSION.to_string(),
        kind: PLAN_KIND.to_string(),
        requested_shards: opts.shards,
        cost_model: opts.cost,
        servers: opts.servers.clone(),
        workers: opts.workers,
        totals: totals(scan),
        prediction,
        scan_errors: scan.errors.clone(),
        filter: scan.filter.clone(),
        shards,
    })
}

/// What the scan found, as stored in the plan.
pub fn totals(scan: &Scan) -> Totals {
    let root = scan.root().tree;
    let (mut inodes, mut inode_bytes) = (0, 0);
    let mut last = None;
    for l in &scan.links {
        if last != Some((l.dev, l.ino)) {
            inodes += 1;
            inode_bytes += l.size;
            last = Some((l.dev, l.ino));
        }
    }
    Totals {
        files: root.files,
        directories: root.dirs,
        // Data to copy: a hard-linked inode's bytes once, however many paths it has.
        bytes: root.bytes - root.linked_bytes + inode_bytes,
        others: root.others,
        linked_inodes: inodes,
        linked_paths: scan.links.len() as u64,
        unreadable: scan.unreadable,
        errors: scan.error_count,
        size_histogram: scan.histogram.clone(),
        excluded: scan.excluded,
        age_histogram: scan.age_histogram.clone(),
        largest_directories: scan
            .largest_dirs(LARGEST_DIRECTORIES)
            .into_iter()
            .map(|d| DirectoryTotals {
                path: d.path.clone(),
                entries: d.own_entries(),
                bytes: d.bytes,
            })
            .collect(),
    }
}

/// Single-link work of directory `i`'s whole subtree.
fn tree_load(scan: &Scan, i: usize, m: &CostModel) -> Load {
    let t = &scan.dirs[i].tree;
    let files = t.files - t.linked_files;
    let bytes = t.bytes - t.linked_bytes;
    Load {
        cost: m.cost(files + t.others + t.dirs, bytes),
        files,
        bytes,
        own: 0,
    }
}

/// One step of a directory's name-ordered entries, as the range cutter sees them.
enum Item {
    /// Entries that go into a range: a small child subtree, or a slice of the directory's own
    /// entries starting at this name (`None` = from the beginning).
    Ranged(Option<Vec<u8>>, Load),
    /// A child decomposed on its own.
    Child(usize),
    /// A file cut into byte ranges.
    BigFile(Vec<u8>, u64),
}

impl Item {
    fn name<'s>(&'s self, scan: &'s Scan) -> Option<&'s [u8]> {
        match self {
            Item::Ranged(n, _) => n.as_deref(),
            Item::Child(c) => Some(scan.dirs[*c].path.file_name()),
            Item::BigFile(n, _) => Some(n),
        }
    }
}

impl Planner<'_> {
    fn file_splits(&self, size: u64) -> bool {
        size >= 2 * self.opts.range_align
            && self.opts.cost.cost(1, size) > self.opts.split_factor * self.target
    }

    fn must_split(&self, i: usize) -> bool {
        tree_load(self.scan, i, &self.opts.cost).cost > self.target
            || self.file_splits(self.scan.dirs[i].tree.max_big)
    }

    fn decompose(&mut self, i: usize) {
        let scan = self.scan;
        let d = &scan.dirs[i];
        if !self.must_split(i) {
            let load = tree_load(scan, i, &self.opts.cost);
            self.units.push(Unit {
                scope: ShardScope::Tree {
                    dir: d.path.clone(),
                },
                load,
                crowds: None,
            });
            return;
        }
        let m = self.opts.cost;
        let mut items: Vec<Item> = Vec::new();
        let (mut own_files, mut own_bytes) = (d.files - d.linked_files, d.bytes - d.linked_bytes);
        for (name, size) in &d.big_files {
            if self.file_splits(*size) {
                own_files -= 1;
                own_bytes -= size;
                items.push(Item::BigFile(name.clone(), *size));
            }
        }
        for c in scan.children(i) {
            if self.must_split(c) {
                items.push(Item::Child(c));
            } else {
                items.push(Item::Ranged(
                    Some(scan.dirs[c].path.file_name().to_vec()),
                    tree_load(scan, c, &m),
                ));
            }
        }
        // The directory's own entries, spread evenly over the slices between sampled names (the
        // sample is uniform over the listing, so each slice holds about the same number). Without
        // a sample (few entries) they are one slice, placed first: where they fall is unknown, and
        // at most the sample threshold's worth of cost is misplaced.
        let own_entries = own_files + d.others;
        let slices = d.samples.len() as u64 + 1;
        for k in 0..slices {
            let part = |x: u64| x * (k + 1) / slices - x * k / slices;
            let (f, b, e) = (part(own_files), part(own_bytes), part(own_entries));
            let name = if k == 0 {
                None
            } else {
                Some(d.samples[k as usize - 1].clone())
            };
            items.push(Item::Ranged(
                name,
                Load {
                    cost: m.cost(e, b),
                    files: f,
                    bytes: b,
                    own: f,
                },
            ));
        }
        items.sort_by(|a, b| a.name(scan).cmp(&b.name(scan)));

        // The directory itself is one entry, charged to its first range.
        let mut acc = Load {
            cost: m.cost(1, 0),
            ..Load::default()
        };
        let mut from: Option<Vec<u8>> = None;
        let mut any = false;
        for item in items {
            match item {
                Item::Ranged(name, load) => {
                    let name_after_from = match (&name, &from) {
                        (Some(n), Some(f)) => n > f,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    if any && name_after_from && acc.cost + load.cost > self.target {
                        self.range(i, from.take(), name.clone(), acc);
                        from = name;
                        acc = Load::default();
                    }
                    acc.add(load);
                    any = true;
                }
                Item::Child(c) => {
                    let name = scan.dirs[c].path.file_name().to_vec();
                    self.range(i, from.take(), Some(name.clone()), acc);
                    self.decompose(c);
                    from = Some(just_after(name));
                    acc = Load::default();
                    any = false;
                }
                Item::BigFile(name, size) => {
                    self.range(i, from.take(), Some(name.clone()), acc);
                    self.file_ranges(d.path.join(&name), size);
                    from = Some(just_after(name));
                    acc = Load::default();
                    any = false;
                }
            }
        }
        // The last range always exists: it may hold own entries (whose places are unknown) and it
        // gives the directory's own metadata a home.
        self.range(i, from, None, acc);
    }

    fn range(&mut self, i: usize, from: Option<Vec<u8>>, to: Option<Vec<u8>>, load: Load) {
        let d = &self.scan.dirs[i];
        // Every name of the directory belongs to exactly one scope, also a gap between two split
        // subdirectories that held nothing at the scan: the destination may have names there
        // (the verifier must find them, a mirror must delete them), and the source may have new
        // ones by the time the copy runs. An empty gap costs one listing of the directory.
        let name =
            |n: Vec<u8>| RelPath::from_bytes(n).expect("names from the scan are single components");
        self.units.push(Unit {
            scope: ShardScope::Entries {
                dir: d.path.clone(),
                from: from.map(name),
                to: to.map(name),
                subtrees: true,
            },
            load,
            // Its creates queue on the directory's lock with those of its other ranges.
            crowds: (load.own > 0 && 2 * load.own >= load.files).then_some(i),
        });
    }

    fn file_ranges(&mut self, file: RelPath, size: u64) {
        let m = self.opts.cost;
        let pieces = (m.cost(1, size) / self.target).ceil().max(2.0) as u64;
        let align = self.opts.range_align.max(1);
        let len = size.div_ceil(pieces).div_ceil(align) * align;
        let mut offset = 0;
        while offset < size {
            let l = len.min(size - offset);
            // The whole file counts once (with its first range) so that shard file counts add up.
            let files = u64::from(offset == 0);
            let cost = m.cost(files, l);
            self.units.push(Unit {
                scope: ShardScope::FileRange {
                    file: file.clone(),
                    offset,
                    len: l,
                },
                load: Load {
                    cost,
                    files,
                    bytes: l,
                    own: 0,
                },
                crowds: None,
            });
            offset += l;
        }
    }
}

/// The smallest name greater than `name`: names never contain NUL, so `name\0` sorts right after
/// `name` and before every other name that has it as a prefix.
fn just_after(mut name: Vec<u8>) -> Vec<u8> {
    name.push(0);
    name
}

/// A shard as packed: its scopes, its load, and the crowded directory it creates files in, if
/// one (see [`dispatch_order`]).
struct Packed {
    scopes: Vec<ShardScope>,
    load: Load,
    crowds: Option<usize>,
}

/// Consecutive units into shards of at most `target` (a larger unit is a shard alone).
fn pack(units: Vec<Unit>, target: f64) -> Vec<Packed> {
    let mut shards: Vec<Packed> = Vec::new();
    let mut open = false;
    for u in units {
        let fits = open && {
            let last = &shards.last().expect("open shard").load;
            last.cost + u.load.cost <= target
        };
        if !fits {
            shards.push(Packed {
                scopes: Vec::new(),
                load: Load::default(),
                crowds: None,
            });
        }
        let s = shards.last_mut().expect("shard pushed");
        s.scopes.push(u.scope);
        s.load.add(u.load);
        s.crowds = s.crowds.or(u.crowds);
        open = s.load.cost < target;
    }
    shards
}

/// A slot in a min-heap by load, ties by lowest index.
#[derive(Debug, Clone, Copy)]
struct MinSlot {
    load: f64,
    index: usize,
}

impl PartialEq for MinSlot {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for MinSlot {}
impl PartialOrd for MinSlot {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for MinSlot {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap pops the greatest, we want the least loaded, lowest index.
        o.load
            .total_cmp(&self.load)
            .then_with(|| o.index.cmp(&self.index))
    }
}

/// The share of the order over which the name ranges of one crowded directory are spread (see
/// [`dispatch_order`]).
const SPREAD: f64 = 0.5;

/// The order to hand out shards in, given for each (largest first) the crowded directory it
/// creates files in, if one: largest first, except that the shards of a directory with several
/// are spread evenly over the first [`SPREAD`] of the order (the k-th of m at (k + 1/2)/m of it).
///
/// A crowded directory is one whose name ranges hold mostly its own files (not whole subtrees).
/// Creating files in one directory goes one create at a time per client (the kernel holds the
/// directory's lock for each, an NFS round trip) and the server serialises them too, so its
/// ranges copy at a bounded rate however many run at once. Among shards of like cost, largest
/// first is tree order, and a 1,000-file directory that sorts late was copied last, alone, at
/// that rate (traced on emulated 2 ms nodes: the nodes 60-80% idle for the last tenth of a
/// `run`). Spread, its ranges go on beside the rest. Ranges of whole subtrees (most of a wide
/// root's) and large files' byte ranges are not crowded: they keep their place, the largest
/// shards first. Returns the indexes of `crowds` in order.
pub fn dispatch_order<T: Ord>(crowds: &[Option<T>]) -> Vec<usize> {
    let mut sizes: BTreeMap<&T, usize> = BTreeMap::new();
    for g in crowds.iter().flatten() {
        *sizes.entry(g).or_default() += 1;
    }
    let n = crowds.len();
    let mut seen: BTreeMap<&T, usize> = BTreeMap::new();
    let mut spread: Vec<(f64, usize)> = Vec::new();
    let mut others = Vec::new();
    for (i, g) in crowds.iter().enumerate() {
        match g.as_ref().filter(|g| sizes[g] > 1) {
            Some(g) => {
                let k = seen.entry(g).or_default();
                let at = SPREAD * n as f64 * (*k as f64 + 0.5) / sizes[g] as f64;
                spread.push((at, i));
                *k += 1;
            }
            None => others.push(i),
        }
    }
    spread.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut spread = spread.into_iter().peekable();
    let mut others = others.into_iter();
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let due = spread.next_if(|&(at, _)| at <= order.len() as f64);
        match due.map(|(_, i)| i).or_else(|| others.next()) {
            Some(i) => order.push(i),
            None => order.extend(spread.by_ref().map(|(_, i)| i)),
        }
    }
    order
}

/// Longest processing time first: `costs` (already largest first) each to the least loaded of
/// `workers` slots. Returns the slot of each shard.
pub fn deal(costs: &[f64], workers: u32) -> Vec<u32> {
    let mut heap: BinaryHeap<MinSlot> = (0..workers as usize)
        .map(|index| MinSlot { load: 0.0, index })
        .collect();
    costs
        .iter()
        .map(|&c| {
            let mut slot = heap.pop().expect("workers >= 1");
            slot.load += c;
            heap.push(slot);
            slot.index as u32
        })
        .collect()
}

/// Per-worker predicted load of a dealing.
pub fn predict(costs: &[f64], dealt: &[u32], workers: u32) -> Prediction {
    let mut load = vec![0.0f64; workers as usize];
    for (&c, &w) in costs.iter().zip(dealt) {
        load[w as usize] += c;
    }
    let makespan = load.iter().cloned().fold(0.0, f64::max);
    let mean = load.iter().sum::<f64>() / workers as f64;
    let max_shard = costs.iter().cloned().fold(0.0, f64::max);
    let mean_shard = if costs.is_empty() {
        0.0
    } else {
        costs.iter().sum::<f64>() / costs.len() as f64
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { round6(a / b) } else { 1.0 };
    Prediction {
        makespan: round6(makespan),
        mean: round6(mean),
        imbalance: ratio(makespan, mean),
        shard_imbalance: ratio(max_shard, mean_shard),
    }
}

/// Microsecond precision is plenty for predictions and keeps the JSON short.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::dispatch_order;

    #[test]
    fn the_ranges_of_a_crowded_directory_are_spread_over_the_first_half_the_rest_keep_their_order()
    {
        // Twelve shards, largest first: three ranges of `w`, the last ones by size, nine others.
        let mut crowds = vec![None; 9];
        crowds.extend([Some("w"); 3]);
        let order = dispatch_order(&crowds);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..12).collect::<Vec<_>>(),
            "a permutation: {order:?}"
        );
        // The first half is 6: the ranges at 1, 3 and 5, in their own order; the others keep
        // largest first around them, the largest at the front.
        assert_eq!(order, [0, 9, 1, 10, 2, 11, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_directory_with_one_crowded_range_or_none_changes_nothing() {
        let crowds = [None, Some("a"), None, Some("b"), None];
        assert_eq!(dispatch_order(&crowds), [0, 1, 2, 3, 4]);
        assert_eq!(dispatch_order::<&str>(&[None, None, None]), [0, 1, 2]);
        assert_eq!(dispatch_order::<&str>(&[]), Vec::<usize>::new());
    }

    #[test]
    fn two_crowded_directories_are_spread_side_by_side() {
        let crowds = [
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            None,
            None,
            None,
            None,
        ];
        // The first half is 4: both first ranges at 1, both second ranges at 3.
        assert_eq!(dispatch_order(&crowds), [4, 0, 2, 1, 3, 5, 6, 7]);
    }

    #[test]
    fn a_tree_that_is_all_ranges_of_one_directory_keeps_their_order() {
        let crowds = [Some("flat"); 5];
        assert_eq!(dispatch_order(&crowds), [0, 1, 2, 3, 4]);
    }
}
