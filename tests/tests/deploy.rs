//! The deployment files in `deploy/` checked with the real tools that can run here:
//! `systemd-analyze verify` on the units, `promtool` on the Prometheus rules, their unit tests
//! and the metrics both binaries serve, `amtool` on the Alertmanager configuration, `kubectl`
//! (offline) on the Kubernetes manifest, and structural checks of the Compose file, the
//! Grafana provisioning and the Dockerfile (every file they reference exists in the repository).
//! `docker compose config` runs only where Docker Compose is installed; otherwise the test says
//! that it skipped it. Containers and a Kubernetes cluster cannot run here (deploy/README.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use energy_e2e::{bin, eventually, free_port, http_client, listening_url, profiles_dir, repo_root, run, Proc};
use serde_json::Value;

fn deploy() -> PathBuf {
    repo_root().join("deploy")
}

/// A tool the test command installs (tests/run.sh's `need` list); panics naming the package.
fn tool(name: &str, package: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| panic!("`{name}` not found: install the Debian package `{package}` (tests/run.sh does)"))
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs a command; returns (exit code, stdout, stderr).
fn exec(cmd: &Path, args: &[&str], cwd: &Path, stdin: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(cmd);
    c.args(args).current_dir(cwd).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd.display()));
    if let Some(input) = stdin {
        use std::io::Write as _;
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The value of every `Key=` line of a unit file, in order.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).map(str::to_string).collect()
}

/// Copies the units into `dir` with `/usr/bin/<binary>` replaced by the binary built here, so
/// that `systemd-analyze verify` finds an executable.
fn units_with_built_binaries(dir: &Path) -> Vec<PathBuf> {
    ["energyd", "energy-gateway"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(deploy().join(format!("systemd/{name}.service"))).expect("unit");
            assert!(text.contains(&format!("/usr/bin/{name} ")), "{name}.service: ExecStart should name /usr/bin/{name}");
            let p = dir.join(format!("{name}.service"));
            std::fs::write(&p, text.replace(&format!("/usr/bin/{name} "), &format!("{} ", bin(name).display()))).expect("write unit");
            p
        })
        .collect()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_and_a_broken_unit_does_not() {
    let analyze = tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let units = units_with_built_binaries(dir.path());
    let args: Vec<&str> = std::iter::once("verify").chain(units.iter().map(|p| p.to_str().unwrap())).collect();
    let (code, out, err) = exec(&analyze, &args, dir.path(), None);
    assert_eq!(code, 0, "systemd-analyze verify failed:\n{out}{err}");
    // verify only warns about unknown keys and bad values: any output is a failure here.
    assert!(out.trim().is_empty() && err.trim().is_empty(), "systemd-analyze verify complained:\n{out}{err}");
    println!("systemd-analyze verify: energyd.service and energy-gateway.service clean");

    // The check is real: a misspelt directive and a bad value are reported, a missing binary fails.
    let good = std::fs::read_to_string(&units[0]).unwrap();
    let bad = dir.path().join("bad-key.service");
    std::fs::write(&bad, good.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes").replace("ProtectSystem=strict", "ProtectSystem=sometimes")).unwrap();
    let (_, out, err) = exec(&analyze, &["verify", bad.to_str().unwrap()], dir.path(), None);
    assert!(err.contains("NoNewPrivilege") && err.contains("sometimes"), "a broken unit passed systemd-analyze verify:\n{out}{err}");
    let missing = dir.path().join("missing-binary.service");
    std::fs::write(&missing, good.replace(&format!("ExecStart={}", bin("energyd").display()), "ExecStart=/nonexistent/energyd")).unwrap();
    let (code, out, err) = exec(&analyze, &["verify", missing.to_str().unwrap()], dir.path(), None);
    assert_ne!(code, 0, "a unit without its binary passed:\n{out}{err}");
}

#[test]
fn systemd_units_are_hardened_and_match_the_binaries_and_example_configs() {
    for (name, config) in [("energyd", "energyd.toml"), ("energy-gateway", "energy-gateway.toml")] {
        let text = std::fs::read_to_string(deploy().join(format!("systemd/{name}.service"))).unwrap();
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("CapabilityBoundingSet", ""),
            ("DynamicUser", "yes"),
            ("StateDirectory", name),
            ("ConfigurationDirectory", name),
            ("Restart", "on-failure"),
            ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ] {
            assert!(unit_values(&text, key).iter().any(|v| v == value), "{name}.service: want {key}={value}");
        }
        let stop: u64 = unit_values(&text, "TimeoutStopSec").first().and_then(|v| v.parse().ok()).expect("TimeoutStopSec in seconds");
        assert!(stop >= 30, "{name}.service: TimeoutStopSec={stop} leaves no time to drain");
        // ExecStart runs the real command line: `<bin> run --config /etc/<name>/<config>`.
        let exec_start = unit_values(&text, "ExecStart").pop().expect("ExecStart");
        let want_config = format!("/etc/{name}/{config}");
        assert_eq!(exec_start, format!("/usr/bin/{name} run --config {want_config}"));
        let (code, out, _) = run(name, &["run", "--help"], &repo_root());
        assert_eq!(code, 0);
        assert!(out.contains("--config"), "{name} run --help: {out}");
        // The example configuration installed there keeps its state in the StateDirectory.
        let example = std::fs::read_to_string(deploy().join(config)).unwrap();
        let state = format!("\"/var/lib/{name}");
        assert!(example.contains(&state), "deploy/{config}: its data or queue directory should be below /var/lib/{name} (StateDirectory)");
    }
    let gw = std::fs::read_to_string(deploy().join("systemd/energy-gateway.service")).unwrap();
    assert_eq!(unit_values(&gw, "ExecReload"), ["/bin/kill -HUP $MAINPID"], "the gateway reloads its device list on SIGHUP");
    assert!(unit_values(&gw, "SupplementaryGroups").contains(&"dialout".to_string()), "serial ports need the dialout group");
    assert!(unit_values(&gw, "DeviceAllow").iter().any(|d| d.starts_with("char-ttyUSB")), "serial adapters must stay reachable");
}

