//! A plan for 10 million files in 1 million directories fits a few ConfigMaps.

use ingest_path::RelPath;
use ingest_plan::format::Plan;
use ingest_plan::planner::{PlanOptions, plan};
use ingest_plan::scan::{DirStats, Scan, SplitMix};

/// root / 100 / 100 / 100 directories (1,010,101 in all), eight files in each leaf; a few large
/// flat directories with sampled names; realistic name lengths.
fn synthetic() -> Scan {
    let mut rng = SplitMix(7);
    let mut dirs = Vec::with_capacity(1_010_101);
    dirs.push(DirStats::new(RelPath::root()));
    for a in 0..100 {
        let pa = RelPath::root().join(format!("project-{a:03}").as_bytes());
        dirs.push(DirStats {
            subdirs: 100,
            ..DirStats::new(pa.clone())
        });
        for b in 0..100 {
            let pb = pa.join(format!("sample-batch-{b:03}").as_bytes());
            dirs.push(DirStats {
                subdirs: 100,
                ..DirStats::new(pb.clone())
            });
            for c in 0..100 {
                let mut d = DirStats::new(pb.join(format!("run-{c:03}").as_bytes()));
                d.files = 8;
                d.bytes = rng.next_u64() % (10 << 20);
                dirs.push(d);
            }
        }
    }
    dirs[0].subdirs = 100;
    // A flat directory of 2 million entries (sampled) inside the first project.
    let flat = &mut dirs[1];
    flat.files = 2_000_000;
    flat.bytes = 2_000_000 * 4096;
    flat.samples = (0..1024)
        .map(|i| format!("image-{:08}.tif", i * 1953).into_bytes())
        .collect();
    let mut scan = Scan {
        dirs,
        links: Vec::new(),
        histogram: vec![0; 65],
        age_histogram: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
        unreadable: 0,
        excluded: 0,
        filter: Default::default(),
    };
    scan.aggregate();
    scan
}

#[test]
fn plan_of_ten_million_files_is_a_few_configmaps() {
    let scan = synthetic();
    assert_eq!(scan.dirs.len(), 1_010_101);
    assert_eq!(scan.root().tree.files, 10_000_000);
    let servers: Vec<String> = (1..=3).map(|i| format!("10.1.1.{i}")).collect();
    let p = plan(
        &scan,
        &PlanOptions {
            shards: 10_000,
            workers: 48,
            servers,
            ..PlanOptions::default()
        },
    )
    .unwrap();
    let json = p.to_json();
    let chunks = p.to_chunks(1_000_000).unwrap();
    eprintln!(
        "shards {} json {} bytes chunks {} imbalance {:?}",
        p.shards.len(),
        json.len(),
        chunks.len(),
        p.prediction
    );
    assert!(
        p.shards.len() >= 10_000 && p.shards.len() <= 20_000,
        "shards {}",
        p.shards.len()
    );
    assert!(chunks.iter().all(|c| c.len() <= 1_000_000));
    assert!(chunks.len() <= 4, "{} chunks", chunks.len());
    assert!(p.prediction.imbalance < 1.05, "{:?}", p.prediction);
    assert_eq!(Plan::from_chunks(&chunks).unwrap(), p);
}

#[test]
fn chunks_split_at_character_boundaries() {
    let mut scan = Scan {
        dirs: vec![DirStats::new(RelPath::root())],
        links: Vec::new(),
        histogram: vec![0; 65],
        age_histogram: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
        unreadable: 0,
        excluded: 0,
        filter: Default::default(),
    };
    for i in 0..50 {
        let mut d = DirStats::new(RelPath::root().join(format!("日本語-{i:02}").as_bytes()));
        d.files = 100;
        scan.dirs.push(d);
    }
    scan.dirs[0].subdirs = 50;
    scan.aggregate();
    let p = plan(
        &scan,
        &PlanOptions {
            shards: 50,
            ..PlanOptions::default()
        },
    )
    .unwrap();
    for max in [4, 7, 100] {
        let chunks = p.to_chunks(max).unwrap();
        assert!(chunks.iter().all(|c| c.len() <= max));
        assert_eq!(Plan::from_chunks(&chunks).unwrap(), p);
    }
    assert!(p.to_chunks(3).is_err());
    let wrong = p
        .to_json()
        .replace("ingest.vfxt.dev/v1alpha1", "ingest.vfxt.dev/v9");
    let e = Plan::from_json(&wrong).unwrap_err().to_string();
    assert!(e.contains("v9") && e.contains("v1alpha1"), "{e}");
}
