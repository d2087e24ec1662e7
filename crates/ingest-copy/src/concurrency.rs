//! `--threads auto`: how many operations each destination mount gets in flight.
//!
//! On NFS every create, lookup and setattr is a round trip, so throughput comes from operations
//! in flight, up to the point where the server (or the client's CPU) is saturated: past that knee
//! more threads only lengthen every operation. The right number differs per cluster node and
//! changes with the load, so it is found while copying.
//!
//! Shape: the engine starts up to `max_per_mount` threads per mount; before each task a thread
//! takes a permit from its mount's [`Gate`], so the gate's limit is the mount's concurrency. A
//! controller thread samples each gate every `interval_ms` and feeds the [`Controller`], a pure
//! state machine (a gradient limiter in the manner of Netflix's concurrency-limits): while the
//! time per unit of work stays near the best seen, the limit grows; when it grows without more
//! work done (queueing at the knee), the limit shrinks in proportion. Each mount has its own
//! limit, measured against the cluster's uncongested time per unit (the best node's), so a
//! slower or smaller node ends with fewer permits and the shared queue's tasks flow to the
//! faster ones. Each mount holds its initial limit for its first few samples, which come from
//! the top of the tree (cheap directory entries) and would make a misleading baseline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::job::Options;

use serde::{Deserialize, Serialize};

/// How many threads copy, and how they are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Concurrency {
    /// `Options::threads` threads in all, dealt round robin over the mounts.
    #[default]
    Fixed,
    /// A limit per mount, found while copying.
    Auto(AutoConfig),
}

/// Bounds and pace of the adaptive controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoConfig {
    /// Threads started per mount: the most the limit can reach.
    pub max_per_mount: usize,
    /// The limit each mount starts with.
    pub initial: usize,
    /// Time between two samples.
    pub interval_ms: u64,
}

impl Default for AutoConfig {
    fn default() -> Self {
        AutoConfig {
            // Far past the knee of the emulated nodes (16 at once) and of this 2-core client;
            // more only adds threads that wait for permits.
            max_per_mount: 64,
            // The fixed default's per-mount count. Measured on emulated nodes
            // (crates/ingest-latencyfs/results): from 4, the ramp-up and a baseline taken at
            // too little concurrency held auto at 79-91% of the best fixed setting where the
            // client's CPU is the knee; from 16, 92-101% everywhere. A node with less capacity
            // still shows its queueing against the cluster's baseline, now that its samples
            // come after a few tasks (see `FEED_TASKS`).
            initial: 16,
            // Samples wait for about one finished task per permit anyway (see `MountLimits::govern`),
            // so a short interval only makes the steps follow the work more closely.
            interval_ms: 100,
        }
    }
}

/// What one mount did during one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Tasks finished.
    pub tasks: u64,
    /// Units of work finished (entries handled; a directory listing counts one).
    pub units: u64,
    /// Time spent in those tasks, summed over threads.
    pub busy: Duration,
    /// The most tasks running at once on this mount during the interval.
    pub peak_running: usize,
}

impl Sample {
    /// Both intervals as one.
    pub fn add(&mut self, o: &Sample) {
        self.tasks += o.tasks;
        self.units += o.units;
        self.busy += o.busy;
        self.peak_running = self.peak_running.max(o.peak_running);
    }
}

/// The limit of one mount and what it has learned.
#[derive(Debug, Clone)]
struct MountState {
    limit: f64,
    /// Doubling each step until the first sign of queueing (as TCP's slow start), so that a
    /// copy of a few seconds still reaches the knee.
    slow_start: bool,
    /// Time per unit, smoothed over intervals: tasks differ (a batch of subdirectories costs a
    /// third of a batch of files per entry), and one cheap interval must not pass for the
    /// uncongested latency.
    smoothed: f64,
    /// The least smoothed time per unit seen (the no-queueing baseline), slowly forgotten.
    baseline: f64,
    /// Samples fed so far (see `WARMUP_SAMPLES`).
    samples: u32,
}

