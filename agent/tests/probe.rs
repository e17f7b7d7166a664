//! The prober against fake sites on loopback: statuses, redirects, fallback,
//! errors, https and direct URLs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Uri};
use livehead_agent::probe::{ProbeConfig, ProbeError, ProbeMethod, ProbeResult, Prober, Target};
use livehead_testkit::sites::{
    BADHEAD_SITE, CROSS_LOCATION, CROSS_SITE, ERROR_SITE, FakeSites, NOHEAD_SITE, OK_SITE,
    SAME_LOCATION, SAME_SITE, closed_port, silent_listener,
};

fn prober() -> Prober {
    Prober::new(ProbeConfig::default()).expect("prober")
}

fn fast_prober() -> Prober {
    Prober::new(ProbeConfig {
        connect_timeout: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        ..ProbeConfig::default()
    })
    .expect("prober")
}

fn fixed(port: u16) -> Target {
    Target::Fixed {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit u64")
}

fn assert_answered(result: &ProbeResult, status: u32, method: ProbeMethod) {
    assert_eq!(result.status, status, "{result:?}");
    assert_eq!(result.error(), ProbeError::Unspecified, "{result:?}");
    assert_eq!(result.method(), method, "{result:?}");
    assert!(result.connect_us > 0, "{result:?}");
    assert!(result.first_byte_us >= result.connect_us, "{result:?}");
    assert!(result.latency_us >= result.first_byte_us, "{result:?}");
}

#[tokio::test]
async fn ok_site_answers_head_with_200() {
    let sites = FakeSites::start().await;
    let before = now_ms();
    let result = prober().probe(OK_SITE, &fixed(sites.port())).await;
    assert_answered(&result, 200, ProbeMethod::Head);
    assert_eq!(result.site, OK_SITE);
    assert_eq!(result.port, u32::from(sites.port()));
    assert_eq!(result.target, format!("127.0.0.1:{}", sites.port()));
    assert_eq!(result.location, "");
    assert!(!result.cross_domain);
    assert_eq!(result.cert_expiry_ms, 0);
    assert!(
        result.ts_ms >= before && result.ts_ms <= now_ms(),
        "{result:?}"
    );
    let requests = sites.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, Method::HEAD);
}

#[tokio::test]
async fn host_and_forwarded_proto_are_sent_like_the_script() {
    let sites = FakeSites::start().await;
    prober().probe(OK_SITE, &fixed(sites.port())).await;
    let requests = sites.requests();
    let request = requests.first().expect("one request");
    assert_eq!(request.host, OK_SITE);
    assert_eq!(request.path, "/");
    assert_eq!(request.forwarded_proto.as_deref(), Some("https"));
    assert_eq!(request.range, None);
    let agent = request.user_agent.as_deref().unwrap_or_default();
    assert!(agent.starts_with("livehead/"), "{agent}");
    assert!(!request.tls);
}

#[tokio::test]
async fn same_domain_redirect_records_location() {
    let sites = FakeSites::start().await;
    let result = prober().probe(SAME_SITE, &fixed(sites.port())).await;
    assert_answered(&result, 301, ProbeMethod::Head);
    assert_eq!(result.location, SAME_LOCATION);
    assert!(!result.cross_domain);
}

#[tokio::test]
async fn cross_domain_redirect_is_flagged() {
    let sites = FakeSites::start().await;
    let result = prober().probe(CROSS_SITE, &fixed(sites.port())).await;
    assert_answered(&result, 301, ProbeMethod::Head);
    assert_eq!(result.location, CROSS_LOCATION);
    assert!(result.cross_domain);
}

#[tokio::test]
async fn server_error_is_recorded_without_fallback() {
    let sites = FakeSites::start().await;
    let result = prober().probe(ERROR_SITE, &fixed(sites.port())).await;
    assert_answered(&result, 500, ProbeMethod::Head);
    assert_eq!(result.location, "");
    assert_eq!(sites.requests().len(), 1);
}

async fn assert_get_fallback(site: &str) {
    let sites = FakeSites::start().await;
    let result = prober().probe(site, &fixed(sites.port())).await;
    assert_answered(&result, 200, ProbeMethod::Get);
    let requests = sites.requests_for(site);
    let methods: Vec<_> = requests.iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, [Method::HEAD, Method::GET]);
    assert_eq!(requests[0].range, None);
    assert_eq!(requests[1].range.as_deref(), Some("bytes=0-0"));
    assert_eq!(requests[1].forwarded_proto.as_deref(), Some("https"));
}

#[tokio::test]
async fn head_405_falls_back_to_ranged_get() {
    assert_get_fallback(NOHEAD_SITE).await;
}

#[tokio::test]
async fn head_400_falls_back_to_ranged_get() {
    assert_get_fallback(BADHEAD_SITE).await;
}