/// Writes `config` into `dir`, with `(from, to)` replacements, and checks it with the binary.
fn check_config(binary: &str, dir: &Path, file: &str, config: &str, replace: &[(&str, &str)]) {
    let mut text = config.to_string();
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    std::fs::write(dir.join(file), text).unwrap();
    let (code, out, err) = run(binary, &["check-config", "--config", file], dir);
    assert_eq!(code, 0, "{binary} check-config {file}:\n{out}{err}");
}

#[test]
fn example_configs_at_the_units_paths_pass_check_config() {
    // /etc/energyd as the unit sees it: deploy/energyd.toml next to the example registry.
    let etc = tempfile::tempdir().unwrap();
    std::fs::copy(deploy().join("registry.example.toml"), etc.path().join("registry.example.toml")).unwrap();
    // The quota table the example registry includes, installed beside it.
    std::fs::create_dir_all(etc.path().join("quotas")).unwrap();
    let quotas = "quotas/shandong-db37-2672-2019.toml";
    std::fs::copy(deploy().join(quotas), etc.path().join(quotas)).unwrap();
    let text = std::fs::read_to_string(deploy().join("energyd.toml")).unwrap();
    check_config("energyd", etc.path(), "energyd.toml", &text, &[]);
    // /etc/energy-gateway: the profiles live in /usr/share/energy (the repository's here).
    let text = std::fs::read_to_string(deploy().join("energy-gateway.toml")).unwrap();
    let pd = profiles_dir();
    check_config("energy-gateway", etc.path(), "energy-gateway.toml", &text, &[("/usr/share/energy/device-profiles", pd.to_str().unwrap())]);

    // The Compose site's configurations, with the container paths mapped into the temp dir.
    let registry = etc.path().join("registry.toml");
    std::fs::copy(deploy().join("registry.example.toml"), &registry).unwrap();
    let text = std::fs::read_to_string(deploy().join("compose/energyd.toml")).unwrap();
    let tokens = deploy().join("compose/tokens.toml");
    check_config(
        "energyd",
        etc.path(),
        "compose-energyd.toml",
        &text,
        &[("/etc/energyd/registry.toml", registry.to_str().unwrap()), ("/run/secrets/energyd_tokens", tokens.to_str().unwrap())],
    );
    let text = std::fs::read_to_string(deploy().join("compose/energy-gateway.toml")).unwrap();
    check_config("energy-gateway", etc.path(), "compose-gateway.toml", &text, &[("/usr/share/energy/device-profiles", pd.to_str().unwrap())]);

    // The Kubernetes ConfigMap's energyd.toml and registry.toml.
    let docs = yaml_documents(&deploy().join("kubernetes/energyd.yaml"));
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("a ConfigMap");
    let reg = cm["data"]["registry.toml"].as_str().expect("registry.toml in the ConfigMap");
    std::fs::write(etc.path().join("k8s-registry.toml"), reg).unwrap();
    let conf = cm["data"]["energyd.toml"].as_str().expect("energyd.toml in the ConfigMap");
    let k8s_reg = etc.path().join("k8s-registry.toml");
    // The broker's CA comes from a Secret mounted at /etc/energyd/tls.
    let ca = etc.path().join("ca.crt");
    std::fs::write(&ca, "").unwrap();
    let secret = docs.iter().find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "energyd-tokens").expect("the energyd-tokens Secret");
    let k8s_tokens = etc.path().join("k8s-tokens.toml");
    std::fs::write(&k8s_tokens, secret["stringData"]["tokens.toml"].as_str().expect("tokens.toml in the Secret")).unwrap();
    check_config(
        "energyd",
        etc.path(),
        "k8s-energyd.toml",
        conf,
        &[
            ("/etc/energyd/registry.toml", k8s_reg.to_str().unwrap()),
            ("/etc/energyd/tls/ca.crt", ca.to_str().unwrap()),
            ("/etc/energyd/tokens/tokens.toml", k8s_tokens.to_str().unwrap()),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Compose, Grafana, Prometheus configuration

/// Applies YAML merge keys (`<<: *anchor`) one level deep, as Compose does.
fn merged(service: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    if let Some(base) = service.get("<<").and_then(Value::as_object) {
        out.extend(base.clone());
    }
    if let Some(own) = service.as_object() {
        out.extend(own.iter().filter(|(k, _)| k.as_str() != "<<").map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

#[test]
fn compose_file_references_only_what_exists_and_checks_every_service() {
    let dir = deploy();
    let compose = yaml(&dir.join("compose.yaml"));
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for want in ["energyd", "gateway", "mosquitto", "influxdb", "prometheus", "alertmanager", "grafana"] {
        assert!(names.contains(want), "compose.yaml: no service `{want}`");
    }
    let declared_volumes: BTreeSet<&str> = compose["volumes"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
    let configs = compose["configs"].as_object().expect("top-level configs");
    for (name, c) in configs {
        let file = c["file"].as_str().unwrap_or_else(|| panic!("config {name}: no file"));
        assert!(dir.join(file).is_file(), "compose.yaml: config `{name}` names {file}, which does not exist");
    }
    let mut used_volumes = BTreeSet::new();
    for (name, raw) in services {
        let s = merged(raw);
        assert!(s.contains_key("image") || s.contains_key("build"), "service {name}: neither image nor build");
        if let Some(b) = s.get("build") {
            let ctx = dir.join(b["context"].as_str().expect("build.context"));
            assert!(ctx.is_dir(), "service {name}: build context {} missing", ctx.display());
            let df = ctx.join(b["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(df.is_file(), "service {name}: {} missing", df.display());
        }
        let hc = s.get("healthcheck").unwrap_or_else(|| panic!("service {name}: no healthcheck"));
        assert!(hc["test"].as_array().is_some_and(|t| t.len() >= 2 && t[0] == "CMD"), "service {name}: healthcheck.test should be [\"CMD\", ...]");
        for c in s.get("configs").and_then(Value::as_array).into_iter().flatten() {
            let src = c["source"].as_str().or_else(|| c.as_str()).unwrap_or_default();
            assert!(configs.contains_key(src), "service {name}: config `{src}` is not declared");
            assert!(c["target"].as_str().is_some_and(|t| t.starts_with('/')), "service {name}: config `{src}` needs an absolute target");
        }
        for v in s.get("volumes").and_then(Value::as_array).into_iter().flatten() {
            let spec = v.as_str().unwrap_or_else(|| panic!("service {name}: use the short volume syntax"));
            let source = spec.split(':').next().unwrap_or_default();
            if source.starts_with('.') || source.starts_with('/') {
                assert!(dir.join(source).exists(), "service {name}: bind mount {source} does not exist in the repository");
            } else {
                assert!(declared_volumes.contains(source), "service {name}: volume `{source}` is not declared under volumes:");
                used_volumes.insert(source.to_string());
            }
        }
        for p in s.get("ports").and_then(Value::as_array).into_iter().flatten() {
            let spec = p.as_str().unwrap_or_default();
            let parts: Vec<&str> = spec.split(':').collect();
            assert!(parts.len() == 2 && parts.iter().all(|x| x.parse::<u16>().is_ok()), "service {name}: port `{spec}` is not HOST:CONTAINER");
        }
        for dep in s.get("depends_on").and_then(Value::as_object).map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            assert!(names.contains(dep.as_str()), "service {name}: depends on unknown service {dep}");
        }
    }
    for v in &declared_volumes {
        assert!(used_volumes.contains(*v), "volume `{v}` is declared but no service uses it");
    }

    // energyd and the gateway run the real command lines with configs mounted where they point.
    let energyd = merged(&services["energyd"]);
    assert_eq!(energyd["command"], serde_json::json!(["energyd", "run", "--config", "/etc/energyd/energyd.toml"]));
    let gw = merged(&services["gateway"]);
    assert_eq!(gw["command"][1], "run");
    // Grafana mounts the provisioning and the repository's dashboards where the provider reads.
    let grafana = merged(&services["grafana"]);
    let vols: Vec<&str> = grafana["volumes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(vols.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro"), "{vols:?}");
    assert!(vols.contains(&"../dashboards:/var/lib/grafana/dashboards:ro"), "{vols:?}");
    assert!(grafana["environment"]["GF_INSTALL_PLUGINS"].as_str().unwrap_or_default().contains("yesoreyeram-infinity-datasource"));

    let ds = yaml(&dir.join("grafana/provisioning/datasources/energy.yaml"));
    let types: BTreeSet<&str> = ds["datasources"].as_array().expect("datasources").iter().filter_map(|d| d["type"].as_str()).collect();
    for t in ["prometheus", "yesoreyeram-infinity-datasource", "influxdb"] {
        assert!(types.contains(t), "Grafana datasources: no `{t}`");
    }
    for d in ds["datasources"].as_array().unwrap() {
        let url = d["url"].as_str().unwrap_or_default();
        let host = url.trim_start_matches("http://").split(':').next().unwrap_or_default();
        assert!(names.contains(host), "datasource {} points at {url}, not a Compose service", d["name"]);
    }
    let providers = yaml(&dir.join("grafana/provisioning/dashboards/energy.yaml"));
    assert_eq!(providers["providers"][0]["options"]["path"], "/var/lib/grafana/dashboards");

    // Prometheus scrapes Compose services on the ports the binaries listen on.
    let prom = yaml(&dir.join("prometheus/prometheus.yml"));
    for job in prom["scrape_configs"].as_array().expect("scrape_configs") {
        for t in job["static_configs"].as_array().into_iter().flatten().flat_map(|s| s["targets"].as_array().cloned().unwrap_or_default()) {
            let host = t.as_str().unwrap_or_default().split(':').next().unwrap_or_default().to_string();
            assert!(host == "localhost" || names.contains(host.as_str()), "scrape target {t} is not a Compose service");
        }
    }
    println!("compose.yaml: {} services, {} volumes, {} configs checked", services.len(), declared_volumes.len(), configs.len());
}

#[test]
fn docker_compose_config_where_docker_compose_is_installed() {
    let Some(docker) = find_tool("docker") else {
        println!("SKIPPED docker compose config: docker is not installed on this machine");
        return;
    };
    let (code, out, err) = exec(&docker, &["compose", "version"], &repo_root(), None);
    if code != 0 {
        println!("SKIPPED docker compose config: Docker Compose is not available here ({})", format!("{out}{err}").trim());
        return;
    }
    let (code, out, err) = exec(&docker, &["compose", "-f", "deploy/compose.yaml", "config", "--quiet"], &repo_root(), None);
    assert_eq!(code, 0, "docker compose config:\n{out}{err}");
    println!("docker compose config: ok");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn kubernetes_manifest_has_probes_storage_secrets_and_a_locked_down_pod() {
    let path = deploy().join("kubernetes/energyd.yaml");
    let docs = yaml_documents(&path);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for want in ["ConfigMap", "Secret", "Service", "StatefulSet"] {
        assert!(kinds.contains(&want), "{}: no {want} (has {kinds:?})", path.display());
    }
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let spec = &sts["spec"]["template"]["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["energyd", "run", "--config", "/etc/energyd/energyd.toml"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let port_name = c["ports"][0]["name"].as_str().expect("a named container port");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], port_name, "{probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    // The data directory is on the claim, the only writable place besides /tmp.
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str().expect("a volume claim template");
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == claim && m["mountPath"] == "/var/lib/energyd"), "{mounts:?}");
    assert!(c["envFrom"].as_array().is_some_and(|e| e.iter().any(|s| s["secretRef"]["name"].is_string())), "secrets come from a Secret");
    let svc = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(svc["spec"]["selector"], sts["spec"]["selector"]["matchLabels"]);

    // kubectl parses the objects offline. `kubectl apply --dry-run=client` and
    // `create --dry-run=client` need an API server for discovery; `label --local` does not.
    let kubectl = tool("kubectl", "kubernetes-client");
    let (code, out, err) = exec(&kubectl, &["label", "--local", "-f", path.to_str().unwrap(), "-o", "yaml", "checked=offline"], &repo_root(), None);
    assert_eq!(code, 0, "kubectl label --local:\n{out}{err}");
    assert_eq!(out.matches("checked: offline").count(), docs.len(), "kubectl saw every object:\n{out}");
    // And it does reject a broken manifest.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports: [\n").unwrap();
    let (code, _, _) = exec(&kubectl, &["label", "--local", "-f", bad.to_str().unwrap(), "-o", "yaml", "checked=offline"], &repo_root(), None);
    assert_ne!(code, 0, "kubectl accepted a broken manifest");
    println!("kubernetes/energyd.yaml: {} objects parsed by kubectl offline", docs.len());
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_copies_only_existing_files_and_runs_as_non_root() {
    let root = repo_root();
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    // Join continuation lines.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> = joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<usize> = instructions.iter().enumerate().filter(|(_, l)| l.starts_with("FROM ")).map(|(i, _)| i).collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    for l in instructions.iter().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = l.split_whitespace().skip(1).collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&str> = words.iter().filter(|w| !w.starts_with("--")).copied().collect();
        for src in &paths[..paths.len() - 1] {
            assert!(root.join(src).exists(), "Dockerfile: `{l}`: {src} does not exist in the repository");
        }
    }
    assert!(instructions.iter().any(|l| l.contains("cargo build --release --locked") && l.contains("energyd") && l.contains("energy-gateway")));
    let last = &instructions[*stages.last().unwrap()..];
    let user = last.iter().filter_map(|l| l.strip_prefix("USER ")).next_back().expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid != "root" && uid != "0", "the final stage runs as root");
    assert!(last.iter().any(|l| l.starts_with("COPY --from=") && l.contains("energyd") && l.contains("energy-gateway")));
    assert!(last.iter().any(|l| l.starts_with("COPY device-profiles")), "the runtime image carries the device profiles");
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore at the build context's root");
    assert!(ignore.lines().any(|l| l.trim() == "target/"), ".dockerignore keeps target/ out of the context");
}

// ---------------------------------------------------------------------------------------------
// Prometheus and Alertmanager

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == ext)).collect();
    v.sort();
    v
}

#[test]
fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let prom = deploy().join("prometheus");
    let rules = files_in(&prom.join("rules"), "yml");
    assert!(!rules.is_empty());
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(|p| p.to_str().unwrap()));
    let (code, out, err) = exec(&promtool, &args, &prom, None);
    assert_eq!(code, 0, "promtool check rules:\n{out}{err}");
    print!("{out}");

    let tests = files_in(&prom.join("tests"), "yml");
    assert!(!tests.is_empty());
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(|p| p.to_str().unwrap()));
    let (code, out, err) = exec(&promtool, &args, &prom.join("tests"), None);
    assert_eq!(code, 0, "promtool test rules:\n{out}{err}");
    print!("{out}");

    // The unit tests really test: moving one expected firing time makes them fail.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    for r in &rules {
        std::fs::copy(r, dir.path().join("rules").join(r.file_name().unwrap())).unwrap();
    }
    let t = std::fs::read_to_string(&tests[0]).unwrap();
    let broken = t.replacen("- eval_time: 5m\n        alertname: EnergydDown\n        exp_alerts:\n", "- eval_time: 3m\n        alertname: EnergydDown\n        exp_alerts:\n", 1);
    assert_ne!(broken, t, "the test file changed: update this check");
    std::fs::write(dir.path().join("tests/broken.yml"), broken).unwrap();
    let (code, out, _) = exec(&promtool, &["test", "rules", "broken.yml"], &dir.path().join("tests"), None);
    assert_ne!(code, 0, "promtool passed a test with a wrong firing time:\n{out}");

    // The Compose site's Prometheus configuration.
    let (code, out, err) = exec(&promtool, &["check", "config", "--syntax-only", "prometheus.yml"], &prom, None);
    assert_eq!(code, 0, "promtool check config:\n{out}{err}");
}

