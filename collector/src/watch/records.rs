//! Stored rows back to the wire's records: what `WatchService` sends is what
//! the agents (and the alerter) sent, as the collector stored it (sites and
//! alert ids lower case, text as validated). The sending agent is not part of
//! a record: it is the `agent_id` of the message that carries it.

use std::collections::BTreeMap;

use livehead_common::vantage::INSIDE;
use livehead_proto::v1::record::Kind;
use livehead_proto::v1::{
    AlertDelivery, AlertEvent, AlertSeverity, AlertState, CertTrust, ContentOutcome,
    DeliveryOutcome, DiskSample, FilesystemSample, HeartbeatCheck, HeartbeatPing, HeartbeatState,
    HeartbeatStatus, InterfaceSample, NodeSample, PingKind, PodSample, ProbeError, ProbeMethod,
    ProbeResult, Record, ServiceState, SiteDiskSample, SiteProcessSample, StepEnd, WatchdogEvent,
    WatchdogEventKind,
};

use crate::store::samples::{
    AlertDeliveryRow, AlertEventRow, DiskRow, FilesystemRow, HeartbeatCheckRow, HeartbeatPingRow,
    HeartbeatStateRow, InterfaceRow, NodeRow, PodRow, ServiceRow, SiteDiskRow, SiteProcessRow,
    WatchdogEventRow,
};
use crate::store::{ProbeRow, Rows};
use crate::validate::alerts::{outcome_label, severity_label, state_label};
use crate::validate::heartbeats::{ping_kind_label, status_label};
use crate::validate::watchdog::{kind_label, step_end_label};

/// `$row` to `Kind::$variant($msg)`: `ts` becomes `ts_ms`, the listed fields
/// are copied, the row's identity column is left out.
macro_rules! record_of {
    ($fn:ident: $row:ty => $variant:ident($msg:ident) { $($field:ident),* $(,)? }) => {
        #[allow(clippy::clone_on_copy)]
        fn $fn(r: &$row) -> Kind {
            Kind::$variant($msg {
                ts_ms: r.ts,
                $($field: r.$field.clone(),)*
            })
        }
    };
}

record_of!(node: NodeRow => Node(NodeSample) {
    cpu_cores, cpu_busy_pct, cpu_user_pct, cpu_system_pct, cpu_iowait_pct, cpu_steal_pct,
    load1, load5, load15, tasks_running, tasks_total, mem_total_bytes, mem_available_bytes,
    mem_used_pct, swap_total_bytes, swap_free_bytes, psi_cpu_some, psi_cpu_full, psi_io_some,
    psi_io_full, psi_memory_some, psi_memory_full, open_fds, uptime_s,
});
record_of!(filesystem: FilesystemRow => Filesystem(FilesystemSample) {
    mountpoint, device, fstype, size_bytes, used_bytes, free_bytes, used_pct, inodes_total,
    inodes_used, inodes_free, inodes_used_pct,
});
record_of!(disk: DiskRow => Disk(DiskSample) {
    device, read_bytes_per_s, write_bytes_per_s, reads_per_s, writes_per_s,
});
record_of!(interface: InterfaceRow => Interface(InterfaceSample) {
    interface, rx_bytes_per_s, tx_bytes_per_s, rx_packets_per_s, tx_packets_per_s,
    rx_errors_per_s, tx_errors_per_s, rx_drops_per_s, tx_drops_per_s,
});
record_of!(pod: PodRow => Pod(PodSample) {
    pod, cgroup, cpu_pct, cpu_throttled_us, memory_current_bytes, memory_max_bytes,
    memory_working_set_bytes, oom_kills, io_read_bytes_per_s, io_write_bytes_per_s,
    io_reads_per_s, io_writes_per_s, pids_current, pids_max,
});
record_of!(site_disk: SiteDiskRow => SiteDisk(SiteDiskSample) {
    site, disk_bytes, file_count, walk_ms, truncated,
});
record_of!(site_process: SiteProcessRow => SiteProcess(SiteProcessSample) {
    site, user, processes, cpu_pct, rss_bytes,
});
record_of!(service: ServiceRow => Service(ServiceState) {
    unit, site, active_state, sub_state, main_pid, memory_bytes, cpu_time_us, restarts,
});

