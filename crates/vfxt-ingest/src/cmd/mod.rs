//! One module per subcommand.

pub mod copy;
pub mod run;
pub mod scan;
pub mod worker;