/// The pure part: samples in, limits out. No clock, no threads.
#[derive(Debug, Clone)]
pub struct Controller {
    cfg: AutoConfig,
    mounts: Vec<MountState>,
}

/// How fast the baseline is forgotten per interval (about 3% a minute at 250 ms). A window
/// minimum would not do: a mount kept at its knee never shows its uncongested time again, so the
/// window would fill with queued samples and the limit would climb without end. The slow drift
/// still follows a server that became slower for good.
const DRIFT: f64 = 0.0005;
/// Latency may grow this much over the baseline before the limit shrinks: below the knee the
/// time per unit wobbles with the task mix, and shrinking on noise would leave throughput unused.
/// 3, measured on emulated nodes (crates/ingest-latencyfs/results): where the client's CPU is the
/// knee (1 ms nodes of capacity 16 on 2 cores), throughput still rises a little while the time
/// per unit triples, and 2 (Netflix's default) stopped at 80-89% of the best fixed setting;
/// where the nodes' capacity is the knee, going past it only queues, which costs nothing but
/// latency, and the cluster baseline still holds a small node near its capacity.
const TOLERANCE: f64 = 3.0;
/// Weight of a new interval in the smoothed time per unit.
const LATENCY_SMOOTHING: f64 = 0.3;
/// Weight of the new estimate when the limit shrinks.
const SMOOTHING: f64 = 0.5;
/// Growth per interval while no queueing is seen.
const GROWTH: f64 = 0.2;
/// Samples a mount holds its initial limit for before the baseline counts. A copy starts with
/// the top of the tree, directories whose entries cost a fraction of a file's: taken for the
/// baseline (the cluster's, below), they made every later file look queued and the limits sank
/// to 1 (seen on emulated 2 ms nodes).
const WARMUP_SAMPLES: u32 = 3;

impl Controller {
    pub fn new(mounts: usize, cfg: AutoConfig) -> Self {
        let initial = cfg.initial.clamp(1, cfg.max_per_mount.max(1)) as f64;
        Controller {
            cfg,
            mounts: vec![
                MountState {
                    limit: initial,
                    slow_start: true,
                    smoothed: f64::NAN,
                    baseline: f64::INFINITY,
                    samples: 0,
                };
                mounts
            ],
        }
    }

    /// The permits each mount has now.
    pub fn limits(&self) -> Vec<usize> {
        self.mounts
            .iter()
            .map(|m| m.limit.round() as usize)
            .collect()
    }

    /// Takes one interval's samples (one per mount, in mount order) and returns the new limits.
    pub fn step(&mut self, samples: &[Sample]) -> Vec<usize> {
        let max = self.cfg.max_per_mount.max(1) as f64;
        let per_unit = |s: &Sample| s.busy.as_secs_f64() / s.units as f64;
        for (m, s) in self.mounts.iter_mut().zip(samples) {
            if s.units > 0 {
                m.smoothed = if m.smoothed.is_nan() {
                    per_unit(s)
                } else {
                    m.smoothed * (1.0 - LATENCY_SMOOTHING) + per_unit(s) * LATENCY_SMOOTHING
                };
                m.samples += 1;
                if m.samples > WARMUP_SAMPLES {
                    m.baseline = (m.baseline * (1.0 + DRIFT)).min(m.smoothed);
                }
            }
        }
        // The uncongested time per unit is the cluster's, not one node's: every mount is the
        // same export, and the tasks come from one queue. A mount whose first samples were
        // already queued (a node with little capacity, reached with the initial limit) would
        // otherwise take its queued time for its baseline and never shrink; measured against
        // the best node it does, and the work flows to the others.
        let floor = self
            .mounts
            .iter()
            .map(|m| m.baseline)
            .fold(f64::INFINITY, f64::min);
        for (m, s) in self.mounts.iter_mut().zip(samples) {
            if s.units == 0 || m.samples <= WARMUP_SAMPLES {
                // Nothing finished: no evidence either way (a long task, or no work queued).
                // Or still warming up: the initial limit is held while the baseline settles.
                continue;
            }
            // The gradient follows this interval, not the smoothed time: a task's time is
            // already an average over the several intervals it ran, and smoothing it again
            // kept the limit shrinking for steps after the queue had drained.
            let gradient = (TOLERANCE * floor / per_unit(s)).clamp(0.5, 1.0);
            // A mount that did not use its permits shows nothing about more of them: growing
            // its limit then would only let a later burst overshoot the knee.
            let used = s.peak_running as f64 >= (m.limit * 0.5).floor();
            if gradient < 1.0 {
                m.slow_start = false;
            }
            m.limit = if gradient >= 1.0 {
                if !used {
                    m.limit
                } else if m.slow_start {
                    m.limit * 2.0
                } else {
                    // No queueing seen: grow by a fifth (at least one); overshoot costs only
                    // queueing, which the next steps take back.
                    m.limit + (m.limit * GROWTH).max(1.0)
                }
            } else {
                // Queueing: shrink towards the limit that would bring the latency back within
                // tolerance, smoothed so that one odd interval moves it only a little.
                m.limit * (1.0 - SMOOTHING) + m.limit * gradient * SMOOTHING
            }
            .clamp(1.0, max);
        }
        self.limits()
    }
}

