use axum::http::{HeaderValue, header};
use sha2::{Digest, Sha256};

use super::*;
use crate::config::{PushToken, RoleToken};

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

fn access(tokens: Vec<RoleToken>) -> Access {
    Access::from_config(&ApiConfig {
        tokens,
        ..ApiConfig::default()
    })
    .expect("valid tokens")
}

fn bearer(secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {secret}")).expect("header");
    headers.insert(header::AUTHORIZATION, value);
    headers
}

fn refused(tokens: Vec<RoleToken>) -> String {
    Access::from_config(&ApiConfig {
        tokens,
        ..ApiConfig::default()
    })
    .expect_err("refused")
    .to_string()
}

#[test]
fn each_role_sees_what_it_is_granted() {
    let a = access(vec![
        token("root", "admin", &[]),
        token("shop", "user", &["*.shop.example", "Blog.Example"]),
        token("viewer", "readonly", &["shop-?.example"]),
    ]);
    let root = a.authenticate(&bearer("root")).expect("admin");
    assert!(root.is_admin());
    assert!(root.may_read("anything.example") && root.may_write("anything.example"));

    let shop = a.authenticate(&bearer("shop")).expect("user");
    assert_eq!((shop.name, shop.role()), ("shop", Role::User));
    assert!(shop.may_read("eu.shop.example") && shop.may_write("eu.shop.example"));
    assert!(shop.may_read("blog.example"), "names are case-insensitive");
    assert!(!shop.may_read("shop.example"), "*. needs a label before");
    assert!(!shop.may_read("eu.shop.example.evil"));

    let viewer = a.authenticate(&bearer("viewer")).expect("readonly");
    assert!(viewer.may_read("shop-1.example"));
    assert!(!viewer.may_write("shop-1.example"), "readonly never writes");
    assert!(!viewer.may_read("shop-12.example"));

    assert_eq!(
        a.authenticate(&bearer("nobody")).err(),
        Some(Refusal::Unauthorized)
    );
    assert_eq!(
        a.authenticate(&HeaderMap::new()).err(),
        Some(Refusal::Unauthorized)
    );
    let mut twice = bearer("root");
    twice.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
    assert_eq!(a.authenticate(&twice).err(), Some(Refusal::DoubledHeader));
}

#[test]
fn bad_tokens_stop_the_start_naming_the_token() {
    let cases = [
        (
            vec![token("ops", "superuser", &[])],
            r#"api.tokens: token "ops": role "superuser" is not admin, user or readonly"#,
        ),
        (
            vec![token("ops", "user", &[])],
            r#"api.tokens: token "ops": a user token needs sites (names or globs)"#,
        ),
        (
            vec![token("ops", "readonly", &[])],
            r#"api.tokens: token "ops": a readonly token needs sites (names or globs)"#,
        ),
        (
            vec![token("ops", "admin", &["a.example"])],
            r#"api.tokens: token "ops": an admin token sees every site"#,
        ),
        (
            vec![token("ops", "user", &["a.example", " "])],
            r#"api.tokens: token "ops": site pattern 1 is empty"#,
        ),
        (
            vec![token("ops", "user", &["[a-.example"])],
            r#"api.tokens: token "ops": site pattern "[a-.example" is not a valid glob"#,
        ),
        (
            vec![token("ops", "user", &["a example"])],
            r#"api.tokens: token "ops": site pattern "a example": ' ' is not allowed"#,
        ),
        (
            vec![
                token("ops", "admin", &[]),
                RoleToken {
                    sha256: sha("ops"),
                    ..token("dev", "admin", &[])
                },
            ],
            r#"api.tokens: tokens "ops" and "dev" have the same sha256"#,
        ),
        (
            vec![RoleToken {
                sha256: "not-hex-secret".into(),
                ..token("ops", "admin", &[])
            }],
            r#"api.tokens: token "ops": sha256 must be 64 hex digits"#,
        ),
    ];
    for (tokens, want) in cases {
        let message = refused(tokens);
        assert!(message.starts_with(want), "{message}");
        assert!(!message.contains("not-hex-secret"), "{message}");
    }
}

#[test]
fn the_old_reads_are_open_by_default_and_closed_on_demand() {
    let push = Tokens::from_config(&[PushToken {
        name: "pods".into(),
        sha256: sha("pods"),
    }])
    .expect("push tokens");
    let open = access(vec![token("shop", "user", &["a.example"])]);
    assert!(matches!(
        open.old_reader(&HeaderMap::new(), &push),
        Ok(Reader::Everything)
    ));

    let closed = Access::from_config(&ApiConfig {
        open_reads: false,
        tokens: vec![token("shop", "user", &["a.example"])],
        ..ApiConfig::default()
    })
    .expect("valid");
    let reader = closed.old_reader(&bearer("shop"), &push).expect("a reader");
    assert!(reader.is_restricted());
    assert!(reader.may_read("a.example") && !reader.may_read("b.example"));
    assert_eq!(
        closed.old_reader(&HeaderMap::new(), &push).err(),
        Some(Refusal::Unauthorized)
    );
    assert_eq!(
        closed.old_reader(&bearer("pods"), &push).err(),
        Some(Refusal::Unauthorized),
        "push tokens push"
    );

    // The deprecated switch keeps what it meant: push tokens read everything.
    let legacy = Access::from_config(&ApiConfig {
        read_requires_token: true,
        ..ApiConfig::default()
    })
    .expect("valid");
    assert!(!legacy.open_reads());
    assert!(matches!(
        legacy.old_reader(&bearer("pods"), &push),
        Ok(Reader::Everything)
    ));
    assert_eq!(
        legacy.old_reader(&HeaderMap::new(), &push).err(),
        Some(Refusal::Unauthorized)
    );
}
