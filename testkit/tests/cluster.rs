//! The cluster fixture itself: two shards answer `ON CLUSTER` DDL and a
//! `Distributed` table spreads rows over them.

use livehead_testkit::clickhouse::{ClickHouseCluster, TEST_CLUSTER};

#[test]
fn two_shards_take_on_cluster_ddl_and_distributed_inserts() {
    let cluster = ClickHouseCluster::start(2, 1);
    let first = &cluster.servers()[0];
    first.query(&format!(
        "CREATE TABLE default.t_local ON CLUSTER {TEST_CLUSTER} (k UInt64) \
         ENGINE = MergeTree ORDER BY k"
    ));
    first.query(&format!(
        "CREATE TABLE default.t ON CLUSTER {TEST_CLUSTER} AS default.t_local \
         ENGINE = Distributed({TEST_CLUSTER}, default, t_local, k)"
    ));
    let second = &cluster.servers()[1];
    second.query(
        "INSERT INTO default.t SELECT number FROM system.numbers LIMIT 10 \
         SETTINGS insert_distributed_sync = 1",
    );
    assert_eq!(first.query("SELECT count() FROM default.t").trim(), "10");
    let a: u64 = first
        .query("SELECT count() FROM default.t_local")
        .trim()
        .parse()
        .expect("a count");
    let b: u64 = second
        .query("SELECT count() FROM default.t_local")
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(a + b, 10);
    assert!(a > 0 && b > 0, "rows on both shards: {a} and {b}");
    assert_eq!(
        first
            .query("SELECT substitution FROM system.macros WHERE macro = 'shard'")
            .trim(),
        "1",
        "each server knows its shard"
    );
}