/// The permits of one mount, and what its threads did since the last sample.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
    tasks: AtomicU64,
    units: AtomicU64,
    busy_ns: AtomicU64,
}

#[derive(Debug)]
struct GateState {
    limit: usize,
    held: usize,
    running: usize,
    peak_running: usize,
    /// Time per unit of the tasks ended, a moving average (see [`Gate::pace`]).
    per_unit: Option<f64>,
}

/// Weight of the newest task in a gate's moving average of time per unit: a few dozen tasks,
/// enough to smooth over the task mix (a listing against a batch of files), short enough to
/// follow a node that slows down or recovers.
const PER_UNIT_WEIGHT: f64 = 0.05;

impl Gate {
    pub fn new(limit: usize) -> Self {
        Gate {
            state: Mutex::new(GateState {
                limit: limit.max(1),
                held: 0,
                running: 0,
                peak_running: 0,
                per_unit: None,
            }),
            cv: Condvar::new(),
            tasks: AtomicU64::new(0),
            units: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
        }
    }

    /// Waits for a permit; it is given back when the returned guard is dropped.
    pub fn acquire(&self) -> Permit<'_> {
        let mut st = self.state.lock().unwrap();
        while st.held >= st.limit {
            st = self.cv.wait(st).unwrap();
        }
        st.held += 1;
        Permit { gate: self }
    }

    pub fn set_limit(&self, limit: usize) {
        let mut st = self.state.lock().unwrap();
        let raised = limit > st.limit;
        st.limit = limit.max(1);
        drop(st);
        if raised {
            self.cv.notify_all();
        }
    }

    pub fn limit(&self) -> usize {
        self.state.lock().unwrap().limit
    }

    /// Marks the start of a task (a permit holder may also be idle, waiting for work).
    pub fn begin(&self) -> Instant {
        let mut st = self.state.lock().unwrap();
        st.running += 1;
        st.peak_running = st.peak_running.max(st.running);
        Instant::now()
    }

    /// Runs one task of a walk on `gate`'s mount (`None`: no limits) and `meter`, which see its
    /// time and the `units` of work it returns: the copy's walk and the verifier's both run their
    /// tasks through this.
    pub(crate) fn measure(
        gate: Option<&Gate>,
        meter: &crate::MountMeter,
        task: impl FnOnce() -> u64,
    ) {
        let started = gate.map(Gate::begin);
        let metered = meter.begin();
        let units = task();
        metered.end(units);
        if let (Some(g), Some(t)) = (gate, started) {
            g.end(t, units);
        }
    }

    /// Marks the end of a task that did `units` units of work.
    pub fn end(&self, started: Instant, units: u64) {
        let took = started.elapsed();
        self.busy_ns.fetch_add(took.as_nanos() as u64, Relaxed);
        self.units.fetch_add(units, Relaxed);
        self.tasks.fetch_add(1, Relaxed);
        let mut st = self.state.lock().unwrap();
        st.running -= 1;
        let per_unit = took.as_secs_f64() / units.max(1) as f64;
        st.per_unit = Some(match st.per_unit {
            None => per_unit,
            Some(old) => old * (1.0 - PER_UNIT_WEIGHT) + per_unit * PER_UNIT_WEIGHT,
        });
    }

    /// Starts the moving average of time per unit at `micros` (an earlier pass's figure), so
    /// that [`Gate::pace`] knows the mount from the start.
    pub fn paced(self, micros: Option<u64>) -> Self {
        self.state.lock().unwrap().per_unit = micros.map(|us| us as f64 / 1e6);
        self
    }

    /// The mount's recent time per unit of work (seconds; `None` before its first task ended)
    /// and the permits free now: what [`crate::engine`] weighs before giving a task to a slower
    /// mount while a faster one idles.
    pub fn pace(&self) -> (Option<f64>, usize) {
        let st = self.state.lock().unwrap();
        (st.per_unit, st.limit.saturating_sub(st.held))
    }

    /// What was done since the last call.
    pub fn take_sample(&self) -> Sample {
        let mut st = self.state.lock().unwrap();
        let peak_running = st.peak_running;
        st.peak_running = st.running;
        drop(st);
        Sample {
            tasks: self.tasks.swap(0, Relaxed),
            units: self.units.swap(0, Relaxed),
            busy: Duration::from_nanos(self.busy_ns.swap(0, Relaxed)),
            peak_running,
        }
    }
}

