//! deploy/: no container engine or cluster runs on the development machines, so these files are
//! checked for what can be checked here: every manifest parses, and every binary, command line,
//! setting, port and path it names exists in this repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one object per file", path.display());
    docs.remove(0)
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// The binaries this workspace builds, from the `[[bin]]` entries of its crates.
fn binaries() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    for krate in ["hub", "node", "cli"] {
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap())
                .unwrap();
        for bin in manifest["bin"].as_array().unwrap() {
            names.insert(bin["name"].as_str().unwrap().to_string());
        }
    }
    names
}

/// A command line the image or a unit runs: the binary must be ours, and its arguments must be
/// what that binary takes (the CLI's are parsed by the CLI's own parser).
fn check_command(line: &[String], what: &str) {
    let bins = binaries();
    let bin = line[0].rsplit('/').next().unwrap();
    assert!(
        bins.contains(bin),
        "{what} runs {bin:?}, not one of {bins:?}"
    );
    match bin {
        "overstap" => {
            if let Err(e) = overstap_cli::commands::Cli::try_parse_from(line) {
                panic!(
                    "{what}: `{}` is not a valid overstap command: {e}",
                    line.join(" ")
                );
            }
        }
        _ => assert_eq!(
            &line[1..2],
            ["--config"],
            "{what}: the daemons take --config FILE"
        ),
    }
}

fn setting_names(fields: &[(&str, overstap_proto::config::FieldKind)]) -> BTreeSet<String> {
    fields
        .iter()
        .map(|(n, _)| format!("OVERSTAP_{}", n.to_uppercase()))
        .collect()
}

/// Every `OVERSTAP_*` variable in an environment list names a setting of that program.
fn check_env(env: &Yaml, settings: &BTreeSet<String>, what: &str) {
    let names: Vec<String> = match env {
        Yaml::Hash(h) => h.keys().map(|k| k.as_str().unwrap().to_string()).collect(),
        Yaml::Array(a) => a
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect(),
        Yaml::BadValue => Vec::new(),
        other => panic!("{what}: environment is {other:?}"),
    };
    for n in names.iter().filter(|n| n.starts_with("OVERSTAP_")) {
        assert!(settings.contains(n), "{what}: {n} names no setting");
    }
}