#[test]
fn prometheus_rules_use_only_metrics_the_binaries_define() {
    let sources = ["daemon/src/metrics.rs", "gateway/src/metrics.rs"].map(|p| std::fs::read_to_string(repo_root().join(p)).unwrap()).join("\n");
    let mut checked = 0;
    for rules in files_in(&deploy().join("prometheus/rules"), "yml") {
        let text = std::fs::read_to_string(&rules).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if !(word.starts_with("energyd_") || word.starts_with("energy_gateway_")) || word.contains(':') {
                continue;
            }
            let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| word.strip_suffix(s).filter(|b| sources.contains(&format!("\"{b}\"")))).unwrap_or(word);
            assert!(sources.contains(&format!("\"{base}\"")), "{}: metric `{word}` is not defined in daemon/src/metrics.rs or gateway/src/metrics.rs", rules.display());
            checked += 1;
        }
    }
    assert!(checked > 10);
}

#[test]
fn alertmanager_config_passes_amtool() {
    let amtool = tool("amtool", "prometheus-alertmanager");
    let dir = deploy().join("alertmanager");
    let (code, out, err) = exec(&amtool, &["check-config", "alertmanager.yml"], &dir, None);
    assert_eq!(code, 0, "amtool check-config:\n{out}{err}");
    print!("{out}");
    // Every alert the rules raise has a severity the routes know.
    let am = yaml(&dir.join("alertmanager.yml"));
    let routes = am["route"]["routes"].to_string();
    for sev in ["page", "warning"] {
        assert!(routes.contains(&format!("severity=\\\"{sev}\\\"")), "no route for severity {sev}: {routes}");
    }
}