pub struct Permit<'a> {
    gate: &'a Gate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap();
        st.held -= 1;
        drop(st);
        self.gate.cv.notify_one();
    }
}

/// A mount's sample is fed once it holds this many finished tasks (or one per permit, if
/// fewer): fewer is mostly noise, but waiting for one per permit left a slow node, whose tasks
/// take seconds when it is over-fed, at its initial limit for most of a copy.
const FEED_TASKS: usize = 4;

/// The permits of each destination mount, for every run that goes on at once in this process,
/// and (`--threads auto`) the controller loop that adjusts them.
///
/// A worker runs two shards at a time so that its threads never idle at a shard's tail (see
/// `vfxt-ingest worker`). Each run starts its own threads, and all of them take their permits
/// here, so the mounts see the configured concurrency (N threads, or auto's limits) and not
/// twice it: at one shard's tail its threads wait for work without holding permits, and the
/// other shard's threads take them. [`crate::run`] makes limits of its own;
/// [`crate::run_sharing`] takes the caller's.
pub struct MountLimits {
    /// By destination, as [`crate::mount_names`] names it.
    gates: Vec<(String, Gate)>,
    auto: Option<AutoConfig>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

impl MountLimits {
    /// Limits for `destinations` under `opts`: with a fixed thread count, each mount's share
    /// of `opts.threads` as the engine deals them (round robin); with `auto`, the controller's
    /// initial limit.
    pub fn new(destinations: &[PathBuf], opts: &Options) -> Self {
        let n = destinations.len().max(1);
        let auto = match opts.concurrency {
            Concurrency::Fixed => None,
            Concurrency::Auto(cfg) => Some(cfg),
        };
        let limits = match auto {
            Some(cfg) => Controller::new(n, cfg).limits(),
            None => (0..n)
                .map(|i| opts.threads / n + usize::from(i < opts.threads % n))
                .collect(),
        };
        let pace = |i: usize| opts.mount_pace.get(i).copied().flatten();
        MountLimits {
            gates: crate::mount_names(destinations)
                .into_iter()
                .zip(limits)
                .enumerate()
                .map(|(i, (name, l))| (name, Gate::new(l).paced(pace(i))))
                .collect(),
            auto,
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        }
    }

    /// The gate of the destination `name`, if these limits know it.
    pub fn gate(&self, name: &str) -> Option<&Gate> {
        self.gates.iter().find(|(n, _)| n == name).map(|(_, g)| g)
    }