#[test]
fn every_manifest_parses_and_names_what_exists() {
    let hub_settings = setting_names(overstap_hub::settings::FIELDS);
    let node_settings = setting_names(overstap_node::settings::FIELDS);
    let hub_port = overstap_hub::Settings::load(None).unwrap().listen.port();

    // compose.yaml: PostgreSQL, two hub replicas and three nodes.
    let compose = yaml(&deploy().join("compose.yaml"));
    let services = compose["services"].as_hash().expect("services");
    let mut hubs = 0;
    let mut nodes = 0;
    let mut on_postgres = Vec::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        if name == "postgres" {
            assert!(svc["image"].as_str().unwrap().starts_with("postgres"));
            for volume in strings(&svc["volumes"]) {
                if let Some(local) = volume.strip_prefix("./") {
                    let local = local.split(':').next().unwrap();
                    assert!(
                        deploy().join(local).exists(),
                        "postgres mounts ./{local}, which is not in deploy/"
                    );
                }
            }
            continue;
        }
        let command = strings(&svc["command"]);
        check_command(&command, name);
        let test = strings(&svc["healthcheck"]["test"]);
        assert_eq!(test[0], "CMD", "{name}: a health check without a shell");
        check_command(&test[1..], &format!("{name}'s health check"));
        match command[0].as_str() {
            "overstap-hub" => {
                hubs += 1;
                check_env(&svc["environment"], &hub_settings, name);
                let ports = strings(&svc["ports"]);
                assert!(
                    ports.iter().all(|p| p.ends_with(&format!(":{hub_port}"))),
                    "{name} publishes {ports:?}, but the hub listens on {hub_port}"
                );
                assert_eq!(test[1..4], ["overstap", "health", "hub"]);
            }
            "overstap-node" => {
                nodes += 1;
                check_env(&svc["environment"], &node_settings, name);
                // A node on PostgreSQL names a database that postgres-init/ makes for it alone.
                let url = svc["environment"]["OVERSTAP_DATABASE_URL"]
                    .as_str()
                    .unwrap_or_default();
                if url.starts_with("postgres://") {
                    let database = url.rsplit('/').next().unwrap();
                    assert_ne!(database, "overstap", "{name} shares the hubs' database");
                    let init = std::fs::read_to_string(
                        deploy().join("postgres-init/01-node-databases.sql"),
                    )
                    .unwrap();
                    assert!(
                        init.contains(&format!("CREATE DATABASE {database} ")),
                        "{name} uses database {database}, which postgres-init/ does not make"
                    );
                    on_postgres.push(name.to_string());
                }
                assert_eq!(test[1..4], ["overstap", "health", "node"]);
            }
            other => panic!("{name} runs {other}"),
        }
    }
    assert_eq!((hubs, nodes), (2, 3), "two hub replicas and three nodes");
    assert_eq!(
        on_postgres,
        ["node-gm0193"],
        "the municipality's node on PostgreSQL"
    );

    // Kubernetes: the Deployment runs our binary with probes our CLI takes, on the port the
    // Service targets, with every file the ConfigMap's hub.toml names mounted from the Secret.
    let k8s = deploy().join("k8s");
    let deployment = yaml(&k8s.join("hub-deployment.yaml"));
    assert_eq!(deployment["kind"].as_str(), Some("Deployment"));
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    check_command(&strings(&container["command"]), "the hub Deployment");
    check_env(&container["env"], &hub_settings, "the hub Deployment");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        check_command(
            &strings(&container[probe]["exec"]["command"]),
            &format!("the hub's {probe}"),
        );
    }
    let port = &container["ports"][0];
    let service = yaml(&k8s.join("hub-service.yaml"));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        port["name"].as_str(),
        "the Service targets the container's port by name"
    );
    let configmap = yaml(&k8s.join("hub-configmap.yaml"));
    let hub_toml = configmap["data"]["hub.toml"].as_str().expect("hub.toml");
    let table: toml::Table = toml::from_str(hub_toml).expect("the ConfigMap's hub.toml parses");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("hub.toml"), hub_toml).unwrap();
    let settings = overstap_hub::Settings::load(Some(&tmp.path().join("hub.toml")))
        .expect("the ConfigMap's hub.toml holds only real settings");
    assert_eq!(
        settings.listen.port() as i64,
        port["containerPort"].as_i64().unwrap()
    );
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some("config"))
        .expect("the config volume is mounted");
    let mount_path = PathBuf::from(mount["mountPath"].as_str().unwrap());
    let secret = yaml(&k8s.join("hub-secret.yaml"));
    let mut secret_keys: BTreeSet<String> = BTreeSet::new();
    for part in ["stringData", "data"] {
        if let Some(h) = secret[part].as_hash() {
            secret_keys.extend(h.keys().map(|k| k.as_str().unwrap().to_string()));
        }
    }
    let mut mounted: BTreeSet<PathBuf> = BTreeSet::new();
    for source in pod["volumes"][0]["projected"]["sources"].as_vec().unwrap() {
        let (items, keys) = if !source["secret"].is_badvalue() {
            (&source["secret"]["items"], Some(&secret_keys))
        } else {
            (&source["configMap"]["items"], None)
        };
        for item in items.as_vec().unwrap() {
            if let Some(keys) = keys {
                let key = item["key"].as_str().unwrap();
                assert!(keys.contains(key), "the Secret has no key {key}");
            }
            mounted.insert(mount_path.join(item["path"].as_str().unwrap()));
        }
    }
    for key in [
        "ca_cert",
        "tls_cert",
        "tls_key",
        "signing_key",
        "authority_key",
        "directory_file",
    ] {
        let path = PathBuf::from(table[key].as_str().unwrap_or_else(|| panic!("no {key}")));
        assert!(
            mounted.contains(&path),
            "hub.toml names {} for {key}, which is not mounted",
            path.display()
        );
    }
    let namespace = yaml(&k8s.join("namespace.yaml"));
    assert_eq!(namespace["kind"].as_str(), Some("Namespace"));
    assert_eq!(
        namespace["metadata"]["name"].as_str(),
        deployment["metadata"]["namespace"].as_str()
    );

    // The Dockerfile copies every binary the workspace builds, runs as a non-root user, exposes
    // the hub's port, and checks health with our CLI.
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    for bin in binaries() {
        assert!(
            dockerfile.contains(&format!("target/release/{bin} /usr/local/bin/{bin}")),
            "the image lacks {bin}"
        );
    }
    assert!(dockerfile.contains(&format!("EXPOSE {hub_port}")));
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root"))
    );
    assert!(dockerfile.contains("HEALTHCHECK "));
    let commands: Vec<Vec<String>> = dockerfile
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("CMD "))
        .map(|json| serde_json::from_str(json.trim()).expect("CMD in exec form"))
        .collect();
    for c in &commands {
        check_command(c, "the image");
    }
    assert!(
        commands
            .iter()
            .any(|c| c[..3] == ["overstap", "health", "hub"])
    );
    assert!(commands.iter().any(|c| c[0] == "overstap-hub"));

    // systemd: the units run our binaries from where the image and the README put them.
    for unit in ["overstap-hub.service", "overstap-node.service"] {
        let text = std::fs::read_to_string(deploy().join("systemd").join(unit)).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let line: Vec<String> = exec.split_whitespace().map(String::from).collect();
        assert!(line[0].starts_with("/usr/local/bin/"));
        check_command(&line, unit);
    }
}
