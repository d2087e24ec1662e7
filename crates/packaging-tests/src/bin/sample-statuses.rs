//! Prints the sample IngestJobs (`packaging_tests::samples`) as JSON lines
//! `{"name", "argo", "kstatus", "object"}`, for checks in other languages (kstatus in Go, check.sh).

fn main() {
    for s in packaging_tests::samples::samples() {
        let line = serde_json::json!({"name": s.name, "argo": s.argo, "kstatus": s.kstatus, "object": s.object});
        println!("{line}");
    }
}