    /// `--threads auto`: samples and adjusts the gates until [`MountLimits::stop`]. With a
    /// fixed thread count there is nothing to adjust, and it returns at once.
    pub fn govern(&self) {
        let Some(cfg) = self.auto else {
            return;
        };
        let gates: Vec<&Gate> = self.gates.iter().map(|(_, g)| g).collect();
        let mut ctl = Controller::new(gates.len(), cfg);
        let interval = Duration::from_millis(cfg.interval_ms.max(1));
        let mut pending = vec![Sample::default(); gates.len()];
        let trace = std::env::var_os("VFXT_INGEST_AUTO_TRACE").is_some();
        let mut stopped = self.stop.lock().unwrap();
        while !*stopped {
            stopped = self.stop_cv.wait_timeout(stopped, interval).unwrap().0;
            if *stopped {
                return;
            }
            // A mount's sample is fed only once it holds a few finished tasks (`FEED_TASKS`):
            // with long tasks (a batch of files at 2 ms per operation) an interval can end
            // before any finish, and a latency measured on one or two tasks is mostly noise.
            let limits = ctl.limits();
            let samples: Vec<Sample> = gates
                .iter()
                .zip(pending.iter_mut())
                .zip(&limits)
                .map(|((g, p), limit)| {
                    p.add(&g.take_sample());
                    if p.tasks as usize >= (*limit).clamp(1, FEED_TASKS) {
                        std::mem::take(p)
                    } else {
                        Sample::default()
                    }
                })
                .collect();
            let limits = ctl.step(&samples);
            if trace {
                // Opt-in diagnostics for tuning on a real cluster: one line per step.
                let per_mount: Vec<String> = samples
                    .iter()
                    .zip(&limits)
                    .map(|(s, l)| {
                        let per_unit_ms = if s.units > 0 {
                            s.busy.as_secs_f64() * 1e3 / s.units as f64
                        } else {
                            0.0
                        };
                        format!(
                            "limit {l} tasks {} units {} ms/unit {per_unit_ms:.2} peak {}",
                            s.tasks, s.units, s.peak_running
                        )
                    })
                    .collect();
                eprintln!("threads auto: {}", per_mount.join(" | "));
            }
            for (g, l) in gates.iter().zip(&limits) {
                g.set_limit(*l);
            }
        }
    }

    /// Ends [`MountLimits::govern`].
    pub fn stop(&self) {
        *self.stop.lock().unwrap() = true;
        self.stop_cv.notify_all();
    }

