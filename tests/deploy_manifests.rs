//! Keeps `deploy/` from rotting: every `livehead` command line in the
//! Kubernetes manifests and systemd units must parse with the real CLI, every
//! `LIVEHEAD_*` variable must be one the CLI reads, and every TOML config (in a
//! ConfigMap or next to the units) must load into the real config structs,
//! whose `deny_unknown_fields` turns a renamed or misspelt key into a failure.
//!
//! Beyond parsing, the effective configuration of each deployed process is
//! built the way the binary builds it (flags over the config file) and checked
//! against the manifest around it: TLS files come from a Secret, the web root
//! from a read-only hostPath, probes and Services point at ports the process
//! listens on, and the agent's collector URL names the collector's Service.
//!
//! Each check returns its problems instead of panicking, so the negative tests
//! at the bottom can feed it broken manifests and see it object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use livehead::cli::{Cli, Command};
use livehead_agent::AgentConfig;
use livehead_alerter::RulesFile;
use livehead_alerter::config::AlerterConfig;
use livehead_collector::CollectorConfig;
use serde::Deserialize;
use serde_norway::Value;

/// Values given to `$(VAR)` references whose value Kubernetes fills in at run
/// time (downward API), keyed by field path.
const FIELD_PLACEHOLDERS: &[(&str, &str)] = &[
    ("status.hostIP", "10.0.0.1"),
    ("status.podIP", "10.0.0.2"),
    ("spec.nodeName", "node-1"),
    ("metadata.name", "pod-1"),
    ("spec.serviceAccountName", "default"),
];

fn deploy_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(sub)
}

/// Files under `dir` (recursively) whose name ends with one of `exts`, sorted.
fn files_with_ext(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if exts
                .iter()
                .any(|ext| path.extension().is_some_and(|e| e == *ext))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------
// What the CLI declares
// ---------------------------------------------------------------------------

/// An argument that can be set from the environment.
#[derive(Debug, Clone)]
struct EnvArg {
    long: String,
    takes_value: bool,
}

/// The environment variables each subcommand reads (its own and the global ones).
fn declared_env() -> BTreeMap<String, BTreeMap<String, EnvArg>> {
    fn collect(cmd: &clap::Command, into: &mut BTreeMap<String, EnvArg>) {
        for arg in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                let arg = EnvArg {
                    long: long.to_owned(),
                    takes_value: arg.get_action().takes_values(),
                };
                into.insert(env.to_string_lossy().into_owned(), arg);
            }
        }
    }
    let root = Cli::command();
    let mut global = BTreeMap::new();
    collect(&root, &mut global);
    root.get_subcommands()
        .map(|sub| {
            let mut vars = global.clone();
            collect(sub, &mut vars);
            (sub.get_name().to_owned(), vars)
        })
        .collect()
}

