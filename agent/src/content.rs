//! Content checks: assertions on what a site answers to a plain `GET`, on
//! their own cadence beside the HEAD-first rounds (issue 16).
//!
//! A `200` is not a working site: a WordPress site with a broken plugin
//! answers 200 with an empty body or its "critical error" page. Every
//! `every_rounds`-th round a site is fetched with `GET` (at most
//! `max_body_bytes` of the body are read, the connection is then closed)
//! and the body is held against the site's assertions; the first one that
//! fails is recorded with an excerpt of the body around it.

use livehead_common::roles::{SiteError, Sites};
use regex::bytes::Regex;
use serde::Deserialize;

pub use livehead_proto::v1::ContentOutcome;

/// The WordPress failure pages shipped as `not_contains` defaults
/// (`wordpress_defaults = true`): a fatal PHP error, the database down,
/// and an update stuck in maintenance mode.
pub const WORDPRESS_FAILURES: &[&str] = &[
    "There has been a critical error on this website",
    "Error establishing a database connection",
    "Briefly unavailable for scheduled maintenance",
];

/// Longest excerpt recorded, in bytes (the record's documented bound).
pub const MAX_EXCERPT_BYTES: usize = 200;

/// Longest `content_failure`, in bytes: a long configured string or regex is
/// cut (with `…`) so the record stays far below the collector's text limit.
pub const MAX_FAILURE_BYTES: usize = 512;

/// Bytes of context kept before what failed, so the excerpt shows where it sits.
const EXCERPT_LEAD_BYTES: usize = 60;

/// `[content]`: assertions every site's answer must hold, the cadence and
/// the cost bound; `[[content.sites]]` overrides them by site pattern.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConfig {
    /// Run content checks at all. Default true.
    pub enabled: bool,
    /// A site is content-checked every this many rounds (1 = every round;
    /// 0 is taken as 1). Sites are spread over the rounds by a hash of
    /// their name, so a round fetches about 1/N of them. Default 4 (every
    /// 2 hours at the 30-minute default interval).
    pub every_rounds: u32,
    /// Most body bytes read per content check; the rest is not read and the
    /// connection is closed. Assertions decide on what was read. Default
    /// 64 KiB (65536).
    pub max_body_bytes: usize,
    /// Add the WordPress failure pages to `not_contains`. Default true.
    pub wordpress_defaults: bool,
    /// Statuses the answer must have; empty (the default) checks none
    /// (status rules in the alerter judge statuses).
    pub statuses: Vec<u16>,
    /// Strings the body must contain. Default none.
    pub contains: Vec<String>,
    /// Strings the body must not contain. Default none (besides the
    /// WordPress defaults).
    pub not_contains: Vec<String>,
    /// Regexes (`regex` crate syntax) the body must match. Default none.
    pub matches: Vec<String>,
    /// Regexes the body must not match. Default none.
    pub not_matches: Vec<String>,
    /// Fewest body bytes (the white screen: an empty 200). Default 1.
    pub min_body_bytes: usize,
    /// Per-site overrides, the first rule whose `sites` match wins.
    pub sites: Vec<SiteRule>,
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every_rounds: 4,
            max_body_bytes: 64 * 1024,
            wordpress_defaults: true,
            statuses: Vec::new(),
            contains: Vec::new(),
            not_contains: Vec::new(),
            matches: Vec::new(),
            not_matches: Vec::new(),
            min_body_bytes: 1,
            sites: Vec::new(),
        }
    }
}

/// `[[content.sites]]`: a key set here replaces the global one for the
/// matching sites; a key left out keeps the global value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteRule {
    /// Site names or globs (`*.shop.example`), matched case-insensitively. Required.
    pub sites: Vec<String>,
    /// false: no content checks for these sites.
    pub enabled: Option<bool>,
    pub wordpress_defaults: Option<bool>,
    pub statuses: Option<Vec<u16>>,
    pub contains: Option<Vec<String>>,
    pub not_contains: Option<Vec<String>>,
    pub matches: Option<Vec<String>>,
    pub not_matches: Option<Vec<String>>,
    pub min_body_bytes: Option<usize>,
}

/// A `[content]` section that cannot be used; names the rule and pattern.
#[derive(Debug, thiserror::Error)]
pub enum ContentConfigError {
    #[error("content.{rule}: invalid regex {pattern:?}: {source}")]
    Regex {
        /// `global` or `sites[N]`.
        rule: String,
        pattern: String,
        source: regex::Error,
    },
    #[error("content.sites[{index}]: {source}")]
    Sites { index: usize, source: SiteError },
    #[error("content.sites[{index}]: `sites` is required (names or globs)")]
    NoSites { index: usize },
}