    /// Runs `f` while [`MountLimits::govern`] runs beside it (in a thread of its own, only with
    /// `auto`), and stops it afterwards, also when `f` panics. One caller at a time.
    pub fn governing<R>(&self, f: impl FnOnce() -> R) -> R {
        struct StopOnDrop<'a>(&'a MountLimits);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        if self.auto.is_none() {
            return f();
        }
        *self.stop.lock().unwrap() = false;
        std::thread::scope(|s| {
            s.spawn(|| self.govern());
            let _stop = StopOnDrop(self);
            f()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mount that serves `capacity` operations at once, each taking `latency` when not queued;
    /// `cpu_knee` models a client whose CPU saturates: beyond it, running more tasks adds no work.
    #[derive(Clone, Copy)]
    struct Model {
        capacity: f64,
        latency: f64,
        cpu_knee: f64,
    }

    impl Model {
        /// One 250 ms interval with `limit` tasks in flight and plenty of work queued.
        fn sample(&self, limit: usize) -> Sample {
            let n = limit as f64;
            let served = n.min(self.capacity).min(self.cpu_knee);
            let rate = served / self.latency; // units per second
            let per_unit = self.latency * n / served; // Little's law: W = L / λ
            let units = (rate * 0.25).round().max(1.0) as u64;
            Sample {
                tasks: units,
                units,
                busy: Duration::from_secs_f64(per_unit * units as f64),
                peak_running: limit,
            }
        }

        fn throughput(&self, limit: usize) -> f64 {
            (limit as f64).min(self.capacity).min(self.cpu_knee) / self.latency
        }
    }

    fn run(models: &[Model], steps: usize) -> (Controller, Vec<Vec<usize>>) {
        run_from(models, steps, AutoConfig::default())
    }

    fn run_from(models: &[Model], steps: usize, cfg: AutoConfig) -> (Controller, Vec<Vec<usize>>) {
        let mut c = Controller::new(models.len(), cfg);
        let mut trace = Vec::new();
        for _ in 0..steps {
            let limits = c.limits();
            let samples: Vec<Sample> = models
                .iter()
                .zip(&limits)
                .map(|(m, l)| m.sample(*l))
                .collect();
            trace.push(c.step(&samples));
        }
        (c, trace)
    }

    const FAST: Model = Model {
        capacity: 32.0,
        latency: 0.002,
        cpu_knee: f64::INFINITY,
    };

    #[test]
    fn rises_to_the_knee_and_stays_near_it() {
        // A high ceiling, so that only the controller can stop the climb.
        let cfg = AutoConfig {
            max_per_mount: 1000,
            ..AutoConfig::default()
        };
        let (c, trace) = run_from(&[FAST], 200, cfg);
        let limit = c.limits()[0];
        // Full throughput needs at least the capacity in flight ...
        assert!(limit >= 32, "limit {limit} below capacity; trace {trace:?}");
        // ... and the gradient stops it where the time per unit reaches the tolerance (about
        // TOLERANCE x capacity in flight), give or take one step: not queueing without end.
        assert!(
            limit as f64 <= (TOLERANCE + 0.5) * 32.0,
            "limit {limit} far past the knee"
        );
        // Within 10% of the best throughput, which is what "auto" promises.
        assert!(FAST.throughput(limit) >= 0.9 * FAST.throughput(1000));
        // It gets there in reasonable time (≤ 5 s of 250 ms steps) and never falls back below.
        let first = trace.iter().position(|l| l[0] >= 32).unwrap();
        assert!(first <= 8, "took {first} steps");
        assert!(trace[first..].iter().all(|l| l[0] >= 32), "{trace:?}");
    }

    #[test]
    fn one_cheap_interval_does_not_collapse_the_limit() {
        let cfg = AutoConfig {
            max_per_mount: 1000,
            ..AutoConfig::default()
        };
        let mut c = Controller::new(1, cfg);
        for step in 0..200 {
            let mut s = FAST.sample(c.limits()[0]);
            if step == 3 {
                // A batch of directories: a third of the usual time per entry.
                s.busy /= 3;
            }
            c.step(&[s]);
        }
        assert!(c.limits()[0] >= 32, "limits {:?}", c.limits());
    }

    #[test]
    fn flat_curve_keeps_the_limit_low() {
        // A server that serves one operation at a time: more in flight only queues.
        let serial = Model {
            capacity: 1.0,
            latency: 0.001,
            cpu_knee: f64::INFINITY,
        };
        // Started below the knee (as it must be to see the uncongested latency at all).
        let cfg = AutoConfig {
            initial: 1,
            ..AutoConfig::default()
        };
        let (c, _) = run_from(&[serial], 200, cfg);
        assert!(c.limits()[0] <= 4, "limits {:?}", c.limits());
    }

    #[test]
    fn cpu_knee_bounds_the_limit_below_server_capacity() {
        let cpu_bound = Model {
            capacity: 256.0,
            latency: 0.0005,
            cpu_knee: 12.0,
        };
        // Started below the knee, where the uncongested time per unit can be seen (from the
        // default 16, above this model's knee of 12, the baseline is already congested).
        let cfg = AutoConfig {
            initial: 4,
            ..AutoConfig::default()
        };
        let (c, _) = run_from(&[cpu_bound], 200, cfg);
        let l = c.limits()[0];
        assert!((12..=48).contains(&l), "limit {l}");
    }

    #[test]
    fn slow_mount_gets_fewer_permits_than_fast_ones() {
        let slow = Model {
            capacity: 4.0,
            latency: 0.004,
            cpu_knee: f64::INFINITY,
        };
        let (c, _) = run(&[FAST, FAST, slow], 200);
        let l = c.limits();
        assert!(l[0] >= 32 && l[1] >= 32, "fast mounts {l:?}");
        assert!(l[2] >= 4, "slow mount must still be used fully: {l:?}");
        assert!(l[2] * 3 <= l[0], "slow mount not shifted away from: {l:?}");
    }

    #[test]
    fn node_queued_from_its_first_sample_is_shrunk_against_the_clusters_baseline() {
        // Capacity 1 at twice the latency: the initial limit already queues there, so its own
        // first samples show no uncongested time. The fast nodes' baseline does.
        let tiny = Model {
            capacity: 1.0,
            latency: 0.004,
            cpu_knee: f64::INFINITY,
        };
        let (c, trace) = run(&[FAST, FAST, tiny], 200);
        let l = c.limits();
        assert!(l[0] >= 32 && l[1] >= 32, "fast mounts {l:?}");
        assert!(
            l[2] <= 2,
            "the tiny node keeps queueing: {l:?}; trace {trace:?}"
        );
    }

    #[test]
    fn cheap_first_samples_do_not_sink_the_limits() {
        // A copy starts with directories, a third of a file's time per entry: the first
        // samples of every mount are cheap, and must not become the baseline.
        let mut c = Controller::new(2, AutoConfig::default());
        for step in 0..200 {
            let samples: Vec<Sample> = c
                .limits()
                .iter()
                .map(|l| {
                    let mut s = FAST.sample(*l);
                    if step < 3 {
                        s.busy /= 3;
                    }
                    s
                })
                .collect();
            c.step(&samples);
        }
        let l = c.limits();
        assert!(l.iter().all(|l| *l >= 32), "limits {l:?}");
    }

    #[test]
    fn idle_mount_does_not_grow_and_no_sample_changes_nothing() {
        let mut c = Controller::new(
            1,
            AutoConfig {
                initial: 8,
                ..AutoConfig::default()
            },
        );
        let before = c.limits();
        // Work finished but only one task ran (the queue was starved): no growth.
        for _ in 0..50 {
            c.step(&[Sample {
                tasks: 10,
                units: 10,
                busy: Duration::from_millis(20),
                peak_running: 1,
            }]);
        }
        assert_eq!(c.limits(), before);
        c.step(&[Sample::default()]);
        assert_eq!(c.limits(), before);
    }

    #[test]
    fn limit_never_exceeds_max_or_drops_below_one() {
        let cfg = AutoConfig {
            max_per_mount: 8,
            ..AutoConfig::default()
        };
        let mut c = Controller::new(1, cfg);
        for _ in 0..100 {
            c.step(&[FAST.sample(c.limits()[0])]);
        }
        assert_eq!(c.limits(), vec![8]);
        // A sudden slowdown, by 100x: the limit halves at most per step and never reaches 0.
        for _ in 0..100 {
            c.step(&[Sample {
                tasks: 1,
                units: 1,
                busy: Duration::from_secs(10),
                peak_running: 8,
            }]);
        }
        assert_eq!(c.limits(), vec![1]);
    }

    #[test]
    fn auto_copy_is_identical_through_several_mounts() {
        use crate::{CopyJob, FirstN, Options, Progress, RelPath, Scope, VerifyMode};
        use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};

        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        generate(
            Dataset::Small,
            &src,
            &GenOptions {
                scale: 0.01,
                ..GenOptions::default()
            },
        )
        .unwrap();
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        let other = tmp.path().join("mount1");
        std::os::unix::fs::symlink(&dst, &other).unwrap();
        let job = CopyJob {
            source: src.clone(),
            destinations: vec![dst.clone(), other],
            scopes: vec![Scope::Tree(RelPath::root())],
        };
        let opts = Options {
            verify: VerifyMode::Metadata,
            // Short steps and few threads, so the controller acts several times in a short copy.
            concurrency: Concurrency::Auto(AutoConfig {
                max_per_mount: 6,
                initial: 1,
                interval_ms: 5,
            }),
            ..Options::default()
        };
        let sink = FirstN::new(10);
        let summary = crate::run(&job, &opts, &Progress::default(), &sink).unwrap();
        assert_eq!(summary.copy.failed, 0);
        assert!(summary.copy.files_copied >= 900, "{:?}", summary.copy);
        let cmp = CompareOptions {
            owner: false,
            ..CompareOptions::all()
        };
        let diffs = compare(&src, &dst, &cmp);
        assert!(diffs.is_empty(), "{}", diffs[0]);
    }

    #[test]
    fn runs_sharing_limits_never_exceed_them_together_and_both_copy_everything() {
        use crate::{CopyJob, FirstN, Options, Progress, RelPath, Scope, VerifyMode};
        use ingest_testkit::{CompareOptions, Dataset, GenOptions, compare, generate};

        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        for (part, seed) in [("a", 1), ("b", 2)] {
            let opts = GenOptions { scale: 0.005, seed };
            generate(Dataset::Small, &src.join(part), &opts).unwrap();
        }
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        let other = tmp.path().join("mount1");
        std::os::unix::fs::symlink(&dst, &other).unwrap();
        let job = |part: &str| CopyJob {
            source: src.clone(),
            destinations: vec![dst.clone(), other.clone()],
            scopes: vec![Scope::Tree(
                RelPath::from_bytes(part.as_bytes().to_vec()).unwrap(),
            )],
        };
        let (a, b) = (job("a"), job("b"));
        // Two threads over two mounts: one permit each, for both runs (four threads) together.
        let opts = Options {
            threads: 2,
            verify: VerifyMode::Metadata,
            ..Options::default()
        };
        let limits = MountLimits::new(&a.destinations, &opts);
        let progress = Progress::default();
        let other_progress = progress.sharing_meters();
        let (sa, sb) = (FirstN::new(10), FirstN::new(10));
        let (ra, rb) = std::thread::scope(|s| {
            let ra = s.spawn(|| crate::run_sharing(&a, &opts, &progress, &sa, &limits));
            let rb = s.spawn(|| crate::run_sharing(&b, &opts, &other_progress, &sb, &limits));
            (ra.join().unwrap().unwrap(), rb.join().unwrap().unwrap())
        });
        for r in [&ra, &rb] {
            assert!(r.is_success(), "{r:?}");
            assert!(r.copy.files_copied > 0, "{:?}", r.copy);
        }
        for name in [dst.display().to_string(), other.display().to_string()] {
            let s = limits.gate(&name).unwrap().take_sample();
            assert!(s.tasks > 0, "{name}: no task took a permit");
            assert_eq!(s.peak_running, 1, "{name}: more at once than its permits");
        }
        // Each run counted its own entries; the mounts' meters are one.
        assert_eq!(progress.snapshot().files, ra.copy.files_copied);
        assert_eq!(other_progress.snapshot().files, rb.copy.files_copied);
        assert_eq!(progress.mounts(), other_progress.mounts());
        let cmp = CompareOptions {
            owner: false,
            ..CompareOptions::all()
        };
        for part in ["a", "b"] {
            let diffs = compare(&src.join(part), &dst.join(part), &cmp);
            assert!(diffs.is_empty(), "{part}: {}", diffs[0]);
        }
    }

    #[test]
    fn gate_blocks_beyond_its_limit_and_reports_samples() {
        let gate = Gate::new(2);
        let a = gate.acquire();
        let _b = gate.acquire();
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let _c = gate.acquire();
                let t = gate.begin();
                gate.end(t, 5);
            });
            std::thread::sleep(Duration::from_millis(50));
            // The third thread is still waiting for a permit.
            assert!(!h.is_finished());
            drop(a);
            h.join().unwrap();
        });
        let s = gate.take_sample();
        assert_eq!((s.tasks, s.units), (1, 5));
        assert_eq!(s.peak_running, 1);
        assert_eq!(gate.take_sample().units, 0);
        gate.set_limit(0);
        assert_eq!(gate.limit(), 1);
    }
}