/// Checks one `LIVEHEAD_*` variable set on a `livehead <sub>` process; `value`
/// is `None` when only known at run time (from a Secret, say).
fn check_env_var(
    sub: &str,
    name: &str,
    value: Option<&str>,
    declared: &BTreeMap<String, BTreeMap<String, EnvArg>>,
) -> Option<String> {
    if !name.starts_with("LIVEHEAD_") {
        return None;
    }
    let Some(arg) = declared.get(sub).and_then(|vars| vars.get(name)) else {
        let known: Vec<&str> = declared
            .get(sub)
            .into_iter()
            .flat_map(|v| v.keys().map(String::as_str))
            .collect();
        return Some(format!(
            "environment variable {name} is not read by `livehead {sub}` (it reads: {})",
            known.join(", ")
        ));
    };
    let value = value?;
    if !arg.takes_value {
        return (!matches!(value, "true" | "false")).then(|| {
            format!(
                "environment variable {name}={value:?}: the flag --{} wants true or false",
                arg.long
            )
        });
    }
    let argv = ["livehead", sub, &format!("--{}", arg.long), value];
    Cli::try_parse_from(argv).err().map(|e| {
        format!(
            "environment variable {name}={value:?} is not a valid --{}: {}",
            arg.long,
            first_line(&e.to_string())
        )
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Parses an argv (`argv[0]` is the program); the error names the offending flag.
fn parse_argv(argv: &[String]) -> Result<Cli, String> {
    Cli::try_parse_from(argv).map_err(|e| {
        format!(
            "`{}` does not parse: {}",
            argv.join(" "),
            first_line(&e.to_string())
        )
    })
}

/// The subcommand of a parsed command line.
fn subcommand(cli: &Cli) -> &'static str {
    match cli.command {
        Command::Agent(_) => "agent",
        Command::Collector(_) => "collector",
        Command::Alerter(_) => "alerter",
        Command::Certs(_) => "certs",
        Command::Up(_) => "up",
        Command::Run(_) => "run",
    }
}

/// A service's effective configuration, built like the binary does (the file,
/// then flags and environment over it), with the file's text given here.
enum Effective {
    Agent(Box<AgentConfig>),
    Collector(Box<CollectorConfig>),
    Other,
}

/// Builds the effective config of `cli`, reading its `--config` file from
/// `config_text` (the ConfigMap key or deploy/systemd file it stands for).
/// `config` is the file's name and text.
///
/// A `*.toml` file that does not load on its own has been reported by
/// [`check_toml`] already; its service is then skipped (`Effective::Other`).
fn effective(cli: Cli, config: Option<(&str, &str)>) -> Result<Effective, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let path = dir.path().join("config.toml");
    let file = match config {
        Some((name, text)) if name.ends_with(".toml") && check_toml(name, text).is_err() => {
            return Ok(Effective::Other);
        }
        Some((_, text)) => {
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            Some(path.clone())
        }
        None => None,
    };
    let name = config.map_or("", |(name, _)| name);
    // The outermost message names the offending flag or key (`{e:#}` would
    // repeat the TOML error, which the config error already includes).
    let err = |e: anyhow::Error| e.to_string().replace(&path.display().to_string(), name);
    match cli.command {
        Command::Agent(mut args) => {
            args.config = file;
            args.into_config()
                .map(|c| Effective::Agent(Box::new(c)))
                .map_err(err)
        }
        Command::Collector(mut args) => {
            args.config = file;
            args.into_config()
                .map(|c| Effective::Collector(Box::new(c)))
                .map_err(err)
        }
        // The alerter's flags and keys are checked by loading them; the
        // checks against the manifest around it are the agent's and the
        // collector's only.
        Command::Alerter(mut args) => {
            args.config = file;
            args.into_config().map(|_| Effective::Other).map_err(err)
        }
        Command::Certs(_) | Command::Up(_) | Command::Run(_) => Ok(Effective::Other),
    }
}

/// Deserializes a config file's text into the struct its file name says
/// (`agent*.toml`, `collector*.toml`).
fn check_toml(file_name: &str, text: &str) -> Result<(), String> {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    let result = if base.starts_with("agent") {
        toml::from_str::<AgentConfig>(text).map(drop)
    } else if base.starts_with("collector") {
        toml::from_str::<CollectorConfig>(text).map(drop)
    } else if base.starts_with("alerter") {
        toml::from_str::<AlerterConfig>(text).map(drop)
    } else if base.starts_with("rules") {
        // The rules file's own checks (`livehead alerter check`).
        return RulesFile::parse(text)
            .map(drop)
            .map_err(|e| format!("{file_name} does not pass the checks: {e}"));
    } else {
        return Err(format!(
            "{file_name}: not an agent*.toml, collector*.toml, alerter*.toml nor rules*.toml file, cannot tell which it is"
        ));
    };
    result.map_err(|e| {
        format!(
            "{file_name} does not load: {}",
            e.to_string().trim_end().replace('\n', "\n      ")
        )
    })
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

/// One YAML document and the file it came from.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        str_at(&self.value, &["kind"]).unwrap_or("")
    }
    fn name(&self) -> &str {
        str_at(&self.value, &["metadata", "name"]).unwrap_or("")
    }
    fn namespace(&self) -> &str {
        str_at(&self.value, &["metadata", "namespace"]).unwrap_or("default")
    }
    fn label(&self) -> String {
        format!("{}: {} {}", self.file, self.kind(), self.name())
    }
    /// The pod spec of a workload, or of a Pod.
    fn pod_spec(&self) -> Option<&Value> {
        let path: &[&str] = match self.kind() {
            "Pod" => &["spec"],
            "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => {
                &["spec", "template", "spec"]
            }
            "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
            _ => return None,
        };
        at(&self.value, path)
    }
    fn pod_labels(&self) -> BTreeMap<String, String> {
        let path: &[&str] = match self.kind() {
            "Pod" => &["metadata", "labels"],
            _ => &["spec", "template", "metadata", "labels"],
        };
        string_map(at(&self.value, path))
    }
    fn pod_annotations(&self) -> BTreeMap<String, String> {
        let path: &[&str] = match self.kind() {
            "Pod" => &["metadata", "annotations"],
            _ => &["spec", "template", "metadata", "annotations"],
        };
        string_map(at(&self.value, path))
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn seq_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)?)))
        .collect()
}

/// A scalar as text (YAML numbers and booleans included).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: &[Value]) -> Vec<String> {
    v.iter().map(|s| scalar(s).unwrap_or_default()).collect()
}

fn parse_yaml(file: &str, text: &str) -> Result<Vec<Doc>, String> {
    let mut docs = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value =
            Value::deserialize(document).map_err(|e| format!("{file}: invalid YAML: {e}"))?;
        if !value.is_null() {
            docs.push(Doc {
                file: file.to_owned(),
                value,
            });
        }
    }
    Ok(docs)
}

fn load_manifests() -> Vec<Doc> {
    let dir = deploy_dir("kubernetes");
    let files = files_with_ext(&dir, &["yaml", "yml"]);
    assert!(!files.is_empty(), "no YAML under {}", dir.display());
    files
        .iter()
        .flat_map(|f| parse_yaml(&rel(f), &read(f)).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Expands Kubernetes `$(VAR)` references (`$$` escapes a `$`); an undefined
/// reference would be left as is by Kubernetes, which is never meant here.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            let value = vars.get(name).ok_or_else(|| {
                format!("$({name}) in {s:?} names no environment variable of the container")
            })?;
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Where a path inside a container comes from.
#[derive(Debug)]
enum Source {
    /// A ConfigMap's key.
    ConfigMap {
        name: String,
        key: String,
    },
    Secret,
    HostPath {
        path: String,
    },
    Other,
}

