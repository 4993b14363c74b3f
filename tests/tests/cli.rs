//! The command-line contract: configuration checks report every problem at once with exit 1,
//! and the shipped profiles are all valid.

use energy_e2e::{profiles_dir, repo_root, run};

#[test]
fn check_config_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("registry.toml"),
        "[[agency]]\nid = \"a\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 0.0\noccupants = [ { agency = \"x\", share = 1.0 } ]\n[[meter]]\nid = \"m\"\nbuilding = \"nope\"\ncarrier = \"water\"\n",
    )
    .unwrap();
    std::fs::write(d.join("energyd.toml"), "data_dir = \"d\"\nregistry = \"registry.toml\"\ntimezone = \"Nowhere/City\"\n").unwrap();
    let (code, _, err) = run("energyd", &["check-config", "--config", "energyd.toml"], d);
    assert_eq!(code, 1);
    for needle in ["timezone `Nowhere/City`", "floor_area must be a positive", "occupant `x` is not an agency", "building `nope` is not a building"] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    // Accounting parts: a quota table included from a file that has a bad row, an event at a time
    // that is not a time, a budget for nobody; all named at once (the time zone is valid here).
    std::fs::write(
        d.join("quotas.toml"),
        "[[quota]]\nsource = \"x\"\nindicator = \"energy_per_area\"\nbinding = 1.0\nbenchmark = 2.0\nguide = 3.0\n",
    )
    .unwrap();
    std::fs::write(
        d.join("registry.toml"),
        "include = [\"quotas.toml\", \"missing.toml\"]\n[[agency]]\nid = \"a\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 10.0\noccupants = [ { agency = \"a\", share = 1.0 } ]\n\
         [[meter]]\nid = \"m\"\nbuilding = \"b\"\ncarrier = \"electricity\"\n[[event]]\nmeter = \"m\"\nkind = \"reading\"\ntime = \"soon\"\nvalue = 1.0\nby = \"x\"\nreason = \"y\"\n\
         [[budget]]\nagency = \"nobody\"\nyear = 2026\n",
    )
    .unwrap();
    std::fs::write(d.join("energyd.toml"), "data_dir = \"d\"\nregistry = \"registry.toml\"\n").unwrap();
    let (code, _, err) = run("energyd", &["check-config", "--config", "energyd.toml"], d);
    assert_eq!(code, 1);
    assert!(err.contains("missing.toml"), "{err}");
    // The missing include stops the load before the rest; without it the others all show.
    std::fs::write(d.join("registry.toml"), std::fs::read_to_string(d.join("registry.toml")).unwrap().replace(", \"missing.toml\"", "")).unwrap();
    let (code, _, err) = run("energyd", &["check-config", "--config", "energyd.toml"], d);
    assert_eq!(code, 1);
    for needle in ["values must rise from guide", "`nobody` is not an agency", "event of meter `m` at soon"] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    // A good one passes.
    std::fs::write(
        d.join("registry.toml"),
        "[[agency]]\nid = \"a\"\nname = \"A\"\nlevel = \"city\"\n[[building]]\nid = \"b\"\nname = \"B\"\nfloor_area = 10.0\noccupants = [ { agency = \"a\", share = 1.0 } ]\n",
    )
    .unwrap();
    std::fs::write(d.join("energyd.toml"), "data_dir = \"d\"\nregistry = \"registry.toml\"\n").unwrap();
    let (code, out, err) = run("energyd", &["check-config", "--config", "energyd.toml"], d);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 agencies, 1 buildings, 0 meters"));
}

#[test]
fn gateway_check_config_names_each_bad_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!(
        "gateway_id = \"gw 1\"\nprofiles_dir = {:?}\n[queue]\ndir = \"q\"\n[uplink]\nurl = \"ftp://x\"\n\
         [[device]]\nmeter = \"m1\"\nprofile = \"nobody/nothing\"\ntcp = \"nohost\"\ninterval_ms = 5\n\
         [[device]]\nmeter = \"m1\"\nprofile = \"eastron/sdm630\"\ntcp = \"127.0.0.1:502\"\nct_ratio = -1\n",
        profiles_dir()
    );
    std::fs::write(d.join("gw.toml"), cfg).unwrap();
    let (code, _, err) = run("energy-gateway", &["check-config", "--config", "gw.toml"], d);
    assert_eq!(code, 1);
    for needle in [
        "gateway_id",
        "uplink.url `ftp://x`",
        "profile `nobody/nothing` not found",
        "tcp `nohost` is not host:port",
        "interval_ms 5",
        "meter `m1` is configured twice",
        "ct_ratio must be a positive number",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn shipped_profiles_are_valid_and_listed() {
    let pd = profiles_dir();
    let (code, out, err) = run("energy-gateway", &["profiles", "check", pd.to_str().unwrap()], &repo_root());
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run("energy-gateway", &["profiles", "list", "--profiles-dir", pd.to_str().unwrap()], &repo_root());
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("eastron/sdm630\t")), "{out}");
    assert!(out.lines().count() >= 20);
    // A broken profile makes `profiles check` fail and name the file and the problem.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    std::fs::write(dir.path().join("x/bad.toml"), "vendor = \"X\"\nmodel = \"Y\"\nsource = \"s\"\n[[register]]\nquantity = \"voltage_l1\"\naddress = 0\ntype = \"f32\"\nunit = \"kV\"\n").unwrap();
    let (code, _, err) = run("energy-gateway", &["profiles", "check", dir.path().to_str().unwrap()], &repo_root());
    assert_eq!(code, 1);
    assert!(err.contains("bad.toml") && err.contains("unit `kV`"), "{err}");
}

#[test]
fn the_example_configurations_in_deploy_are_valid() {
    let deploy = repo_root().join("deploy");
    let (code, out, err) = run("energyd", &["check-config", "--config", "energyd.toml"], &deploy);
    assert_eq!(code, 0, "{out}{err}");
    // The example names the system-wide profile directory; point it at the repository's.
    let pd = profiles_dir();
    let cfg = std::fs::read_to_string(deploy.join("energy-gateway.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gw.toml"), cfg.replace("/usr/share/energy/device-profiles", pd.to_str().unwrap())).unwrap();
    let (code, out, err) = run("energy-gateway", &["check-config", "--config", "gw.toml"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
}