#[tokio::test]
async fn silent_server_times_out_after_trying_get() {
    let (addr, listener) = silent_listener().await;
    let result = fast_prober().probe(OK_SITE, &fixed(addr.port())).await;
    assert_eq!(result.status, 0);
    assert_eq!(result.error(), ProbeError::Timeout);
    assert_eq!(result.method(), ProbeMethod::Get);
    assert!(result.connect_us > 0, "{result:?}");
    assert_eq!(result.first_byte_us, 0);
    assert!(result.latency_us >= 300_000, "{result:?}");
    assert!(result.latency_us < 3_000_000, "{result:?}");
    assert_eq!(
        listener.request_lines(),
        ["HEAD / HTTP/1.1", "GET / HTTP/1.1"]
    );
}

#[tokio::test]
async fn closed_port_is_refused() {
    let port = closed_port();
    let result = prober().probe(OK_SITE, &fixed(port)).await;
    assert_eq!(result.status, 0);
    assert_eq!(result.error(), ProbeError::Refused);
    assert_eq!(result.method(), ProbeMethod::Get);
    assert_eq!(result.port, u32::from(port));
    assert_eq!(result.connect_us, 0);
    assert!(result.latency_us < 3_000_000, "{result:?}");
}

#[tokio::test]
async fn https_with_self_signed_certificate_records_expiry() {
    let sites = FakeSites::start_tls().await;
    let target = Target::Fixed {
        host: "127.0.0.1".into(),
        port: sites.port(),
        tls: true,
    };
    let result = prober().probe(OK_SITE, &target).await;
    assert_answered(&result, 200, ProbeMethod::Head);
    let expiry = sites.cert_not_after_ms().expect("TLS server");
    assert_eq!(
        result.cert_expiry_ms,
        u64::try_from(expiry).expect("future expiry")
    );
    assert!(result.cert_expiry_ms > now_ms());
    assert_eq!(result.target, format!("https://127.0.0.1:{}", sites.port()));
    let requests = sites.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].tls);
    assert_eq!(requests[0].host, OK_SITE);
}

#[tokio::test]
async fn https_handshake_against_plain_http_is_a_tls_error() {
    let sites = FakeSites::start().await;
    let target = Target::Fixed {
        host: "127.0.0.1".into(),
        port: sites.port(),
        tls: true,
    };
    let result = prober().probe(OK_SITE, &target).await;
    assert_eq!(result.status, 0);
    assert_eq!(result.error(), ProbeError::Tls);
    assert_eq!(result.cert_expiry_ms, 0);
}

#[tokio::test]
async fn url_target_sends_its_authority_as_host() {
    let sites = FakeSites::start().await;
    let url = format!("http://127.0.0.1:{}/health?x=1", sites.port());
    let target = Target::Url(url.parse::<Uri>().expect("URL"));
    let result = prober().probe("127.0.0.1", &target).await;
    assert_answered(&result, 200, ProbeMethod::Head);
    assert_eq!(result.target, url);
    assert_eq!(result.port, u32::from(sites.port()));
    let requests = sites.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].host, format!("127.0.0.1:{}", sites.port()));
    assert_eq!(requests[0].path, "/health?x=1");
    assert_eq!(requests[0].forwarded_proto, None);
}

#[tokio::test]
async fn https_url_target_records_expiry() {
    let sites = FakeSites::start_tls().await;
    let url = format!("https://localhost:{}/", sites.port());
    let target = Target::Url(url.parse::<Uri>().expect("URL"));
    let result = prober().probe("localhost", &target).await;
    assert_answered(&result, 200, ProbeMethod::Head);
    let expiry = sites.cert_not_after_ms().expect("TLS server");
    assert_eq!(
        result.cert_expiry_ms,
        u64::try_from(expiry).expect("future expiry")
    );
}

#[tokio::test]
async fn unresolvable_name_is_a_dns_error() {
    let target = Target::Url(Uri::from_static("http://no-such-host.invalid/"));
    let result = prober().probe("no-such-host.invalid", &target).await;
    assert_eq!(result.status, 0);
    assert_eq!(result.error(), ProbeError::Dns);
    assert_eq!(result.port, 80);
    assert_eq!(result.target, "http://no-such-host.invalid/");
    assert_eq!(result.connect_us, 0);
}

#[tokio::test]
async fn fixed_target_may_be_a_host_name() {
    let sites = FakeSites::start().await;
    let target = Target::Fixed {
        host: "localhost".into(),
        port: sites.port(),
        tls: false,
    };
    let result = prober().probe(OK_SITE, &target).await;
    // localhost may resolve to ::1 first, where nothing listens; the next address answers.
    assert_answered(&result, 200, ProbeMethod::Head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_probes_run_concurrently() {
    let sites = FakeSites::start().await;
    let prober = prober();
    let target = fixed(sites.port());
    let probes = (0..200).map(|i| {
        let (prober, target) = (prober.clone(), target.clone());
        tokio::spawn(async move { prober.probe(&format!("site{i}.test"), &target).await })
    });
    let results = futures::future::join_all(probes).await;
    assert_eq!(results.len(), 200);
    for (i, result) in results.into_iter().enumerate() {
        let result = result.expect("probe task");
        assert_eq!(result.site, format!("site{i}.test"));
        assert_answered(&result, 200, ProbeMethod::Head);
    }
    assert_eq!(sites.requests().len(), 200);
}
