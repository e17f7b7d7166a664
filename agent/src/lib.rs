pub mod domain;
pub mod probe;
