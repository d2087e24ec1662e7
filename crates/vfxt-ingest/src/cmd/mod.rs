//! One module per subcommand.

pub mod claims_client;
pub mod copy;
pub mod crd;
pub mod demo;
pub mod operator;
pub mod report;
pub mod run;
pub mod scan;
pub mod source_mount;
pub mod worker;
