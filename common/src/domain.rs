//! Whether a redirect leaves the site it was served for.
//!
//! Two hosts belong to the same site when they share a registrable domain
//! (public suffix plus one label, from the Public Suffix List): `example.com`
//! and `www.example.com` do, `a.co.uk` and `b.co.uk` do not.

use std::net::IpAddr;

/// True when `location` (a `Location` header value) points to a host whose
/// registrable domain differs from `site`'s. Relative locations stay on the site.
pub fn is_cross_domain(site: &str, location: &str) -> bool {
    let Some(to) = location_host(location) else {
        return false;
    };
    let from = normalize(strip_port(site));
    let to = normalize(to);
    if to.is_empty() {
        // "https:///x" names no host; a browser would stay where it is.
        return false;
    }
    registrable(&from) != registrable(&to)
}

/// The host of an absolute (`scheme://host/...`) or scheme-relative
/// (`//host/...`) location, port removed; `None` for relative ones.
fn location_host(location: &str) -> Option<&str> {
    let location = location.trim();
    let rest = match location.strip_prefix("//") {
        Some(rest) => rest,
        None => {
            let (scheme, rest) = location.split_once("://")?;
            if !is_scheme(scheme) {
                // "/path?next=http://x" is a relative location that mentions a URL.
                return None;
            }
            rest
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    Some(strip_port(host_port))
}

/// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `host:port` → `host`; `[v6]:port` → `v6`.
fn strip_port(host_port: &str) -> &str {
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match host_port.rsplit_once(':') {
        // A second colon means a bare IPv6 address, which has no port.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => host_port,
    }
}

/// DNS names are case-insensitive and "example.com." is "example.com".
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The registrable domain, or the host itself for IP addresses and names
/// the list has no domain for (`localhost`).
fn registrable(host: &str) -> &str {
    if host.parse::<IpAddr>().is_ok() {
        // The PSL would treat "10.0.0.1" as the domain "0.1" under the "1" suffix.
        return host;
    }
    psl::domain_str(host).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::is_cross_domain;

    #[test]
    fn subdomain_of_the_site_is_same_domain() {
        assert!(!is_cross_domain("example.com", "https://www.example.com/"));
        assert!(!is_cross_domain("www.example.com", "https://example.com/x"));
    }

    #[test]
    fn other_registrable_domain_is_cross_domain() {
        assert!(is_cross_domain("example.com", "https://other.net/"));
        assert!(is_cross_domain("example.com", "http://example.net"));
    }

    #[test]
    fn public_suffix_list_separates_co_uk_domains() {
        assert!(is_cross_domain("a.co.uk", "https://b.co.uk/"));
        assert!(!is_cross_domain("www.a.co.uk", "https://a.co.uk/"));
    }

    #[test]
    fn relative_locations_stay_on_the_site() {
        assert!(!is_cross_domain("example.com", "/login"));
        assert!(!is_cross_domain("example.com", "login?next=/"));
        assert!(!is_cross_domain("example.com", "/go?to=https://other.net/"));
        assert!(!is_cross_domain("example.com", ""));
    }

    #[test]
    fn scheme_relative_location_is_absolute() {
        assert!(is_cross_domain("example.com", "//other.net/path"));
        assert!(!is_cross_domain("example.com", "//cdn.example.com/path"));
    }

    #[test]
    fn scheme_port_and_case_are_ignored() {
        assert!(!is_cross_domain("example.com", "https://example.com/"));
        assert!(!is_cross_domain(
            "example.com:8080",
            "HTTPS://WWW.Example.COM:8443/"
        ));
        assert!(!is_cross_domain(
            "example.com",
            "https://user@example.com./"
        ));
    }

    #[test]
    fn hosts_without_registrable_domain_compare_exactly() {
        assert!(!is_cross_domain("localhost", "http://localhost:8080/"));
        assert!(is_cross_domain("localhost", "http://127.0.0.1/"));
        assert!(!is_cross_domain("10.0.0.1", "http://10.0.0.1/"));
        assert!(is_cross_domain("10.0.0.1", "http://10.0.0.2/"));
        assert!(!is_cross_domain("[::1]:80", "http://[::1]:8080/"));
        assert!(!is_cross_domain("::1", "http://[::1]/"));
    }
}