/// What a content check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Failed {
        /// The assertion as configured: `not_contains = "…"`.
        failure: String,
        /// At most [`MAX_EXCERPT_BYTES`] of the body around what failed,
        /// control characters replaced by spaces.
        excerpt: String,
    },
}

impl Verdict {
    pub fn outcome(&self) -> ContentOutcome {
        match self {
            Verdict::Ok => ContentOutcome::Ok,
            Verdict::Failed { .. } => ContentOutcome::Failed,
        }
    }
}

/// One site's assertions, compiled.
#[derive(Debug, Clone)]
pub struct Assertions {
    statuses: Vec<u16>,
    contains: Vec<String>,
    not_contains: Vec<String>,
    matches: Vec<Regex>,
    not_matches: Vec<Regex>,
    min_body_bytes: usize,
}

impl Assertions {
    /// Judges an answer of `status` whose body starts with `body` (cut at the
    /// byte limit). Statuses first; a body is judged only on answers that
    /// carry one (not 1xx, 204, 3xx: a redirect is judged by the redirect
    /// rules). `None`: nothing was asserted (a redirect and no `statuses`).
    pub fn judge(&self, status: u16, body: &[u8]) -> Option<Verdict> {
        let has_page = !(status < 200 || status == 204 || (300..400).contains(&status));
        if !self.statuses.is_empty() && !self.statuses.contains(&status) {
            let failure = format!("statuses = {:?} (got {status})", self.statuses);
            return Some(failed(failure, body, 0));
        }
        if has_page {
            Some(self.judge_body(body))
        } else {
            (!self.statuses.is_empty()).then_some(Verdict::Ok)
        }
    }

    fn judge_body(&self, body: &[u8]) -> Verdict {
        if body.len() < self.min_body_bytes {
            let failure = format!(
                "min_body_bytes = {} (got {})",
                self.min_body_bytes,
                body.len()
            );
            return failed(failure, body, 0);
        }
        for needle in &self.not_contains {
            if let Some(at) = find(body, needle.as_bytes()) {
                return failed(format!("not_contains = {needle:?}"), body, at);
            }
        }
        for regex in &self.not_matches {
            if let Some(found) = regex.find(body) {
                let failure = format!("not_matches = {:?}", regex.as_str());
                return failed(failure, body, found.start());
            }
        }
        for needle in &self.contains {
            if find(body, needle.as_bytes()).is_none() {
                return failed(format!("contains = {needle:?}"), body, 0);
            }
        }
        for regex in &self.matches {
            if !regex.is_match(body) {
                return failed(format!("matches = {:?}", regex.as_str()), body, 0);
            }
        }
        Verdict::Ok
    }
}

