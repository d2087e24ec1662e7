//! One module per subcommand.

pub mod copy;
pub mod demo;
pub mod run;
pub mod scan;
pub mod worker;