fn probe(r: &ProbeRow) -> Kind {
    Kind::Probe(ProbeResult {
        site: r.site.clone(),
        status: u32::from(r.status),
        error: probe_error(&r.error) as i32,
        method: probe_method(&r.method) as i32,
        latency_us: r.latency_us,
        connect_us: r.connect_us,
        first_byte_us: r.first_byte_us,
        port: u32::from(r.port),
        location: r.location.clone(),
        cross_domain: r.cross != 0,
        ts_ms: r.ts,
        cert_expiry_ms: r.cert_expiry,
        target: r.target.clone(),
        cert_trust: from_label(&CertTrust::CHECKED, |t| Some(t.as_label()), &r.cert_trust) as i32,
        cert_error: r.cert_error.clone(),
        content: content_outcome(&r.content) as i32,
        content_failure: r.content_failure.clone(),
        content_excerpt: r.content_excerpt.clone(),
        // Empty is inside on the wire, as agents send it.
        vantage: if r.vantage == INSIDE {
            String::new()
        } else {
            r.vantage.clone()
        },
    })
}

fn content_outcome(stored: &str) -> ContentOutcome {
    from_label(
        &[ContentOutcome::Ok, ContentOutcome::Failed],
        |c| Some(c.as_label()),
        stored,
    )
}

fn alert(r: &AlertEventRow) -> Kind {
    Kind::Alert(AlertEvent {
        ts_ms: r.ts,
        alert_id: r.alert_id.clone(),
        rule: r.rule.clone(),
        severity: severity(&r.severity) as i32,
        node: r.node.clone(),
        site: r.site.clone(),
        service: r.service.clone(),
        state: state(&r.state) as i32,
        summary: r.summary.clone(),
        since_ms: r.since_ms,
        actor: r.actor.clone(),
    })
}

fn delivery(r: &AlertDeliveryRow) -> Kind {
    Kind::Delivery(AlertDelivery {
        ts_ms: r.ts,
        notification_id: r.notification_id.clone(),
        receiver: r.receiver.clone(),
        state: state(&r.state) as i32,
        attempt: r.attempt,
        outcome: outcome(&r.outcome) as i32,
        http_status: r.http_status,
        error: r.error.clone(),
    })
}

fn watchdog(r: &WatchdogEventRow) -> Kind {
    use StepEnd as E;
    use WatchdogEventKind as K;
    let kinds = [
        K::CheckFailed,
        K::RecoveryStarted,
        K::RecoveryStep,
        K::Recovered,
        K::RecoveryFailed,
        K::Exhausted,
        K::Rearmed,
    ];
    let ends = [
        E::Exited,
        E::Signaled,
        E::TimedOut,
        E::Cancelled,
        E::SpawnFailed,
    ];
    Kind::Watchdog(WatchdogEvent {
        ts_ms: r.ts,
        app: r.app.clone(),
        kind: from_label(&kinds, kind_label, &r.kind) as i32,
        attempt: r.attempt,
        reason: r.reason.clone(),
        command: r.command.clone(),
        step_end: from_label(&ends, step_end_label, &r.step_end) as i32,
        exit_status: r.exit_status,
        duration_ms: r.duration_ms,
        output: r.output.clone(),
    })
}

record_of!(heartbeat_check: HeartbeatCheckRow => HeartbeatCheck(HeartbeatCheck) {
    check_id, project, slug, name, tags, period_s, cron, tz, grace_s, paused, deleted, source,
    actor,
});

fn heartbeat_ping(r: &HeartbeatPingRow) -> Kind {
    use PingKind as P;
    let kinds = [P::Success, P::Start, P::Fail, P::Log, P::Exit];
    Kind::HeartbeatPing(HeartbeatPing {
        ts_ms: r.ts,
        check_id: r.check_id.clone(),
        kind: from_label(&kinds, ping_kind_label, &r.kind) as i32,
        exit_status: r.exit_status,
        rid: r.rid.clone(),
        method: r.method.clone(),
        remote: r.remote.clone(),
        user_agent: r.user_agent.clone(),
        body: r.body.clone(),
        body_bytes: r.body_bytes,
        duration_ms: r.duration_ms,
    })
}

