//! The `livehead` command line. The binary (`src/main.rs`) only parses it and
//! hands over to the component libraries; it lives in a library so tests can
//! check that deployment manifests use flags that exist.

pub mod cli;