/// Resolves `path` through the container's volume mounts (the deepest mount
/// holding it wins). Returns the source and whether the mount is read-only.
fn resolve_path(pod: &Value, container: &Value, path: &str) -> Option<(Source, bool)> {
    let mut best: Option<(&Value, usize, String)> = None;
    for mount in seq_at(container, &["volumeMounts"]) {
        let Some(mount_path) = str_at(mount, &["mountPath"]) else {
            continue;
        };
        let mount_path = mount_path.trim_end_matches('/');
        let sub_path = str_at(mount, &["subPath"]);
        let within = match sub_path {
            Some(sub) if path == mount_path => Some(sub.to_owned()),
            Some(_) => None,
            // The mount point itself, or a path below it.
            None => path
                .strip_prefix(mount_path)
                .and_then(|r| {
                    if r.is_empty() {
                        Some(r)
                    } else {
                        r.strip_prefix('/')
                    }
                })
                .map(str::to_owned),
        };
        if let Some(within) = within
            && best
                .as_ref()
                .is_none_or(|(_, len, _)| mount_path.len() > *len)
        {
            best = Some((mount, mount_path.len(), within));
        }
    }
    let (mount, _, within) = best?;
    let read_only = at(mount, &["readOnly"])
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let volume_name = str_at(mount, &["name"])?;
    let volume = seq_at(pod, &["volumes"])
        .iter()
        .find(|v| str_at(v, &["name"]) == Some(volume_name))?;
    let source = if let Some(cm) = volume.get("configMap") {
        // With `items`, file paths map to keys.
        let key = seq_at(cm, &["items"])
            .iter()
            .find(|item| str_at(item, &["path"]) == Some(within.as_str()))
            .and_then(|item| str_at(item, &["key"]))
            .map_or(within, str::to_owned);
        Source::ConfigMap {
            name: str_at(cm, &["name"]).unwrap_or_default().to_owned(),
            key,
        }
    } else if volume.get("secret").is_some() {
        Source::Secret
    } else if let Some(host) = volume.get("hostPath") {
        Source::HostPath {
            path: str_at(host, &["path"]).unwrap_or_default().to_owned(),
        }
    } else {
        Source::Other
    };
    // ConfigMap and Secret volumes are always read-only.
    let read_only = read_only || matches!(source, Source::ConfigMap { .. } | Source::Secret);
    Some((source, read_only))
}

/// ConfigMap keys of all manifests: (namespace, name) -> key -> text.
type ConfigMaps = BTreeMap<(String, String), BTreeMap<String, String>>;

fn config_maps(docs: &[Doc]) -> ConfigMaps {
    docs.iter()
        .filter(|d| d.kind() == "ConfigMap")
        .map(|d| {
            (
                (d.namespace().to_owned(), d.name().to_owned()),
                string_map(d.value.get("data")),
            )
        })
        .collect()
}

/// What every container is checked against.
struct Manifests {
    declared: BTreeMap<String, BTreeMap<String, EnvArg>>,
    config_maps: ConfigMaps,
    /// (namespace, name) -> ports.
    services: BTreeMap<(String, String), Vec<u16>>,
}

impl Manifests {
    fn new(docs: &[Doc]) -> Self {
        let services = docs
            .iter()
            .filter(|d| d.kind() == "Service")
            .map(|d| {
                let ports = seq_at(&d.value, &["spec", "ports"])
                    .iter()
                    .filter_map(|p| u16::try_from(at(p, &["port"])?.as_u64()?).ok())
                    .collect();
                ((d.namespace().to_owned(), d.name().to_owned()), ports)
            })
            .collect();
        Self {
            declared: declared_env(),
            config_maps: config_maps(docs),
            services,
        }
    }
}

/// Every problem of every document, and the subcommands of the livehead
/// containers that passed.
fn check_manifests(docs: &[Doc]) -> (Vec<String>, BTreeSet<String>) {
    let ctx = Manifests::new(docs);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for doc in docs {
        if doc.kind().is_empty() || str_at(&doc.value, &["apiVersion"]).is_none() {
            problems.push(format!(
                "{}: a document without kind or apiVersion",
                doc.file
            ));
        }
        if doc.kind() == "ConfigMap" {
            for (key, text) in string_map(doc.value.get("data")) {
                if key.ends_with(".toml")
                    && let Err(e) = check_toml(&key, &text)
                {
                    problems.push(format!("{}: {e}", doc.label()));
                }
            }
        }
        if doc.kind() == "Service" {
            problems.extend(check_service(doc, docs));
        }
        let Some(pod) = doc.pod_spec() else { continue };
        let containers = seq_at(pod, &["containers"])
            .iter()
            .chain(seq_at(pod, &["initContainers"]));
        for container in containers {
            let label = format!(
                "{} container {}",
                doc.label(),
                str_at(container, &["name"]).unwrap_or("?")
            );
            match check_container(doc, pod, container, &ctx) {
                Ok(Some(sub)) => {
                    seen.insert(sub);
                }
                Ok(None) => {}
                Err(errs) => problems.extend(errs.into_iter().map(|e| format!("{label}: {e}"))),
            }
        }
    }
    (problems, seen)
}

/// The argv of a container if it runs `livehead`: its command (or the image's
/// entrypoint, when the command is left out of a livehead image) and args.
fn container_argv(container: &Value) -> Option<Vec<String>> {
    let command = strings(seq_at(container, &["command"]));
    let args = strings(seq_at(container, &["args"]));
    let image = str_at(container, &["image"]).unwrap_or("");
    let program = match command.first() {
        Some(program) => program.rsplit('/').next().unwrap_or(program),
        None if image
            .rsplit('/')
            .next()
            .is_some_and(|i| i.starts_with("livehead")) =>
        {
            "livehead"
        }
        None => return None,
    };
    (program == "livehead").then(|| {
        std::iter::once("livehead".to_owned())
            .chain(command.into_iter().skip(1))
            .chain(args)
            .collect()
    })
}