/// Runs `promtool check metrics` on a scrape; returns its complaints (empty when clean).
fn promtool_check_metrics(promtool: &Path, text: &str) -> String {
    let (code, out, err) = exec(promtool, &["check", "metrics"], &repo_root(), Some(text));
    if code == 0 && out.trim().is_empty() && err.trim().is_empty() {
        String::new()
    } else {
        format!("exit {code}\n{out}{err}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_the_running_daemon_and_gateway_pass_promtool_check_metrics() {
    let promtool = tool("promtool", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("registry.toml"),
        "[[agency]]\nid = \"ag\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 10.0\noccupants = [ { agency = \"ag\", share = 1.0 } ]\n[[meter]]\nid = \"m-elec\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n",
    )
    .unwrap();
    std::fs::write(d.join("energyd.toml"), "data_dir = \"store\"\nregistry = \"registry.toml\"\n[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut daemon = Proc::spawn("energyd", &["run", "--config", "energyd.toml"], d);
    let url = listening_url(&daemon.wait_line("listening on", Duration::from_secs(30)));

    // A gateway whose one device is on a closed port: its Modbus error and device metrics get
    // label values, and its uplink reaches the daemon.
    let health = free_port();
    let dead = free_port();
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "gateway_id = \"metrics-gw\"\nprofiles_dir = {:?}\n[queue]\ndir = \"queue\"\n[uplink]\nurl = \"{url}/api/v1/ingest\"\n[health]\nlisten = \"127.0.0.1:{health}\"\n[modbus]\ntimeout_ms = 200\nreconnect_min_ms = 100\nreconnect_max_ms = 200\n[[device]]\nmeter = \"m-elec\"\nprofile = \"eastron/sdm630\"\ntcp = \"127.0.0.1:{dead}\"\nunit = 1\ninterval_ms = 200\n",
            profiles_dir()
        ),
    )
    .unwrap();
    let _gw = Proc::spawn("energy-gateway", &["run", "--config", "gateway.toml"], d);

    // Traffic on the daemon: a stored batch, a rejected one, a query.
    let client = http_client();
    let now = chrono::Utc::now().timestamp_millis();
    let ok = serde_json::json!({"schema":1,"gateway":"metrics-test","seq":1,"samples":[{"meter":"m-elec","t":now,"v":{"active_energy_import":1.5}}]});
    let r = client.post(format!("{url}/api/v1/ingest")).header("content-type", "application/json").body(ok.to_string()).send().await.expect("ingest");
    assert_eq!(r.status().as_u16(), 200);
    let r = client.post(format!("{url}/api/v1/ingest")).header("content-type", "application/json").body("{").send().await.expect("ingest");
    assert_eq!(r.status().as_u16(), 400);
    let r = client.post(format!("{url}/write?precision=s")).body("energy,meter=nobody active_power=1 1764288000\n").send().await.expect("write");
    assert!(r.status().is_client_error());

    let gw_metrics = eventually(Duration::from_secs(30), "gateway metrics with Modbus errors", || {
        let client = client.clone();
        async move {
            let text = client.get(format!("http://127.0.0.1:{health}/metrics")).send().await.ok()?.text().await.ok()?;
            text.contains("energy_gateway_modbus_errors_total{").then_some(text)
        }
    })
    .await;
    let daemon_metrics = client.get(format!("{url}/metrics")).send().await.expect("metrics").text().await.expect("body");
    assert!(daemon_metrics.contains("energyd_ingest_rejected_total{"), "{daemon_metrics}");
    assert!(gw_metrics.contains("bus=\"tcp://127.0.0.1:"), "the Modbus metrics are labelled by bus:\n{gw_metrics}");
    assert!(gw_metrics.contains("energy_gateway_queue_max_bytes "), "{gw_metrics}");

    let problems = [("energyd", promtool_check_metrics(&promtool, &daemon_metrics)), ("energy-gateway", promtool_check_metrics(&promtool, &gw_metrics))];
    for (who, p) in &problems {
        assert!(p.is_empty(), "promtool check metrics on {who}'s /metrics:\n{p}");
    }
    // The check is real: a counter without `_total` is reported.
    let bad = "# HELP bad_counter A counter.\n# TYPE bad_counter counter\nbad_counter 1\n";
    assert!(!promtool_check_metrics(&promtool, bad).is_empty(), "promtool check metrics accepted a counter without _total");
    println!(
        "promtool check metrics: energyd {} series, energy-gateway {} series, no problems",
        daemon_metrics.lines().filter(|l| !l.starts_with('#')).count(),
        gw_metrics.lines().filter(|l| !l.starts_with('#')).count()
    );
}
