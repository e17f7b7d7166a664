//! Sample rows grouped into the `/stats` answers' shapes. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::store::Rows;
use crate::store::samples::{
    DiskRow, FilesystemRow, InterfaceRow, NodeRow, PodRow, ServiceRow, SiteDiskRow, SiteProcessRow,
};

/// One node's latest samples.
#[derive(Debug, Default, Serialize)]
pub struct NodeView {
    pub node: String,
    /// The node-wide sample; `null` when only its other kinds are fresh.
    pub sample: Option<NodeRow>,
    pub filesystems: Vec<FilesystemRow>,
    pub disks: Vec<DiskRow>,
    pub interfaces: Vec<InterfaceRow>,
    pub pods: Vec<PodRow>,
}

/// One site's latest samples (from every node that reports it).
#[derive(Debug, Default, Serialize)]
pub struct SiteView {
    pub site: String,
    pub disk: Vec<SiteDiskRow>,
    pub processes: Vec<SiteProcessRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceRow>>,
}

/// Counts for `/stats/system`, over what the caller sees.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Nodes with a fresh sample: admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    pub sites: usize,
    pub services: usize,
    /// Units whose `active_state` is `active`.
    pub services_active: usize,
    /// Units whose `active_state` is `failed`.
    pub services_failed: usize,
}

/// The node-level rows grouped by node, in node order.
pub fn nodes(rows: Rows) -> Vec<NodeView> {
    let mut by_node: BTreeMap<String, NodeView> = BTreeMap::new();
    fn view<'m>(map: &'m mut BTreeMap<String, NodeView>, node: &str) -> &'m mut NodeView {
        map.entry(node.to_owned()).or_insert_with(|| NodeView {
            node: node.to_owned(),
            ..NodeView::default()
        })
    }
    for row in rows.nodes {
        let entry = view(&mut by_node, &row.node);
        // Newest wins should a store answer two.
        if entry.sample.as_ref().is_none_or(|s| s.ts < row.ts) {
            entry.sample = Some(row);
        }
    }
    for row in rows.filesystems {
        view(&mut by_node, &row.node).filesystems.push(row);
    }
    for row in rows.disks {
        view(&mut by_node, &row.node).disks.push(row);
    }
    for row in rows.interfaces {
        view(&mut by_node, &row.node).interfaces.push(row);
    }
    for row in rows.pods {
        view(&mut by_node, &row.node).pods.push(row);
    }
    by_node.into_values().collect()
}

/// The site-level rows grouped by site, in site order, keeping the sites
/// `keep` accepts. Services are listed when `with_services`.
pub fn sites(rows: Rows, with_services: bool, keep: impl Fn(&str) -> bool) -> Vec<SiteView> {
    let mut by_site: BTreeMap<String, SiteView> = BTreeMap::new();
    fn view<'m>(map: &'m mut BTreeMap<String, SiteView>, site: &str) -> &'m mut SiteView {
        map.entry(site.to_owned()).or_insert_with(|| SiteView {
            site: site.to_owned(),
            ..SiteView::default()
        })
    }
    for row in rows.site_disks.into_iter().filter(|r| keep(&r.site)) {
        view(&mut by_site, &row.site).disk.push(row);
    }
    for row in rows.site_processes.into_iter().filter(|r| keep(&r.site)) {
        view(&mut by_site, &row.site).processes.push(row);
    }
    if with_services {
        for row in rows.services.into_iter().filter(|r| keep(&r.site)) {
            view(&mut by_site, &row.site)
                .services
                .get_or_insert_with(Vec::new)
                .push(row);
        }
    }
    by_site
        .into_values()
        .map(|mut v| {
            if with_services {
                v.services.get_or_insert_with(Vec::new);
            }
            v
        })
        .collect()
}

/// Sites and service states counted over the rows `keep` accepts (by site).
pub fn totals(rows: &Rows, keep: impl Fn(&str) -> bool) -> Totals {
    let sites: BTreeSet<&str> = rows
        .site_disks
        .iter()
        .map(|r| r.site.as_str())
        .chain(rows.site_processes.iter().map(|r| r.site.as_str()))
        .chain(
            rows.services
                .iter()
                .filter(|r| !r.site.is_empty())
                .map(|r| r.site.as_str()),
        )
        .filter(|site| keep(site))
        .collect();
    let services: Vec<&ServiceRow> = rows.services.iter().filter(|r| keep(&r.site)).collect();
    Totals {
        nodes: None,
        sites: sites.len(),
        services: services.len(),
        services_active: services
            .iter()
            .filter(|r| r.active_state == "active")
            .count(),
        services_failed: services
            .iter()
            .filter(|r| r.active_state == "failed")
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(site: &str, state: &str) -> ServiceRow {
        ServiceRow {
            node: "n1".into(),
            site: site.into(),
            unit: format!("{site}-{state}"),
            active_state: state.into(),
            ..ServiceRow::default()
        }
    }

    #[test]
    fn rows_group_by_node_and_by_site() {
        let rows = Rows {
            nodes: vec![
                NodeRow {
                    node: "b".into(),
                    ts: 1,
                    ..NodeRow::default()
                },
                NodeRow {
                    node: "b".into(),
                    ts: 2,
                    ..NodeRow::default()
                },
            ],
            filesystems: vec![FilesystemRow {
                node: "a".into(),
                mountpoint: "/".into(),
                ..FilesystemRow::default()
            }],
            site_disks: vec![SiteDiskRow {
                site: "x.example".into(),
                ..SiteDiskRow::default()
            }],
            services: vec![
                service("x.example", "active"),
                service("y.example", "failed"),
            ],
            ..Rows::default()
        };
        let nodes = nodes(rows.clone());
        assert_eq!(
            nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(nodes[0].sample.is_none());
        assert_eq!(nodes[0].filesystems.len(), 1);
        assert_eq!(nodes[1].sample.as_ref().map(|s| s.ts), Some(2));

        let all = sites(rows.clone(), true, |_| true);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].disk.len(), 1);
        assert_eq!(all[1].services.as_ref().map(Vec::len), Some(1));
        let mine = sites(rows.clone(), false, |s| s == "x.example");
        assert_eq!(mine.len(), 1);
        assert!(mine[0].services.is_none());

        assert_eq!(
            totals(&rows, |_| true),
            Totals {
                nodes: None,
                sites: 2,
                services: 2,
                services_active: 1,
                services_failed: 1
            }
        );
        assert_eq!(
            totals(&rows, |s| s == "y.example"),
            Totals {
                nodes: None,
                sites: 1,
                services: 1,
                services_active: 0,
                services_failed: 1
            }
        );
    }
}