fn heartbeat_state(r: &HeartbeatStateRow) -> Kind {
    use HeartbeatStatus as S;
    let statuses = [S::New, S::Up, S::Started, S::Grace, S::Down, S::Paused];
    Kind::HeartbeatState(HeartbeatState {
        ts_ms: r.ts,
        check_id: r.check_id.clone(),
        name: r.name.clone(),
        status: from_label(&statuses, status_label, &r.status) as i32,
        previous: from_label(&statuses, status_label, &r.previous) as i32,
        reason: r.reason.clone(),
    })
}

/// The enum whose stored label is `label`; UNSPECIFIED for a label no value
/// has (only rows written by hand can hold one).
fn from_label<E: Copy + Default>(
    values: &[E],
    label: fn(E) -> Option<&'static str>,
    stored: &str,
) -> E {
    values
        .iter()
        .copied()
        .find(|v| label(*v) == Some(stored))
        .unwrap_or_default()
}

fn probe_error(stored: &str) -> ProbeError {
    use ProbeError as E;
    let values = [E::Timeout, E::Refused, E::Reset, E::Dns, E::Tls, E::Other];
    from_label(&values, |e| Some(e.as_label()), stored)
}

fn probe_method(stored: &str) -> ProbeMethod {
    from_label(
        &[ProbeMethod::Head, ProbeMethod::Get],
        |m| Some(m.as_label()),
        stored,
    )
}

fn severity(stored: &str) -> AlertSeverity {
    use AlertSeverity as S;
    from_label(
        &[S::Critical, S::Error, S::Warning, S::Info],
        severity_label,
        stored,
    )
}

fn state(stored: &str) -> AlertState {
    use AlertState as S;
    let values = [S::Pending, S::Firing, S::Acknowledged, S::Resolved];
    from_label(&values, state_label, stored)
}

fn outcome(stored: &str) -> DeliveryOutcome {
    use DeliveryOutcome as O;
    let values = [O::Sent, O::Retry, O::Failed, O::Dropped];
    from_label(&values, outcome_label, stored)
}

/// Calls `each(agent, record)` for every row of `rows`, kind after kind in
/// the batch order of [`Rows`], each kind's rows in order. `agent` is the
/// row's identity column (`node`, or `agent` for probes and alert records).
fn for_each(rows: &Rows, mut each: impl FnMut(&str, Kind)) {
    let Rows {
        nodes,
        filesystems,
        disks,
        interfaces,
        pods,
        site_disks,
        site_processes,
        services,
        alerts,
        deliveries,
        watchdog: watchdog_events,
        heartbeat_checks,
        heartbeat_pings,
        heartbeat_states,
        probes,
    } = rows;
    nodes.iter().for_each(|r| each(&r.node, node(r)));
    filesystems
        .iter()
        .for_each(|r| each(&r.node, filesystem(r)));
    disks.iter().for_each(|r| each(&r.node, disk(r)));
    interfaces.iter().for_each(|r| each(&r.node, interface(r)));
    pods.iter().for_each(|r| each(&r.node, pod(r)));
    site_disks.iter().for_each(|r| each(&r.node, site_disk(r)));
    site_processes
        .iter()
        .for_each(|r| each(&r.node, site_process(r)));
    services.iter().for_each(|r| each(&r.node, service(r)));
    alerts.iter().for_each(|r| each(&r.agent, alert(r)));
    deliveries.iter().for_each(|r| each(&r.agent, delivery(r)));
    watchdog_events
        .iter()
        .for_each(|r| each(&r.node, watchdog(r)));
    heartbeat_checks
        .iter()
        .for_each(|r| each(&r.agent, heartbeat_check(r)));
    heartbeat_pings
        .iter()
        .for_each(|r| each(&r.agent, heartbeat_ping(r)));
    heartbeat_states
        .iter()
        .for_each(|r| each(&r.agent, heartbeat_state(r)));
    probes.iter().for_each(|r| each(&r.agent, probe(r)));
}

/// The records of one batch's rows, in the batch order.
pub fn records(rows: &Rows) -> Vec<Record> {
    let mut out = Vec::with_capacity(rows.len());
    for_each(rows, |_, kind| out.push(Record { kind: Some(kind) }));
    out
}

/// The records of rows of several agents, grouped by agent (each in the
/// batch order of kinds).
pub fn records_by_agent(rows: &Rows) -> BTreeMap<String, Vec<Record>> {
    let mut out: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for_each(rows, |agent, kind| {
        let records = match out.get_mut(agent) {
            Some(records) => records,
            None => out.entry(agent.to_owned()).or_default(),
        };
        records.push(Record { kind: Some(kind) });
    });
    out
}

