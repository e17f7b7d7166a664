use axum::http::HeaderValue;
use sha2::{Digest, Sha256};

use super::*;

const KEY: &str = "api.tokens";

fn sha(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn token(name: &str, role: &str, sites: &[&str]) -> RoleToken {
    RoleToken {
        name: name.into(),
        sha256: sha(name),
        role: role.into(),
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn bearer(secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {secret}")).expect("header");
    headers.insert(header::AUTHORIZATION, value);
    headers
}

#[test]
fn each_role_sees_what_it_is_granted() {
    let tokens = RoleTokens::new(
        KEY,
        &[
            token("root", "admin", &[]),
            token("shop", "user", &["*.shop.example", "Blog.Example"]),
            token("viewer", "readonly", &["shop-?.example"]),
        ],
    )
    .expect("valid tokens");
    assert!(!tokens.is_empty());
    let root = tokens.authenticate(&bearer("root")).expect("admin");
    assert!(root.is_admin() && root.may_write("anything.example"));

    let shop = tokens.authenticate(&bearer("shop")).expect("user");
    assert_eq!((shop.name, shop.role()), ("shop", Role::User));
    assert!(
        shop.may_write("EU.shop.example"),
        "names are case-insensitive"
    );
    assert!(shop.may_read("blog.example"));
    assert!(!shop.may_read("shop.example"), "*. needs a label before");
    assert!(!shop.may_read("eu.shop.example.evil"));

    let viewer = tokens.authenticate(&bearer("viewer")).expect("readonly");
    assert!(viewer.may_read("shop-1.example") && !viewer.may_write("shop-1.example"));
    assert!(!viewer.may_read("shop-12.example"));

    assert_eq!(
        tokens.authenticate(&bearer("nobody")).err(),
        Some(Refusal::Unauthorized)
    );
    assert_eq!(
        tokens.authenticate(&HeaderMap::new()).err(),
        Some(Refusal::Unauthorized)
    );
    let mut twice = bearer("root");
    twice.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
    assert_eq!(
        tokens.authenticate(&twice).err(),
        Some(Refusal::DoubledHeader)
    );
}

#[test]
fn no_token_refuses_everyone() {
    let tokens = RoleTokens::new(KEY, &[]).expect("none is valid");
    assert!(tokens.is_empty());
    assert_eq!(
        tokens.authenticate(&bearer("root")).err(),
        Some(Refusal::Unauthorized)
    );
}

#[test]
fn errors_name_the_key_and_the_token_never_the_hash() {
    let cases = [
        (
            token("ops", "superuser", &[]),
            r#"other.key: token "ops": role "superuser" is not admin, user or readonly"#,
        ),
        (
            token("ops", "readonly", &[]),
            r#"other.key: token "ops": a readonly token needs sites (names or globs)"#,
        ),
        (
            token("ops", "admin", &["a.example"]),
            r#"other.key: token "ops": an admin token sees every site"#,
        ),
        (
            token("ops", "user", &["a.example", " "]),
            r#"other.key: token "ops": site pattern 1 is empty"#,
        ),
        (
            token("ops", "user", &["a/b"]),
            r#"other.key: token "ops": site pattern "a/b": '/' is not allowed"#,
        ),
        (
            token("ops", "user", &["[a-.example"]),
            r#"other.key: token "ops": site pattern "[a-.example" is not a valid glob"#,
        ),
        (
            RoleToken {
                sha256: "not-hex-secret".into(),
                ..token("ops", "admin", &[])
            },
            r#"other.key: token "ops": sha256 must be 64 hex digits"#,
        ),
    ];
    for (bad, want) in cases {
        let message = RoleTokens::new("other.key", &[bad])
            .expect_err(want)
            .to_string();
        assert!(message.starts_with(want), "{message}");
        assert!(!message.contains("not-hex-secret"), "{message}");
    }
    let same = RoleTokens::new(
        KEY,
        &[
            token("a", "admin", &[]),
            RoleToken {
                sha256: sha("a"),
                ..token("b", "admin", &[])
            },
        ],
    )
    .expect_err("same hash");
    assert_eq!(
        same,
        AccessError::Token(TokenError::SameHash {
            list: KEY,
            first: "a".into(),
            second: "b".into()
        })
    );
}

#[test]
fn long_site_patterns_are_refused() {
    let long = "a".repeat(MAX_PATTERN_BYTES + 1);
    let err = Sites::new(&[long]).expect_err("too long");
    assert!(matches!(err, SiteError::TooLong { .. }), "{err}");
    assert!(Sites::new(&["a".repeat(MAX_PATTERN_BYTES)]).is_ok());
}

#[test]
fn role_tokens_read_from_toml() {
    #[derive(Deserialize)]
    struct Api {
        tokens: Vec<RoleToken>,
    }
    let api: Api = toml::from_str(
        r#"tokens = [{ name = "shop", sha256 = "00", role = "user", sites = ["a.example"] }]"#,
    )
    .expect("valid toml");
    assert_eq!(api.tokens[0].sites, ["a.example"]);
    let unknown = toml::from_str::<Api>(
        r#"tokens = [{ name = "x", sha256 = "", role = "admin", site = [] }]"#,
    );
    assert!(unknown.is_err(), "unknown keys are refused");
}
