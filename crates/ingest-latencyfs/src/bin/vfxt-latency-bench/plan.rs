//! Which runs a benchmark makes: pure, so that the list can be checked without mounting.

use std::time::Duration;

use ingest_latencyfs::NodeConfig;
use serde::Serialize;

use crate::Args;

/// How `vfxt-ingest copy` is told its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Threads {
    Fixed(usize),
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Tool {
    Vfxt(Threads),
    /// `vfxt-ingest run`: one worker process per mount, with this many threads (`threadsPerWorker`).
    /// Builds before c01ac34 dealt the shards to the workers up front (the field guide's
    /// manifests, and the operator's worker pods: a static split); since then each worker takes
    /// the next shard when it has room, so the worker on a slow mount takes fewer. Since the
    /// shared permits (issue 13) every worker writes through every mount, several shards at once
    /// (two before 041c11a, since then up to eight).
    VfxtRun(Threads),
    Cp,
    RsyncInplace,
    /// The field guide's `find | parallel cp`, its jobs dealt over every mount by job slot.
    Parallel(usize),
    Fpsync,
}

impl Tool {
    pub fn label(self) -> String {
        match self {
            Tool::Vfxt(Threads::Fixed(n)) => format!("vfxt-ingest --threads {n}"),
            Tool::Vfxt(Threads::Auto) => "vfxt-ingest --threads auto".into(),
            Tool::VfxtRun(Threads::Fixed(n)) => format!("vfxt-ingest run, {n} threads/worker"),
            Tool::VfxtRun(Threads::Auto) => "vfxt-ingest run, auto threads/worker".into(),
            Tool::Cp => "cp -a".into(),
            Tool::RsyncInplace => "rsync -a --inplace".into(),
            Tool::Parallel(j) => format!("find | parallel -j{j} cp"),
            Tool::Fpsync => "fpsync -n 16".into(),
        }
    }

    /// Whether the tool can spread its writes over several mounts; the others write through
    /// the first (as a person running them by hand would).
    pub fn multi_mount(self) -> bool {
        matches!(self, Tool::Vfxt(_) | Tool::VfxtRun(_) | Tool::Parallel(_))
    }

    fn parse_peer(name: &str) -> Option<Tool> {
        Some(match name {
            "cp" => Tool::Cp,
            "rsync-inplace" => Tool::RsyncInplace,
            "parallel16" => Tool::Parallel(16),
            "parallel64" => Tool::Parallel(64),
            "fpsync" => Tool::Fpsync,
            _ => return None,
        })
    }
}

/// One timed run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    /// peers, curve, auto or slow.
    pub part: &'static str,
    pub tool: Tool,
    pub latency_ms: f64,
    /// One per mount.
    pub nodes: Vec<NodeConfig>,
}

impl Scenario {
    pub fn mounts(&self) -> usize {
        self.nodes.len()
    }

    pub fn describe(&self) -> String {
        let caps: Vec<String> = self.nodes.iter().map(|n| n.capacity.to_string()).collect();
        format!(
            "{:<5} {:>4} ms  {} mount(s) (capacity {})  {}",
            self.part,
            self.latency_ms,
            self.mounts(),
            caps.join("/"),
            self.tool.label()
        )
    }
}

fn node(latency_ms: f64, capacity: usize) -> NodeConfig {
    let l = Duration::from_secs_f64(latency_ms / 1000.0);
    NodeConfig {
        meta_latency: l,
        data_latency: l,
        capacity,
        ..NodeConfig::default()
    }
}

pub const PARTS: [&str; 4] = ["peers", "curve", "auto", "slow"];

