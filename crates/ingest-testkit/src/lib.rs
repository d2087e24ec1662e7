//! The referee for the copy engine: deterministic test trees ([`generator`]) and a tree comparison
//! ([`compare`]) that shares no code with the engine, so the engine's tests and the benchmark
//! judge its output by an independent reading of both trees.

pub mod compare;
pub mod generator;
mod rng;

pub use compare::{Aspect, CompareOptions, Difference, compare, count_by_aspect};
pub use generator::{Dataset, GENERATOR_VERSION, GenError, GenOptions, GenSummary, generate};
pub use rng::Rng;