#[cfg(test)]
mod tests {
    use livehead_proto::v1::PushRequest;

    use super::*;
    use crate::config::Limits;
    use crate::validate::check_batch;

    const NOW: u64 = 1_800_000_000_000;

    /// One record of every kind, every field set to a value the validator
    /// keeps as it is (lower-case sites and ids).
    fn every_kind() -> Vec<Record> {
        let ts_ms = NOW - 1000;
        let kinds = vec![
            Kind::Node(NodeSample {
                ts_ms,
                cpu_cores: 8,
                cpu_busy_pct: 12.5,
                cpu_user_pct: 1.0,
                cpu_system_pct: 2.0,
                cpu_iowait_pct: 3.0,
                cpu_steal_pct: 4.0,
                load1: 0.5,
                load5: 0.25,
                load15: 0.125,
                tasks_running: 3,
                tasks_total: 400,
                mem_total_bytes: 16 << 30,
                mem_available_bytes: 9 << 30,
                mem_used_pct: 43.75,
                swap_total_bytes: 2 << 30,
                swap_free_bytes: 1 << 30,
                psi_cpu_some: Some(1.5),
                psi_cpu_full: None,
                psi_io_some: Some(0.0),
                psi_io_full: Some(2.0),
                psi_memory_some: None,
                psi_memory_full: Some(3.0),
                open_fds: 2048,
                uptime_s: 86_400,
            }),
            Kind::Filesystem(FilesystemSample {
                ts_ms,
                mountpoint: "/var/www".into(),
                device: "/dev/sda1".into(),
                fstype: "ext4".into(),
                size_bytes: 100,
                used_bytes: 40,
                free_bytes: 60,
                used_pct: 40.0,
                inodes_total: 10,
                inodes_used: 2,
                inodes_free: 8,
                inodes_used_pct: 20.0,
            }),
            Kind::Disk(DiskSample {
                ts_ms,
                device: "nvme0n1".into(),
                read_bytes_per_s: 1.5,
                write_bytes_per_s: 2.5,
                reads_per_s: 3.5,
                writes_per_s: 4.5,
            }),
            Kind::Interface(InterfaceSample {
                ts_ms,
                interface: "eth0".into(),
                rx_bytes_per_s: 1.0,
                tx_bytes_per_s: 2.0,
                rx_packets_per_s: 3.0,
                tx_packets_per_s: 4.0,
                rx_errors_per_s: 5.0,
                tx_errors_per_s: 6.0,
                rx_drops_per_s: 7.0,
                tx_drops_per_s: 8.0,
            }),
            Kind::Pod(PodSample {
                ts_ms,
                pod: "web-7d9f".into(),
                cgroup: "kubepods.slice/pod1".into(),
                cpu_pct: 150.0,
                cpu_throttled_us: 1,
                memory_current_bytes: 2,
                memory_max_bytes: 3,
                memory_working_set_bytes: 4,
                oom_kills: 5,
                io_read_bytes_per_s: 6.0,
                io_write_bytes_per_s: 7.0,
                io_reads_per_s: 8.0,
                io_writes_per_s: 9.0,
                pids_current: 10,
                pids_max: 11,
            }),
            Kind::SiteDisk(SiteDiskSample {
                ts_ms,
                site: "a.example".into(),
                disk_bytes: 5 << 20,
                file_count: 1234,
                walk_ms: 56,
                truncated: true,
            }),
            Kind::SiteProcess(SiteProcessSample {
                ts_ms,
                site: "a.example".into(),
                user: "web_a".into(),
                processes: 7,
                cpu_pct: 33.5,
                rss_bytes: 200 << 20,
            }),
            Kind::Service(ServiceState {
                ts_ms,
                unit: "php8.2-fpm.service".into(),
                site: "a.example".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                main_pid: 4321,
                memory_bytes: 80 << 20,
                cpu_time_us: 9_000_000,
                restarts: 2,
            }),
            Kind::Alert(AlertEvent {
                ts_ms,
                alert_id: "0123456789abcdef".into(),
                rule: "site-down".into(),
                severity: AlertSeverity::Warning as i32,
                node: "node-7".into(),
                site: "a.example".into(),
                service: "php8.2-fpm.service".into(),
                state: AlertState::Acknowledged as i32,
                summary: "a.example answers 502".into(),
                since_ms: ts_ms - 5000,
                actor: "ops@example".into(),
            }),
            Kind::Delivery(AlertDelivery {
                ts_ms,
                notification_id: "fedcba9876543210".into(),
                receiver: "pagerduty".into(),
                state: AlertState::Resolved as i32,
                attempt: 2,
                outcome: DeliveryOutcome::Failed as i32,
                http_status: 400,
                error: "bad request".into(),
            }),
            Kind::Watchdog(WatchdogEvent {
                ts_ms,
                app: "shop".into(),
                kind: WatchdogEventKind::RecoveryStep as i32,
                attempt: 2,
                reason: "tcp 127.0.0.1:3000 refused".into(),
                command: "pm2 restart shop".into(),
                step_end: StepEnd::Signaled as i32,
                exit_status: 9,
                duration_ms: 1500,
                output: "stopping\nstarted\n".into(),
            }),
            Kind::HeartbeatCheck(HeartbeatCheck {
                ts_ms,
                check_id: "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".into(),
                project: "ops".into(),
                slug: "nightly-backup".into(),
                name: "Nightly backup".into(),
                tags: "backup prod".into(),
                period_s: 0,
                cron: "30 2 * * *".into(),
                tz: "Europe/Paris".into(),
                grace_s: 3600,
                paused: true,
                deleted: true,
                source: "api".into(),
                actor: "ops-token".into(),
            }),
            Kind::HeartbeatPing(HeartbeatPing {
                ts_ms,
                check_id: "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".into(),
                kind: PingKind::Exit as i32,
                exit_status: 3,
                rid: "0e6a1bb8-52a4-4b39-8d8e-3f4b1f0a9c11".into(),
                method: "POST".into(),
                remote: "10.0.0.7".into(),
                user_agent: "curl/8.5".into(),
                body: "rsync failed\n".into(),
                body_bytes: 13,
                duration_ms: 61_000,
            }),
            Kind::HeartbeatState(HeartbeatState {
                ts_ms,
                check_id: "5bf7e3c1-0f5e-4d3a-9c56-7d1b2e3f4a5b".into(),
                name: "Nightly backup".into(),
                status: HeartbeatStatus::Down as i32,
                previous: HeartbeatStatus::Grace as i32,
                reason: "exit status 3".into(),
            }),
            Kind::Probe(ProbeResult {
                site: "a.example".into(),
                status: 0,
                error: ProbeError::Tls as i32,
                method: ProbeMethod::Get as i32,
                latency_us: 12_345,
                connect_us: 100,
                first_byte_us: 12_000,
                port: 443,
                location: "https://b.example/".into(),
                cross_domain: true,
                ts_ms,
                cert_expiry_ms: NOW + 86_400_000,
                target: "10.0.0.7:443".into(),
                cert_trust: CertTrust::NameMismatch as i32,
                cert_error: "certificate not valid for name \"a.example\"".into(),
                vantage: "outside".into(),
                content: ContentOutcome::Failed as i32,
                content_failure: "does not contain \"There has been a critical error\"".into(),
                content_excerpt: "<p>There has been a critical error on this website.</p>".into(),
            }),
        ];
        kinds
            .into_iter()
            .map(|kind| Record { kind: Some(kind) })
            .collect()
    }