/// Checks the arguments and lists the runs, in the order they are made.
pub fn scenarios(a: &Args) -> Result<Vec<Scenario>, String> {
    if !(a.scale > 0.0 && a.scale <= 1.0) {
        return Err(format!("--scale: must be in (0, 1], got {}", a.scale));
    }
    if let Some(l) = a
        .latency_ms
        .iter()
        .find(|l| !(l.is_finite() && **l >= 0.0 && **l <= 1000.0))
    {
        return Err(format!("--latency-ms: {l} is not a latency in 0..=1000 ms"));
    }
    if a.capacity == 0 || a.slow_capacity == 0 {
        return Err("--capacity, --slow-capacity: must be at least 1".into());
    }
    if a.threads.contains(&0) || a.max_per_mount == 0 {
        return Err("--threads, --max-per-mount: every count must be at least 1".into());
    }
    if !(1..=20).contains(&a.repeat) {
        return Err(format!("--repeat: {} is not in 1..=20", a.repeat));
    }
    if let Some(m) = a.mounts.iter().find(|m| !(1..=8).contains(*m)) {
        return Err(format!("--mounts: {m} is not in 1..=8"));
    }
    if let Some(p) = a.parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        return Err(format!(
            "--parts: unknown part {p:?}; valid are {}",
            PARTS.join(", ")
        ));
    }
    let mut peers = Vec::new();
    for p in &a.peers {
        peers.push(Tool::parse_peer(p).ok_or_else(|| {
            format!(
                "--peers: unknown peer {p:?}; valid are cp, rsync-inplace, parallel16, parallel64, fpsync"
            )
        })?);
    }
    let part = |p: &str| a.parts.iter().any(|x| x == p);
    let mut out = Vec::new();
    for &lat in &a.latency_ms {
        let even = |m: usize| vec![node(lat, a.capacity); m];
        if part("peers") {
            for &t in &peers {
                for m in [1, 3] {
                    if m > 1 && !t.multi_mount() {
                        continue;
                    }
                    out.push(Scenario {
                        part: "peers",
                        tool: t,
                        latency_ms: lat,
                        nodes: even(m),
                    });
                }
            }
        }
        if part("curve") {
            for &m in &a.mounts {
                for &t in &a.threads {
                    out.push(Scenario {
                        part: "curve",
                        tool: Tool::Vfxt(Threads::Fixed(t)),
                        latency_ms: lat,
                        nodes: even(m),
                    });
                }
            }
        }
        if part("auto") {
            for &m in &a.mounts {
                out.push(Scenario {
                    part: "auto",
                    tool: Tool::Vfxt(Threads::Auto),
                    latency_ms: lat,
                    nodes: even(m),
                });
            }
            // `run` (a worker process per mount, shards on demand) beside one `copy` over the
            // same even mounts: what the job machinery costs when no node is slow.
            if let Some(&m) = a.mounts.iter().max().filter(|&&m| m > 1) {
                for threads in [Threads::Fixed(a.capacity), Threads::Auto] {
                    out.push(Scenario {
                        part: "auto",
                        tool: Tool::VfxtRun(threads),
                        latency_ms: lat,
                        nodes: even(m),
                    });
                }
            }
        }
        if part("slow") {
            // One node with a quarter of the capacity and twice the latency: an even split
            // over-feeds it and starves the others; auto should shift work to the fast two.
            // Even splits of threads (one shared queue) and of the work itself (`run`'s shards
            // dealt to one worker per mount) stand beside auto.
            let mut nodes = even(2);
            nodes.push(node(lat * 2.0, a.slow_capacity));
            let even_split = 3 * a.capacity;
            for tool in [
                Tool::Vfxt(Threads::Fixed(even_split)),
                Tool::Vfxt(Threads::Fixed(4 * even_split)),
                Tool::VfxtRun(Threads::Fixed(a.capacity)),
                Tool::VfxtRun(Threads::Auto),
                Tool::Vfxt(Threads::Auto),
            ] {
                out.push(Scenario {
                    part: "slow",
                    tool,
                    latency_ms: lat,
                    nodes: nodes.clone(),
                });
            }
        }
    }
    // Each run repeated in place, so that its repeats see the same machine.
    Ok(out
        .into_iter()
        .flat_map(|s| std::iter::repeat_n(s, a.repeat))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["vfxt-latency-bench"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn default_plan_covers_every_part_of_the_issue() {
        let s = scenarios(&args(&[])).unwrap();
        let count = |p: &str| s.iter().filter(|x| x.part == p).count();
        // Per latency: 5 peers, two of them (parallel) also into 3 mounts.
        assert_eq!(count("peers"), 2 * 7);
        // 5 thread counts x 3 mount counts.
        assert_eq!(count("curve"), 2 * 15);
        // auto over 1, 2 and 3 mounts, and `run` over 3 (fixed and auto threads).
        assert_eq!(count("auto"), 2 * 5);
        assert_eq!(count("slow"), 2 * 5);
        let slow = s.iter().find(|x| x.part == "slow").unwrap();
        assert_eq!(
            slow.nodes.iter().map(|n| n.capacity).collect::<Vec<_>>(),
            [16, 16, 4]
        );
        assert_eq!(slow.nodes[2].meta_latency, slow.nodes[0].meta_latency * 2);
        // Tools that cannot use several mounts are never run as if they could.
        assert!(s.iter().all(|x| x.mounts() == 1 || x.tool.multi_mount()));
    }

    #[test]
    fn repeat_runs_each_scenario_in_place() {
        let once = scenarios(&args(&["--parts", "auto,slow"])).unwrap();
        let thrice = scenarios(&args(&["--parts", "auto,slow", "--repeat", "3"])).unwrap();
        assert_eq!(thrice.len(), 3 * once.len());
        for (i, s) in once.iter().enumerate() {
            assert!(thrice[3 * i..3 * i + 3].iter().all(|t| t == s));
        }
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        for (extra, flag) in [
            (vec!["--peers", "cp,robocopy"], "--peers"),
            (vec!["--parts", "curve,nope"], "--parts"),
            (vec!["--mounts", "0"], "--mounts"),
            (vec!["--threads", "0,4"], "--threads"),
            (vec!["--latency-ms=-1"], "--latency-ms"),
            (vec!["--scale", "2"], "--scale"),
            (vec!["--capacity", "0"], "--capacity"),
            (vec!["--repeat", "0"], "--repeat"),
        ] {
            let e = scenarios(&args(&extra)).unwrap_err();
            assert!(e.contains(flag), "{extra:?}: {e}");
        }
    }
}
