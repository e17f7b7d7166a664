//! Part: api (being written).

use crate::livehead::Env;
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_env: &Env, _args: &Args) -> anyhow::Result<Vec<Table>> {
    Ok(Vec::new())
}