    #[test]
    fn every_kind_round_trips_through_validation_and_its_row() {
        let sent = every_kind();
        let batch = PushRequest {
            trace_context: Default::default(),
            agent_id: "edge-1".into(),
            seq: 1,
            records: sent.clone(),
        };
        let checked = check_batch(&batch, "edge-1", NOW, &Limits::default());
        assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
        assert_eq!(checked.rows.len(), sent.len());
        // Every kind once, and in the batch order of `Rows` (which is the
        // order of `every_kind`).
        assert_eq!(records(&checked.rows), sent);
        let by_agent = records_by_agent(&checked.rows);
        assert_eq!(by_agent.keys().collect::<Vec<_>>(), ["edge-1"]);
        assert_eq!(by_agent["edge-1"], sent);
    }

    #[test]
    fn answered_probes_and_every_enum_value_round_trip() {
        let limits = Limits::default();
        let mut sent = Vec::new();
        for error in [ProbeError::Timeout, ProbeError::Refused, ProbeError::Other] {
            sent.push(Kind::Probe(ProbeResult {
                site: format!("{}.example", error.as_label()),
                error: error as i32,
                method: ProbeMethod::Head as i32,
                port: 80,
                ts_ms: NOW,
                ..ProbeResult::default()
            }));
        }
        sent.push(Kind::Probe(ProbeResult {
            site: "ok.example".into(),
            status: 200,
            method: ProbeMethod::Head as i32,
            port: 80,
            ts_ms: NOW,
            ..ProbeResult::default()
        }));
        // Every certificate verdict, then every content outcome, on https
        // answers (UNSPECIFIED, "not checked", is the probe above).
        for trust in CertTrust::CHECKED {
            let untrusted = trust != CertTrust::Trusted;
            sent.push(Kind::Probe(ProbeResult {
                site: format!("{}.example", trust.as_label().replace('_', "-")),
                status: 200,
                method: ProbeMethod::Get as i32,
                port: 443,
                ts_ms: NOW,
                cert_trust: trust as i32,
                cert_error: if untrusted {
                    "why".into()
                } else {
                    String::new()
                },
                cert_expiry_ms: NOW + 1000,
                ..ProbeResult::default()
            }));
        }
        for content in [ContentOutcome::Ok, ContentOutcome::Failed] {
            let failed = content == ContentOutcome::Failed;
            sent.push(Kind::Probe(ProbeResult {
                site: format!("content-{}.example", content.as_label()),
                status: 200,
                method: ProbeMethod::Get as i32,
                port: 80,
                ts_ms: NOW,
                content: content as i32,
                content_failure: if failed {
                    "at least 512 bytes".into()
                } else {
                    String::new()
                },
                content_excerpt: if failed {
                    "<html></html>".into()
                } else {
                    String::new()
                },
                ..ProbeResult::default()
            }));
        }
        let probes = sent.len();
        for (i, severity) in [
            AlertSeverity::Critical,
            AlertSeverity::Error,
            AlertSeverity::Info,
        ]
        .into_iter()
        .enumerate()
        {
            sent.push(Kind::Alert(AlertEvent {
                ts_ms: NOW,
                alert_id: format!("{i:016x}"),
                rule: "r".into(),
                severity: severity as i32,
                state: [
                    AlertState::Pending,
                    AlertState::Firing,
                    AlertState::Resolved,
                ][i] as i32,
                ..AlertEvent::default()
            }));
        }
        for outcome in [
            DeliveryOutcome::Sent,
            DeliveryOutcome::Retry,
            DeliveryOutcome::Dropped,
        ] {
            sent.push(Kind::Delivery(AlertDelivery {
                ts_ms: NOW,
                notification_id: "n".into(),
                receiver: "r".into(),
                state: AlertState::Firing as i32,
                attempt: 1,
                outcome: outcome as i32,
                ..AlertDelivery::default()
            }));
        }
        let sent: Vec<Record> = sent.into_iter().map(|k| Record { kind: Some(k) }).collect();
        let batch = PushRequest {
            trace_context: Default::default(),
            agent_id: "a".into(),
            seq: 1,
            records: sent.clone(),
        };
        let checked = check_batch(&batch, "a", NOW, &limits);
        assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
        // The batch order puts alerts and deliveries before probes.
        let mut expected = sent[probes..].to_vec();
        expected.extend_from_slice(&sent[..probes]);
        assert_eq!(records(&checked.rows), expected);
    }

    #[test]
    fn rows_of_several_agents_are_grouped() {
        let rows = Rows {
            nodes: vec![
                NodeRow {
                    node: "b".into(),
                    ..NodeRow::default()
                },
                NodeRow {
                    node: "a".into(),
                    ..NodeRow::default()
                },
            ],
            probes: vec![ProbeRow {
                agent: "b".into(),
                site: "x.example".into(),
                ..ProbeRow::default()
            }],
            ..Rows::default()
        };
        let grouped = records_by_agent(&rows);
        let sizes: Vec<(&str, usize)> =
            grouped.iter().map(|(a, r)| (a.as_str(), r.len())).collect();
        assert_eq!(sizes, [("a", 1), ("b", 2)]);
        assert!(matches!(grouped["b"][1].kind, Some(Kind::Probe(_))));
    }
}
