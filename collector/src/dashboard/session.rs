//! Dashboard sessions: a cookie signed with HMAC-SHA256 (`cookie`'s signed
//! jar) holding the role token's name, the session's expiry and a random
//! nonce, never the token; and the CSRF token of a session, an HMAC of the
//! cookie's value under the same key, checked in constant time
//! (`Mac::verify_slice`). Pure apart from reading the key file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// The session cookie's name.
pub const COOKIE: &str = "livehead_session";
/// The header state-changing requests carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Shortest key file accepted (HKDF expands it to the signing key).
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("dashboard.session_key_file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "dashboard.session_key_file {path}: {len} bytes, at least {MIN_KEY_BYTES} needed \
         (head -c 64 /dev/urandom > {path})"
    )]
    Short { path: PathBuf, len: usize },
    #[error("dashboard: no randomness for a session key")]
    Random,
}

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The role token's name.
    pub name: String,
    pub expires_ms: u64,
    /// The cookie's value, which the CSRF token is derived from.
    value: String,
}

/// Why a request has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    Missing,
    Expired,
}

/// Issues and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    key: Key,
    ttl: Duration,
    secure: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(key: Key, ttl: Duration, secure: bool) -> Self {
        Self { key, ttl, secure }
    }

    /// The key of `file` (HKDF of its bytes), or a random one when unset.
    pub fn load_key(file: Option<&Path>) -> Result<Key, KeyError> {
        let Some(path) = file else {
            return Key::try_generate().ok_or(KeyError::Random);
        };
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short {
                path: path.to_owned(),
                len: bytes.len(),
            });
        }
        Ok(Key::derive_from(&bytes))
    }

    /// A new session of the token `name`, and the cookie carrying it.
    pub fn issue(&self, name: &str, now_ms: u64) -> (Session, SignedCookieJar) {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let nonce: [u8; 16] = rand::random();
        let value = format!(
            "{expires_ms}.{}.{}",
            hex::encode(nonce),
            hex::encode(name.as_bytes())
        );
        let cookie = self.cookie(value.clone(), self.ttl);
        let jar = SignedCookieJar::new(self.key.clone()).add(cookie);
        let session = Session {
            name: name.to_owned(),
            expires_ms,
            value,
        };
        (session, jar)
    }

    /// A cookie that clears the session in the browser.
    pub fn clear(&self) -> SignedCookieJar {
        SignedCookieJar::new(self.key.clone()).add(self.cookie(String::new(), Duration::ZERO))
    }

    fn cookie(&self, value: String, max_age: Duration) -> Cookie<'static> {
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        Cookie::build((COOKIE, value))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/")
            .secure(self.secure)
            .max_age(cookie_duration(max_age))
            .build()
    }

    /// The session of the request's cookie, if signed by this key and not
    /// expired at `now_ms`.
    pub fn read(&self, headers: &HeaderMap, now_ms: u64) -> Result<Session, NoSession> {
        let jar = SignedCookieJar::from_headers(headers, self.key.clone());
        let cookie = jar.get(COOKIE).ok_or(NoSession::Missing)?;
        let value = cookie.value().to_owned();
        let (expires_ms, name) = parse(&value).ok_or(NoSession::Missing)?;
        if expires_ms <= now_ms {
            return Err(NoSession::Expired);
        }
        Ok(Session {
            name,
            expires_ms,
            value,
        })
    }

    /// The CSRF token of `session`: hex of HMAC-SHA256("csrf" + its cookie).
    pub fn csrf(&self, session: &Session) -> String {
        hex::encode(self.csrf_mac(session).finalize().into_bytes())
    }

    /// Whether the request's `X-CSRF-Token` is `session`'s, compared in
    /// constant time.
    pub fn csrf_ok(&self, session: &Session, headers: &HeaderMap) -> bool {
        let Some(sent) = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| hex::decode(v.trim()).ok())
        else {
            return false;
        };
        self.csrf_mac(session).verify_slice(&sent).is_ok()
    }

    fn csrf_mac(&self, session: &Session) -> hmac::Hmac<Sha256> {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.key.signing())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"csrf\0");
        mac.update(session.value.as_bytes());
        mac
    }
}

fn cookie_duration(seconds: i64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(seconds)
}