/// Problems of one container, or the subcommand it runs when it has none
/// (`None`: not a livehead container).
fn check_container(
    doc: &Doc,
    pod: &Value,
    container: &Value,
    ctx: &Manifests,
) -> Result<Option<String>, Vec<String>> {
    let Some(raw_argv) = container_argv(container) else {
        return Ok(None);
    };
    let mut problems = Vec::new();

    // The container's environment: literal values expanded, downward-API
    // fields replaced by placeholders, Secret and ConfigMap references unknown.
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut livehead_env: Vec<(String, Option<String>)> = Vec::new();
    for var in seq_at(container, &["env"]) {
        let Some(name) = str_at(var, &["name"]) else {
            problems.push("an env entry without a name".to_owned());
            continue;
        };
        let value = if let Some(v) = var.get("value") {
            match expand(&scalar(v).unwrap_or_default(), &vars) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(format!("env {name}: {e}"));
                    None
                }
            }
        } else if let Some(field) = str_at(var, &["valueFrom", "fieldRef", "fieldPath"]) {
            match FIELD_PLACEHOLDERS.iter().find(|(f, _)| *f == field) {
                Some((_, placeholder)) => Some((*placeholder).to_owned()),
                None if field == "metadata.namespace" => Some(doc.namespace().to_owned()),
                None => {
                    problems.push(format!(
                        "env {name}: fieldRef {field} has no placeholder in this test; add one"
                    ));
                    None
                }
            }
        } else {
            None
        };
        vars.insert(
            name.to_owned(),
            value.clone().unwrap_or_else(|| "from-a-secret".to_owned()),
        );
        livehead_env.push((name.to_owned(), value));
    }
    if !seq_at(container, &["envFrom"]).is_empty() {
        problems.push(
            "envFrom hides which LIVEHEAD_* variables are set; list them under env".to_owned(),
        );
    }

    let mut argv = Vec::with_capacity(raw_argv.len());
    for arg in &raw_argv {
        match expand(arg, &vars) {
            Ok(a) => argv.push(a),
            Err(e) => problems.push(e),
        }
    }
    let cli = match parse_argv(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            problems.push(e);
            return Err(problems);
        }
    };
    let sub = subcommand(&cli);
    for (name, value) in &livehead_env {
        problems.extend(check_env_var(sub, name, value.as_deref(), &ctx.declared));
    }

    // The config file must be a key of a ConfigMap in these manifests.
    let config_path = match &cli.command {
        Command::Agent(a) => a.config.clone(),
        Command::Collector(c) => c.config.clone(),
        Command::Alerter(a) => a.config.clone(),
        Command::Certs(_) | Command::Up(_) | Command::Run(_) => None,
    };
    let mut config_text: Option<(String, String)> = None;
    if let Some(path) = config_path {
        let path = path.display().to_string();
        match resolve_path(pod, container, &path) {
            Some((Source::ConfigMap { name, key }, _)) => match ctx.config_maps.get(&(doc.namespace().to_owned(), name.clone())).and_then(|m| m.get(&key)) {
                Some(text) => config_text = Some((key.clone(), text.clone())),
                None => problems.push(format!("--config {path} is key {key:?} of ConfigMap {name}, which deploy/kubernetes/ does not define in namespace {}", doc.namespace())),
            },
            Some((other, _)) => problems.push(format!("--config {path} comes from {other:?}, not from a ConfigMap of these manifests")),
            None => problems.push(format!("--config {path} is on no volume mount of the container")),
        }
    }
    let config_text = config_text
        .as_ref()
        .map(|(name, text)| (name.as_str(), text.as_str()));
    let config = match effective(cli, config_text) {
        Ok(config) => config,
        Err(e) => {
            problems.push(format!(
                "the effective `livehead {sub}` configuration is refused: {e}"
            ));
            return Err(problems);
        }
    };
    let has_env = |name: &str| livehead_env.iter().any(|(n, _)| n == name);
    problems.extend(check_effective(doc, pod, container, &config, has_env, ctx));

    // Only a service whose effective configuration was checked counts as seen.
    let checked = !matches!(config, Effective::Other);
    if problems.is_empty() {
        Ok(checked.then(|| sub.to_owned()))
    } else {
        Err(problems)
    }
}

