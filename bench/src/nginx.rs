//! A local nginx (Debian's package) serving N virtual hosts by Host header, with
//! the mix a WordPress fleet shows, and the web root that lists them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use livehead_testkit::free_port;

use crate::proc::Service;

/// What a site answers, by its index: out of 100 sites, 80 answer 200, 8
/// redirect to their own `www.`, 4 redirect to another domain, 4 fail with 500
/// and 4 refuse HEAD with 405 (and answer GET).
pub fn kind(index: usize) -> &'static str {
    match index % 100 {
        0..80 => "ok",
        80..88 => "same",
        88..92 => "cross",
        92..96 => "error",
        _ => "nohead",
    }
}

pub fn site_name(index: usize) -> String {
    format!("site{index:05}.com")
}

pub struct Nginx {
    /// Held so nginx stops when this is dropped.
    _service: Service,
    pub addr: SocketAddr,
}

/// nginx's config: one `map` from Host to the site's kind (a hash lookup, as
/// nginx does for server names), one server answering by kind.
fn config(dir: &Path, port: u16, sites: usize) -> String {
    let mut map = String::new();
    for i in 0..sites {
        let _ = writeln!(map, "    {} {};", site_name(i), kind(i));
    }
    let d = dir.display();
    format!(
        r#"worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}/nginx-tmp;
  proxy_temp_path {d}/nginx-tmp;
  fastcgi_temp_path {d}/nginx-tmp;
  uwsgi_temp_path {d}/nginx-tmp;
  scgi_temp_path {d}/nginx-tmp;
  map_hash_max_size 262144;
  map_hash_bucket_size 128;
  map $host $kind {{
    default unknown;
{map}  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      if ($kind = ok) {{ return 200 "ok\n"; }}
      if ($kind = same) {{ return 301 https://www.$host/; }}
      if ($kind = cross) {{ return 301 https://brand-new-domain.net/$host/; }}
      if ($kind = error) {{ return 500; }}
      if ($kind = nohead) {{ set $probe "$kind-$request_method"; }}
      if ($probe = nohead-HEAD) {{ return 405; }}
      if ($kind = nohead) {{ return 200 "ok\n"; }}
      return 404;
    }}
  }}
}}
"#
    )
}

impl Nginx {
    /// Writes the config for `sites` hosts under `dir` and starts nginx on a free
    /// loopback port.
    pub fn start(dir: &Path, sites: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("nginx-tmp"))?;
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(dir, port, sites))?;
        let mut command = Command::new(nginx_binary());
        command.arg("-c").arg(&conf).arg("-p").arg(dir);
        let mut service = Service::spawn("nginx", &mut command, &dir.join("nginx.log"))
            .context("starting nginx (apt-get install nginx-light)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        service.wait_for_port(addr)?;
        Ok(Self {
            _service: service,
            addr,
        })
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

/// A web root with one directory per site, as on a pod: `<dir>/www/<site>`,
/// plus the directories the old script's IGNORE_REGEX skips.
pub fn web_root(dir: &Path, sites: usize) -> anyhow::Result<PathBuf> {
    let root = dir.join(format!("www-{sites}"));
    for i in 0..sites {
        std::fs::create_dir_all(root.join(site_name(i)))?;
    }
    for skipped in ["backups", "update", "lost+found"] {
        std::fs::create_dir_all(root.join(skipped))?;
    }
    Ok(root)
}