fn failed(mut failure: String, body: &[u8], at: usize) -> Verdict {
    if failure.len() > MAX_FAILURE_BYTES {
        let mut cut = MAX_FAILURE_BYTES - '…'.len_utf8();
        while !failure.is_char_boundary(cut) {
            cut -= 1;
        }
        failure.truncate(cut);
        failure.push('…');
    }
    Verdict::Failed {
        failure,
        excerpt: excerpt(body, at),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// At most [`MAX_EXCERPT_BYTES`] of `body` starting a little before `at`,
/// as text: invalid UTF-8 and control characters become spaces, and a
/// character cut by the bounds is left out.
pub fn excerpt(body: &[u8], at: usize) -> String {
    let start = at.saturating_sub(EXCERPT_LEAD_BYTES).min(body.len());
    let end = (start + MAX_EXCERPT_BYTES).min(body.len());
    let text = String::from_utf8_lossy(&body[start..end]);
    let mut out = String::with_capacity(MAX_EXCERPT_BYTES);
    for c in text.chars() {
        let c = if c.is_control() || c == char::REPLACEMENT_CHARACTER {
            ' '
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_EXCERPT_BYTES {
            break;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// `[content]`, compiled once at start: every regex and site pattern checked.
#[derive(Debug, Clone)]
pub struct ContentChecks {
    every_rounds: u32,
    max_body_bytes: usize,
    global: Option<Assertions>,
    sites: Vec<(Sites, Option<Assertions>)>,
}

impl ContentChecks {
    /// `None` when content checks are off.
    pub fn new(config: &ContentConfig) -> Result<Option<Self>, ContentConfigError> {
        if !config.enabled {
            return Ok(None);
        }
        let global = compile(config, &SiteRule::default(), "global")?;
        let mut sites = Vec::with_capacity(config.sites.len());
        for (index, rule) in config.sites.iter().enumerate() {
            if rule.sites.is_empty() {
                return Err(ContentConfigError::NoSites { index });
            }
            let patterns = Sites::new(&rule.sites)
                .map_err(|source| ContentConfigError::Sites { index, source })?;
            let name = format!("sites[{index}]");
            let assertions = compile(config, rule, &name)?;
            sites.push((patterns, assertions));
        }
        Ok(Some(Self {
            every_rounds: config.every_rounds.max(1),
            max_body_bytes: config.max_body_bytes,
            global,
            sites,
        }))
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The assertions for `site`, or `None` when its checks are off.
    pub fn for_site(&self, site: &str) -> Option<&Assertions> {
        self.sites
            .iter()
            .find(|(patterns, _)| patterns.matches(site))
            .map_or(self.global.as_ref(), |(_, assertions)| assertions.as_ref())
    }

    /// Whether `site` gets a content check in round `round` (counted from
    /// 0): its turn comes every `every_rounds` rounds, at an offset fixed by
    /// its name, so each round fetches an even share of the sites.
    pub fn due(&self, site: &str, round: u64) -> bool {
        let every = u64::from(self.every_rounds);
        let offset = u64::from(crc32fast::hash(site.as_bytes())) % every;
        round % every == offset
    }
}

/// The assertions of `rule` over the global ones; `None` when disabled.
fn compile(
    global: &ContentConfig,
    rule: &SiteRule,
    name: &str,
) -> Result<Option<Assertions>, ContentConfigError> {
    if !rule.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let pick =
        |own: &Option<Vec<String>>, global: &Vec<String>| own.as_ref().unwrap_or(global).clone();
    let mut not_contains = pick(&rule.not_contains, &global.not_contains);
    if rule.wordpress_defaults.unwrap_or(global.wordpress_defaults) {
        not_contains.extend(WORDPRESS_FAILURES.iter().map(|s| (*s).to_owned()));
    }
    let regexes = |patterns: Vec<String>| -> Result<Vec<Regex>, ContentConfigError> {
        patterns
            .into_iter()
            .map(|pattern| {
                Regex::new(&pattern).map_err(|source| ContentConfigError::Regex {
                    rule: name.to_owned(),
                    pattern,
                    source,
                })
            })
            .collect()
    };
    Ok(Some(Assertions {
        statuses: rule
            .statuses
            .clone()
            .unwrap_or_else(|| global.statuses.clone()),
        contains: pick(&rule.contains, &global.contains),
        not_contains,
        matches: regexes(pick(&rule.matches, &global.matches))?,
        not_matches: regexes(pick(&rule.not_matches, &global.not_matches))?,
        min_body_bytes: rule.min_body_bytes.unwrap_or(global.min_body_bytes),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(toml_text: &str) -> ContentChecks {
        let config: ContentConfig = toml::from_str(toml_text).expect("valid [content]");
        ContentChecks::new(&config)
            .expect("compiles")
            .expect("enabled")
    }

    fn failure(verdict: Option<Verdict>) -> (String, String) {
        match verdict {
            Some(Verdict::Failed { failure, excerpt }) => (failure, excerpt),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_catch_the_white_screen_and_wordpress_failure_pages() {
        let defaults = checks("");
        let site = defaults.for_site("blog.example").expect("checked");
        assert_eq!(site.judge(200, b"<html>fine</html>"), Some(Verdict::Ok));
        let (what, _) = failure(site.judge(200, b""));
        assert_eq!(what, "min_body_bytes = 1 (got 0)");
        let page = b"<html><body><p>There has been a critical error on this website.</p>";
        let (what, excerpt) = failure(site.judge(200, page));
        assert_eq!(
            what,
            "not_contains = \"There has been a critical error on this website\""
        );
        assert!(excerpt.contains("critical error"), "{excerpt}");
        let (what, _) = failure(site.judge(
            503,
            b"Briefly unavailable for scheduled maintenance. Check back in a minute.",
        ));
        assert!(what.contains("Briefly unavailable"), "{what}");
        // Redirects carry no page to judge.
        assert_eq!(site.judge(301, b""), None);
        let strict = checks("statuses = [200, 301]");
        let site = strict.for_site("blog.example").expect("checked");
        assert_eq!(site.judge(301, b""), Some(Verdict::Ok));
    }

    #[test]
    fn the_wordpress_defaults_can_be_turned_off() {
        let checks = checks("wordpress_defaults = false\nmin_body_bytes = 0\n");
        let site = checks.for_site("blog.example").expect("checked");
        assert_eq!(
            site.judge(200, b"Error establishing a database connection"),
            Some(Verdict::Ok)
        );
        assert_eq!(site.judge(200, b""), Some(Verdict::Ok));
        let off: ContentConfig = toml::from_str("enabled = false").expect("valid");
        assert!(ContentChecks::new(&off).expect("compiles").is_none());
    }

    #[test]
    fn a_site_rule_overrides_the_global_assertions_it_sets() {
        let checks = checks(
            r#"
            contains = ["<html"]
            [[sites]]
            sites = ["*.shop.example"]
            contains = ["Add to cart"]
            statuses = [200]
            [[sites]]
            sites = ["legacy.example"]
            enabled = false
            "#,
        );
        let shop = checks.for_site("www.shop.example").expect("checked");
        let (what, _) = failure(shop.judge(200, b"<html>sold out</html>"));
        assert_eq!(what, "contains = \"Add to cart\"");
        let (what, _) = failure(shop.judge(404, b"<html>Add to cart</html>"));
        assert_eq!(what, "statuses = [200] (got 404)");
        // Keys the rule leaves out keep the global value: the WordPress pages.
        let (what, _) =
            failure(shop.judge(200, b"Add to cart Error establishing a database connection"));
        assert!(what.starts_with("not_contains"), "{what}");
        let other = checks.for_site("blog.example").expect("checked");
        assert_eq!(other.judge(200, b"<html>Add to cart"), Some(Verdict::Ok));
        assert!(checks.for_site("legacy.example").is_none());
    }

    #[test]
    fn regexes_are_compiled_at_load_and_a_bad_one_names_its_rule() {
        let checks = checks("not_matches = ['Fatal error: .* in /']\nmatches = ['(?i)</html>']\n");
        let site = checks.for_site("a.example").expect("checked");
        let (what, excerpt) =
            failure(site.judge(200, b"<b>Fatal error: boom in /var/www</b></HTML>"));
        assert_eq!(what, "not_matches = \"Fatal error: .* in /\"");
        assert!(excerpt.starts_with("<b>Fatal"), "{excerpt}");
        let (what, _) = failure(site.judge(200, b"<html>cut"));
        assert_eq!(what, "matches = \"(?i)</html>\"");
        let bad: ContentConfig =
            toml::from_str("[[sites]]\nsites = [\"x.example\"]\nmatches = [\"(unclosed\"]\n")
                .expect("valid toml");
        let err = ContentChecks::new(&bad).expect_err("refused").to_string();
        assert!(
            err.contains("content.sites[0]") && err.contains("(unclosed"),
            "{err}"
        );
    }

    #[test]
    fn excerpts_are_short_printable_text_around_what_failed() {
        let mut body = vec![b'a'; 1000];
        body.extend_from_slice(b"\r\n\tNEEDLE\x00\xff");
        body.extend(std::iter::repeat_n(b'z', 1000));
        let text = excerpt(&body, 1000);
        assert!(text.len() <= MAX_EXCERPT_BYTES);
        assert!(text.contains("NEEDLE"), "{text}");
        assert!(!text.chars().any(char::is_control), "{text}");
        let multibyte = "é".repeat(300);
        assert!(excerpt(multibyte.as_bytes(), 0).len() <= MAX_EXCERPT_BYTES);
        let long = "é".repeat(1000);
        let checks = checks(&format!("contains = [{long:?}]"));
        let site = checks.for_site("a.example").expect("checked");
        let (what, _) = failure(site.judge(200, b"page"));
        assert!(
            what.len() <= MAX_FAILURE_BYTES && what.ends_with('…'),
            "{what}"
        );
    }

    #[test]
    fn a_site_is_checked_every_nth_round_and_rounds_share_the_sites() {
        let checks = checks("every_rounds = 3");
        let sites: Vec<String> = (0..300).map(|i| format!("site{i}.example")).collect();
        for site in &sites {
            let due: Vec<u64> = (0..9).filter(|r| checks.due(site, *r)).collect();
            assert_eq!(due.len(), 3, "{site}: {due:?}");
            assert_eq!(due[1] - due[0], 3);
        }
        for round in 0..3 {
            let share = sites.iter().filter(|s| checks.due(s, round)).count();
            assert!((50..=150).contains(&share), "round {round}: {share} of 300");
        }
    }
}