/// The deployed process's effective configuration against its pod.
fn check_effective(
    doc: &Doc,
    pod: &Value,
    container: &Value,
    config: &Effective,
    has_env: impl Fn(&str) -> bool,
    ctx: &Manifests,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (tls, insecure, listens): (_, _, Vec<u16>) = match config {
        Effective::Agent(c) => (
            c.collector.tls.as_ref(),
            c.collector.insecure,
            c.metrics_listen.iter().map(|a| a.port()).collect(),
        ),
        Effective::Collector(c) => (
            c.tls.as_ref(),
            c.insecure,
            vec![c.grpc_listen.port(), c.http_listen.port()],
        ),
        Effective::Other => return problems,
    };
    if insecure {
        problems.push("runs with insecure (plain-text) gRPC".to_owned());
    }
    match tls {
        None if !insecure => {
            problems.push("has no TLS files (tls.ca/cert/key or --tls-*)".to_owned())
        }
        None => {}
        Some(files) => {
            for (what, path) in [
                ("CA", &files.ca),
                ("certificate", &files.cert),
                ("key", &files.key),
            ] {
                let path = path.display().to_string();
                match resolve_path(pod, container, &path) {
                    Some((Source::Secret, _)) => {}
                    Some((other, _)) => problems.push(format!(
                        "TLS {what} {path} comes from {other:?}, not from a Secret"
                    )),
                    None => problems.push(format!(
                        "TLS {what} {path} is on no volume mount of the container"
                    )),
                }
            }
        }
    }

    match config {
        Effective::Agent(c) => {
            match &c.sites.web_root {
                Some(root) => match resolve_path(pod, container, &root.display().to_string()) {
                    Some((Source::HostPath { .. }, true)) => {}
                    Some((Source::HostPath { path }, false)) => problems.push(format!(
                        "the web root (hostPath {path}) is mounted writable; mount it readOnly"
                    )),
                    Some((other, _)) => problems.push(format!(
                        "the web root {} comes from {other:?}, not from the node (hostPath)",
                        root.display()
                    )),
                    None => problems.push(format!(
                        "the web root {} is on no volume mount of the container",
                        root.display()
                    )),
                },
                None if c.sites.list_file.is_none() => {
                    problems.push("has no site source (sites.web_root / --web-root)".to_owned())
                }
                None => {}
            }
            if let Some(dir) = &c.spool.dir {
                let dir = dir.display();
                match resolve_path(pod, container, &dir.to_string()) {
                    Some((Source::ConfigMap { .. } | Source::Secret, _)) | Some((_, true)) => {
                        problems.push(format!("the spool directory {dir} is on a read-only volume"))
                    }
                    Some(_) => {}
                    None => problems.push(format!(
                        "the spool directory {dir} is on no volume mount of the container (its root file system is read-only)"
                    )),
                }
            }
            if c.target.is_none() {
                problems.push("has no probe target (--target $(NODE_IP):8080): sites would be probed through public DNS, not on this node".to_owned());
            }
            problems.extend(check_collector_url(doc, &c.collector.url, &ctx.services));
        }
        Effective::Collector(c) => {
            if c.storage.clickhouse_url.is_none() && !has_env("LIVEHEAD_CLICKHOUSE_URL") {
                problems.push("has no ClickHouse URL (storage.clickhouse_url, --clickhouse-url or LIVEHEAD_CLICKHOUSE_URL)".to_owned());
            }
        }
        Effective::Other => {}
    }

    // Ports: declared ones are listened on; probes and scrapes hit one of them.
    let ports: Vec<(Option<String>, u16)> = seq_at(container, &["ports"])
        .iter()
        .filter_map(|p| {
            Some((
                str_at(p, &["name"]).map(str::to_owned),
                u16::try_from(at(p, &["containerPort"])?.as_u64()?).ok()?,
            ))
        })
        .collect();
    for (name, port) in &ports {
        if !listens.contains(port) {
            problems.push(format!(
                "declares containerPort {port} ({}) but the process listens on {listens:?}",
                name.as_deref().unwrap_or("unnamed")
            ));
        }
    }
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let Some(port) = at(container, &[probe, "httpGet", "port"]) else {
            if container.get(probe).is_some() {
                problems.push(format!(
                    "{probe} is not an httpGet probe of /health or /metrics"
                ));
            }
            continue;
        };
        let number = match port {
            Value::String(name) => ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .map(|(_, p)| *p),
            other => other.as_u64().and_then(|p| u16::try_from(p).ok()),
        };
        match number {
            Some(p) if listens.contains(&p) => {}
            _ => problems.push(format!(
                "{probe} port {} is not a port the process listens on ({listens:?})",
                scalar(port).unwrap_or_default()
            )),
        }
        let path = str_at(container, &[probe, "httpGet", "path"]).unwrap_or("/");
        if let Some(want) = probe_path(config, probe)
            && path != want
        {
            problems.push(format!("{probe} path {path} is not {want}"));
        } else if !matches!(path, "/health" | "/ready" | "/metrics") {
            problems.push(format!(
                "{probe} path {path} is none of /health, /ready, /metrics"
            ));
        }
    }
    if let Some(port) = doc.pod_annotations().get("prometheus.io/port")
        && !port.parse().is_ok_and(|p: u16| listens.contains(&p))
    {
        problems.push(format!("annotation prometheus.io/port {port} is not a port the process listens on ({listens:?})"));
    }
    problems
}

/// The path a probe of this process must hit, where one is prescribed: the
/// collector's readiness is `/ready` (the store answers), its liveness and
/// start-up `/health` (restarting does not fix a stalled store).
fn probe_path(config: &Effective, probe: &str) -> Option<&'static str> {
    match (config, probe) {
        (Effective::Collector(_), "readinessProbe") => Some("/ready"),
        (Effective::Collector(_), "livenessProbe" | "startupProbe") => Some("/health"),
        _ => None,
    }
}

/// An in-cluster collector URL (`https://<service>.<namespace>.svc[...]:<port>`)
/// must name a Service of these manifests and one of its ports.
fn check_collector_url(
    doc: &Doc,
    url: &str,
    services: &BTreeMap<(String, String), Vec<u16>>,
) -> Option<String> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .trim_end_matches('/');
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Some(format!("collector URL {url} has no port"));
    };
    let labels: Vec<&str> = host.split('.').collect();
    let (name, namespace) = match labels.as_slice() {
        [name] => (*name, doc.namespace()),
        [name, ns, "svc", ..] => (*name, *ns),
        _ => return None, // outside the cluster
    };
    match services.get(&(namespace.to_owned(), name.to_owned())) {
        None => Some(format!(
            "collector URL {url} names Service {name} in namespace {namespace}, which deploy/kubernetes/ does not define"
        )),
        Some(ports) if !port.parse().is_ok_and(|p: u16| ports.contains(&p)) => Some(format!(
            "collector URL {url}: Service {namespace}/{name} has no port {port} (it has {ports:?})"
        )),
        Some(_) => None,
    }
}

