//! `vfxt-ingest crd`: prints the IngestJob CustomResourceDefinition generated from the Rust types, the same
//! text as `crds/ingest.vfxt.dev_ingestjobs.yaml` (a test in `ingest-api` keeps that file fresh).

use std::io::Write;

use crate::Outcome;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Outcome {
    let mut out = std::io::stdout().lock();
    match out
        .write_all(ingest_api::crd_yaml().as_bytes())
        .and_then(|_| out.flush())
    {
        Ok(()) => Outcome::Success,
        Err(e) => {
            eprintln!("error: writing the CRD to stdout: {e}");
            Outcome::PartialFailure
        }
    }
}
