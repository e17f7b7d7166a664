//! Rules: what the `[[rules]]` of a rules file say ([`spec`]), their
//! checks by line ([`check()`]), the engine that evaluates them as records
//! arrive ([`engine`]) and rule unit tests ([`testing`]).

pub mod check;
pub mod engine;
mod noise;
pub mod spec;
pub mod template;
pub mod testing;
mod window;

pub use check::check;
pub use engine::Engine;
pub use spec::{Group, RuleKind, RuleSpec, StatusMatch};
pub use testing::{TestError, TestReport, run_test_file};