/// A Service selects at least one workload of the manifests, and each target
/// port is a named or numbered port of the selected pods' containers.
fn check_service(service: &Doc, docs: &[Doc]) -> Vec<String> {
    let label = service.label();
    let selector = string_map(at(&service.value, &["spec", "selector"]));
    if selector.is_empty() {
        return vec![format!("{label}: has no selector")];
    }
    let selected: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.pod_spec().is_some() && d.namespace() == service.namespace())
        .filter(|d| {
            let labels = d.pod_labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    if selected.is_empty() {
        return vec![format!(
            "{label}: selector {selector:?} matches no workload in deploy/kubernetes/"
        )];
    }
    let mut problems = Vec::new();
    for port in seq_at(&service.value, &["spec", "ports"]) {
        let target = port.get("targetPort").or_else(|| port.get("port"));
        let Some(target) = target else { continue };
        let found = selected.iter().all(|d| {
            let pod = d.pod_spec().expect("filtered on pod_spec");
            seq_at(pod, &["containers"])
                .iter()
                .flat_map(|c| seq_at(c, &["ports"]))
                .any(|p| match target {
                    Value::String(name) => str_at(p, &["name"]) == Some(name.as_str()),
                    other => at(p, &["containerPort"]).and_then(Value::as_u64) == other.as_u64(),
                })
        });
        if !found {
            problems.push(format!(
                "{label}: targetPort {} is not a container port of every selected pod",
                scalar(target).unwrap_or_default()
            ));
        }
    }
    problems
}

#[test]
fn kubernetes_manifests_use_real_flags_variables_and_config_keys() {
    let docs = load_manifests();
    let (problems, subs) = check_manifests(&docs);
    assert_no_problems("deploy/kubernetes", &problems);
    for want in ["agent", "collector"] {
        assert!(
            subs.contains(want),
            "deploy/kubernetes/ runs no `livehead {want}` container (found: {subs:?})"
        );
    }
    let tomls: Vec<String> = config_maps(&docs)
        .values()
        .flat_map(|m| m.keys().filter(|k| k.ends_with(".toml")).cloned())
        .collect();
    assert!(
        tomls.iter().any(|k| k.starts_with("agent"))
            && tomls.iter().any(|k| k.starts_with("collector")),
        "expected agent and collector TOML in ConfigMaps, found {tomls:?}"
    );
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

/// A unit file: section -> key -> values in order (continuation lines joined).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';') || line.is_empty())
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        if let Some(name) = full.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            name.clone_into(&mut section);
        } else if let Some((key, value)) = full.split_once('=') {
            unit.entry(section.clone())
                .or_default()
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    unit
}

/// Expands `${VAR}` and `$VAR` in an ExecStart= word; systemd would expand an
/// unknown variable to nothing, which is never meant here.
fn expand_systemd(word: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {word:?}"))?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(vars.get(name).ok_or_else(|| {
                format!("${name} in {word:?} is set by neither Environment= nor systemd")
            })?);
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Every problem of one unit; returns the subcommand it runs when it parses.
fn check_unit(
    file: &str,
    unit_name: &str,
    text: &str,
    systemd_dir: &Path,
) -> (Vec<String>, Option<String>) {
    let declared = declared_env();
    let unit = parse_unit(text);
    let mut problems = Vec::new();
    let service = unit.get("Service").cloned().unwrap_or_default();
    let values = |key: &str| service.get(key).cloned().unwrap_or_default();

    let exec = values("ExecStart");
    let [exec] = exec.as_slice() else {
        problems.push(format!(
            "{file}: wants exactly one ExecStart=, has {}",
            exec.len()
        ));
        return (problems, None);
    };
    for key in ["Restart"] {
        if values(key).last().map(String::as_str) != Some("always") {
            problems.push(format!("{file}: {key}= should be always"));
        }
    }

    // Variables systemd sets, and those of Environment= lines.
    let credentials = format!("/run/credentials/{unit_name}");
    let mut vars = BTreeMap::from([("CREDENTIALS_DIRECTORY".to_owned(), credentials.clone())]);
    let mut environment = Vec::new();
    for line in values("Environment") {
        for assignment in line.split_whitespace() {
            let assignment = assignment.trim_matches('"');
            match assignment.split_once('=') {
                Some((k, v)) => {
                    vars.insert(k.to_owned(), v.to_owned());
                    environment.push((k.to_owned(), v.to_owned()));
                }
                None => problems.push(format!(
                    "{file}: Environment= entry {assignment:?} is not NAME=VALUE"
                )),
            }
        }
    }

    let exec = exec.trim_start_matches(['-', '@', ':', '+', '!']);
    let mut argv = Vec::new();
    for word in exec.split_whitespace() {
        match expand_systemd(word, &vars) {
            Ok(w) => argv.push(w),
            Err(e) => problems.push(format!("{file}: ExecStart=: {e}")),
        }
    }
    let Some(program) = argv.first_mut() else {
        problems.push(format!("{file}: ExecStart= is empty"));
        return (problems, None);
    };
    if Path::new(program.as_str())
        .file_name()
        .is_none_or(|n| n != "livehead")
    {
        problems.push(format!("{file}: ExecStart= runs {program}, not livehead"));
        return (problems, None);
    }
    "livehead".clone_into(program);

    // Every credential the command line reads is loaded.
    let loaded: BTreeSet<String> = values("LoadCredential")
        .iter()
        .filter_map(|l| l.split_once(':').map(|(id, _)| id.to_owned()))
        .collect();
    for word in &argv {
        if let Some(id) = word.strip_prefix(&format!("{credentials}/"))
            && !loaded.contains(id)
        {
            problems.push(format!("{file}: ExecStart= reads credential {id} but no LoadCredential={id}:... provides it"));
        }
    }

    let cli = match parse_argv(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            problems.push(format!("{file}: ExecStart= {e}"));
            return (problems, None);
        }
    };
    let sub = subcommand(&cli).to_owned();
    for (name, value) in &environment {
        problems.extend(
            check_env_var(&sub, name, Some(value), &declared)
                .map(|e| format!("{file}: Environment=: {e}")),
        );
    }

    // The config file is one of deploy/systemd/, installed to /etc/livehead/.
    let config = match &cli.command {
        Command::Agent(a) => a.config.clone(),
        Command::Collector(c) => c.config.clone(),
        Command::Alerter(a) => a.config.clone(),
        Command::Certs(_) | Command::Up(_) | Command::Run(_) => None,
    };
    let mut config_text = None;
    if let Some(path) = config {
        let shipped = path.file_name().map(|n| systemd_dir.join(n));
        match shipped.filter(|p| p.is_file()) {
            Some(p) if path.starts_with("/etc/livehead") => {
                config_text = Some((rel(&p), read(&p)));
            }
            _ => problems.push(format!(
                "{file}: --config {} is not /etc/livehead/<a file of deploy/systemd/>",
                path.display()
            )),
        }
    }
    let config_text = config_text
        .as_ref()
        .map(|(name, text)| (name.as_str(), text.as_str()));
    let mut checked = true;
    match effective(cli, config_text) {
        Err(e) => problems.push(format!(
            "{file}: the effective `livehead {sub}` configuration is refused: {e}"
        )),
        Ok(Effective::Agent(c)) => {
            if c.collector.tls.is_none() || c.collector.insecure {
                problems.push(format!("{file}: the agent has no mTLS files"));
            }
            if let Some(root) = &c.sites.web_root {
                let read_only: Vec<String> = values("ReadOnlyPaths")
                    .iter()
                    .flat_map(|l| {
                        l.split_whitespace()
                            .map(|p| p.trim_start_matches(['-', '+']).to_owned())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if !read_only.iter().any(|p| root.starts_with(p)) {
                    problems.push(format!(
                        "{file}: the web root {} is not under ReadOnlyPaths= {read_only:?}",
                        root.display()
                    ));
                }
            }
            if let Some(dir) = &c.spool.dir {
                // ProtectSystem=strict leaves only these writable.
                let writable: Vec<PathBuf> = values("StateDirectory")
                    .iter()
                    .flat_map(|l| {
                        l.split_whitespace()
                            .map(|d| Path::new("/var/lib").join(d.split(':').next().unwrap_or(d)))
                            .collect::<Vec<_>>()
                    })
                    .chain(values("ReadWritePaths").iter().flat_map(|l| {
                        l.split_whitespace()
                            .map(|p| PathBuf::from(p.trim_start_matches(['-', '+'])))
                            .collect::<Vec<_>>()
                    }))
                    .collect();
                if !writable.iter().any(|w| dir.starts_with(w)) {
                    problems.push(format!(
                        "{file}: the spool directory {} is not under StateDirectory= or ReadWritePaths= {writable:?}",
                        dir.display()
                    ));
                }
            }
        }
        Ok(Effective::Collector(c)) => {
            if c.tls.is_none() || c.insecure {
                problems.push(format!("{file}: the collector has no mTLS files"));
            }
        }
        Ok(Effective::Other) => checked = false,
    }
    // Only a service whose effective configuration was checked counts as seen.
    (problems, checked.then_some(sub))
}

#[test]
fn systemd_units_and_configs_use_real_flags_and_keys() {
    let dir = deploy_dir("systemd");
    let units = files_with_ext(&dir, &["service"]);
    assert!(!units.is_empty(), "no .service under {}", dir.display());
    let mut problems = Vec::new();
    let mut subs = BTreeSet::new();
    for path in &units {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let (p, sub) = check_unit(&rel(path), &name, &read(path), &dir);
        problems.extend(p);
        subs.extend(sub);
    }
    let tomls = files_with_ext(&dir, &["toml"]);
    for path in &tomls {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        if let Err(e) = check_toml(&name, &read(path)) {
            problems.push(format!("{}: {e}", rel(path)));
        }
    }
    assert_no_problems("deploy/systemd", &problems);
    for want in ["agent", "collector"] {
        assert!(
            subs.contains(want),
            "no unit in deploy/systemd/ runs `livehead {want}` (found: {subs:?})"
        );
    }
    assert!(
        tomls.len() >= 2,
        "expected agent.toml and collector.toml in deploy/systemd/, found {tomls:?}"
    );
}

// ---------------------------------------------------------------------------
// The checks above can fail
// ---------------------------------------------------------------------------

/// The real manifests with `edit` applied to their YAML text.
fn edited_manifests(file: &str, edit: impl Fn(&str) -> String) -> Vec<Doc> {
    let dir = deploy_dir("kubernetes");
    let mut docs = Vec::new();
    for path in files_with_ext(&dir, &["yaml", "yml"]) {
        let text = read(&path);
        let text = if path.ends_with(file) {
            let edited = edit(&text);
            assert_ne!(
                edited, text,
                "the edit of {file} changed nothing: the negative test is stale"
            );
            edited
        } else {
            text
        };
        docs.extend(parse_yaml(&rel(&path), &text).unwrap_or_else(|e| panic!("{e}")));
    }
    docs
}

fn problems_after(file: &str, edit: impl Fn(&str) -> String) -> String {
    let (problems, _) = check_manifests(&edited_manifests(file, edit));
    problems.join("\n")
}

#[test]
fn an_unknown_flag_is_caught() {
    assert!(Cli::try_parse_from(["livehead", "agent", "--no-such-flag"]).is_err());
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen("- --metrics-listen=", "- --no-such-flag=", 1)
    });
    assert!(
        problems.contains("--no-such-flag") && problems.contains("agent-daemonset.yaml"),
        "{problems}"
    );

    let (problems, _) = check_unit(
        "x.service",
        "x.service",
        "[Service]\nRestart=always\nExecStart=/usr/local/bin/livehead agent --no-such-flag\n",
        &deploy_dir("systemd"),
    );
    assert!(
        problems.join("\n").contains("--no-such-flag"),
        "{problems:?}"
    );
}