/// `expires.nonce.hex(name)` → (expires, name).
fn parse(value: &str) -> Option<(u64, String)> {
    let mut parts = value.split('.');
    let expires_ms = parts.next()?.parse().ok()?;
    let _nonce = parts.next()?;
    let name = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
    parts.next().is_none().then_some((expires_ms, name))
}

/// Whether a sign-in's `Origin` (when the browser sent one) is the
/// collector's own address, as the `Host` header names it: a page of
/// another origin must not sign a browser in (login CSRF).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::response::IntoResponse;

    fn sessions() -> Sessions {
        Sessions::new(Key::generate(), Duration::from_secs(3600), false)
    }

    /// The request headers a browser sends back after `jar`'s Set-Cookie.
    fn cookie_headers(jar: SignedCookieJar) -> HeaderMap {
        let response = jar.into_response();
        let set = response
            .headers()
            .get(header::SET_COOKIE)
            .expect("set-cookie")
            .to_str()
            .expect("ascii");
        let pair = set.split(';').next().expect("pair");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(pair).expect("value"));
        headers
    }

    #[test]
    fn a_session_reads_back_until_it_expires() {
        let s = sessions();
        let (session, jar) = s.issue("ops.team", 1_000);
        let headers = cookie_headers(jar);
        assert_eq!(s.read(&headers, 2_000), Ok(session.clone()));
        assert_eq!(session.expires_ms, 3_601_000);
        assert_eq!(s.read(&headers, 3_601_000), Err(NoSession::Expired));
        // Another key (another process without session_key_file): no session.
        assert_eq!(sessions().read(&headers, 2_000), Err(NoSession::Missing));
    }

    #[test]
    fn a_tampered_cookie_is_no_session() {
        let s = sessions();
        let (_, jar) = s.issue("user-a", 1_000);
        let headers = cookie_headers(jar);
        let raw = headers[header::COOKIE].to_str().expect("ascii");
        let forged = raw.replace(&hex::encode("user-a"), &hex::encode("admin"));
        let mut forged_headers = HeaderMap::new();
        forged_headers.insert(header::COOKIE, HeaderValue::from_str(&forged).expect("v"));
        assert_eq!(s.read(&forged_headers, 2_000), Err(NoSession::Missing));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_when_asked() {
        for secure in [false, true] {
            let s = Sessions::new(Key::generate(), Duration::from_secs(60), secure);
            let (_, jar) = s.issue("a", 0);
            let response = jar.into_response();
            let set = response.headers()[header::SET_COOKIE]
                .to_str()
                .expect("ascii");
            assert!(set.starts_with("livehead_session="), "{set}");
            assert!(set.contains("HttpOnly"), "{set}");
            assert!(set.contains("SameSite=Strict"), "{set}");
            assert!(set.contains("Path=/"), "{set}");
            assert_eq!(set.contains("Secure"), secure, "{set}");
            assert!(!set.contains("a.team"), "{set}");
        }
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let s = sessions();
        let (one, _) = s.issue("a", 0);
        let (two, _) = s.issue("a", 0);
        let mut headers = HeaderMap::new();
        assert!(!s.csrf_ok(&one, &headers));
        headers.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&s.csrf(&one)).expect("v"),
        );
        assert!(s.csrf_ok(&one, &headers));
        assert!(!s.csrf_ok(&two, &headers));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("zz"));
        assert!(!s.csrf_ok(&one, &headers));
    }

    #[test]
    fn sign_in_origin_must_be_the_host() {
        let headers = |origin: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7080"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_static(o));
            }
            h
        };
        assert!(same_origin(&headers(None)));
        assert!(same_origin(&headers(Some("http://127.0.0.1:7080"))));
        assert!(same_origin(&headers(Some("https://127.0.0.1:7080"))));
        assert!(!same_origin(&headers(Some("http://evil.example"))));
        assert!(!same_origin(&headers(Some("null"))));
    }

    #[test]
    fn short_key_files_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key");
        std::fs::write(&path, b"short").expect("write");
        assert!(matches!(
            Sessions::load_key(Some(&path)),
            Err(KeyError::Short { len: 5, .. })
        ));
        std::fs::write(&path, [7u8; 64]).expect("write");
        let a = Sessions::load_key(Some(&path)).expect("key");
        let b = Sessions::load_key(Some(&path)).expect("key");
        assert_eq!(a.signing(), b.signing());
    }
}