#[test]
fn an_unknown_config_key_is_caught() {
    for (text, key) in [
        ("no_such_key = 1\n", "no_such_key"),
        ("[storage]\nclickhouse_ur = \"x\"\n", "clickhouse_ur"),
        ("[limits]\nmax_batch_recrods = 1\n", "max_batch_recrods"),
    ] {
        let err = check_toml("collector.toml", text).expect_err(text);
        assert!(err.contains(key), "{err}");
    }
    let err = check_toml("agent.toml", "[rounds]\nintervall = \"1m\"\n").expect_err("typo");
    assert!(err.contains("intervall"), "{err}");

    let problems = problems_after("collector.yaml", |t| {
        t.replacen("retention_days = 30", "retention_dayz = 30", 1)
    });
    assert!(
        problems.contains("retention_dayz") && problems.contains("ConfigMap livehead-collector"),
        "{problems}"
    );
}

#[test]
fn an_undeclared_variable_is_caught() {
    let problems = problems_after("collector.yaml", |t| {
        t.replacen(
            "- name: LIVEHEAD_LOG_FORMAT",
            "- name: LIVEHEAD_LOG_FORMATT",
            1,
        )
    });
    assert!(problems.contains("LIVEHEAD_LOG_FORMATT"), "{problems}");
    // Declared, but for the other subcommand.
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen(
            "- name: LIVEHEAD_LOG_FORMAT",
            "- name: LIVEHEAD_CLICKHOUSE_URL",
            1,
        )
    });
    assert!(
        problems.contains("LIVEHEAD_CLICKHOUSE_URL is not read by `livehead agent`"),
        "{problems}"
    );
    // A bad literal value.
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen("value: json", "value: yaml", 1)
    });
    assert!(
        problems.contains("LIVEHEAD_LOG_FORMAT=\"yaml\""),
        "{problems}"
    );
    // An undefined $(VAR).
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen("--target=$(NODE_IP)", "--target=$(NODE_IPP)", 1)
    });
    assert!(problems.contains("$(NODE_IPP)"), "{problems}");
}

#[test]
fn a_manifest_drifting_from_its_surroundings_is_caught() {
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen(
            "readOnly: true\n              # A web root",
            "readOnly: false\n              # A web root",
            1,
        )
    });
    assert!(problems.contains("mounted writable"), "{problems}");
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen(
            "--metrics-listen=0.0.0.0:7091",
            "--metrics-listen=0.0.0.0:7092",
            1,
        )
    });
    assert!(problems.contains("7091"), "{problems}");
    let problems = problems_after("collector.yaml", |t| {
        t.replacen("targetPort: grpc", "targetPort: grcp", 1)
    });
    assert!(problems.contains("targetPort grcp"), "{problems}");
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen(
            "livehead-collector.livehead.svc:7070",
            "livehead-collector.monitoring.svc:7070",
            1,
        )
    });
    assert!(problems.contains("namespace monitoring"), "{problems}");
    let problems = problems_after("agent-daemonset.yaml", |t| {
        t.replacen(
            "mountPath: /var/lib/livehead/spool",
            "mountPath: /var/lib/livehead/spool\n              readOnly: true",
            1,
        )
    });
    assert!(
        problems.contains("spool directory /var/lib/livehead/spool is on a read-only volume"),
        "{problems}"
    );
    let problems = problems_after("collector.yaml", |t| {
        t.replacen(
            "mountPath: /etc/livehead/tls",
            "mountPath: /etc/livehead/certs",
            1,
        )
    });
    assert!(
        problems.contains("/etc/livehead/tls/ca.pem is on no volume mount"),
        "{problems}"
    );
}

#[test]
fn a_unit_drifting_from_its_config_is_caught() {
    let dir = deploy_dir("systemd");
    let path = dir.join("livehead-agent.service");
    let text = read(&path);
    let check = |edited: String| {
        assert_ne!(
            edited, text,
            "the edit changed nothing: the negative test is stale"
        );
        check_unit(
            "livehead-agent.service",
            "livehead-agent.service",
            &edited,
            &dir,
        )
        .0
        .join("\n")
    };
    let problems = check(text.replacen(
        "LoadCredential=agent-key.pem:",
        "LoadCredential=agent-key:",
        1,
    ));
    assert!(problems.contains("credential agent-key.pem"), "{problems}");
    let problems = check(text.replacen("ReadOnlyPaths=-/mnt/www", "ReadOnlyPaths=-/srv/www", 1));
    assert!(problems.contains("web root /mnt/www"), "{problems}");
    let problems = check(text.replacen(
        "StateDirectory=livehead-agent",
        "StateDirectory=livehead",
        1,
    ));
    assert!(
        problems.contains("spool directory /var/lib/livehead-agent/spool"),
        "{problems}"
    );
    let problems = check(text.replacen(
        "${CREDENTIALS_DIRECTORY}/ca.pem",
        "${CREDENTIAL_DIRECTORY}/ca.pem",
        1,
    ));
    assert!(problems.contains("$CREDENTIAL_DIRECTORY"), "{problems}");
    let problems = check(text.replacen(
        "--config /etc/livehead/agent.toml",
        "--config /etc/livehead/agent.conf",
        1,
    ));
    assert!(
        problems.contains("--config /etc/livehead/agent.conf"),
        "{problems}"
    );
}

#[test]
fn a_collector_probe_on_the_wrong_endpoint_is_caught() {
    let problems = problems_after("collector.yaml", |t| {
        t.replacen("path: /ready", "path: /health", 1)
    });
    assert!(
        problems.contains("readinessProbe path /health is not /ready"),
        "{problems}"
    );
    let problems = problems_after("collector.yaml", |t| {
        let at = t.find("livenessProbe:").expect("a liveness probe");
        let (head, tail) = t.split_at(at);
        format!(
            "{head}{}",
            tail.replacen("path: /health", "path: /ready", 1)
        )
    });
    assert!(
        problems.contains("livenessProbe path /ready is not /health"),
        "{problems}"
    );
}
