//! docker-compose.yml and the Dockerfile cannot be run here (no Docker
//! engine); their structure is checked instead, including that every
//! CUSTOMS179_* variable the compose file sets is a real configuration key.

use std::path::Path;

use customs179_service::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("docker-compose.yml")).unwrap().remove(0)
}

fn command(service: &Yaml) -> Vec<String> {
    service["command"].as_vec().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// `${NAME:-default}` becomes the default, `${NAME:?msg}` a stand-in value.
fn substitute(value: &str) -> String {
    let Some(start) = value.find("${") else { return value.to_owned() };
    let end = value[start..].find('}').unwrap() + start;
    let inner = &value[start + 2..end];
    let replacement = match inner.split_once(":-") {
        Some((_, default)) => default.to_owned(),
        None => "a-stand-in-admin-token-value".to_owned(),
    };
    format!("{}{}{}", &value[..start], replacement, &value[end + 1..])
}

#[test]
fn the_service_and_both_simulators_run_from_one_image() {
    let compose = compose();
    let services = &compose["services"];
    let service = &services["customs179"];
    let eport = &services["eport-sim"];
    let customs = &services["customs-sim"];
    let image = service["image"].as_str().unwrap();
    assert_eq!(eport["image"].as_str(), Some(image));
    assert_eq!(customs["image"].as_str(), Some(image));
    assert_eq!(command(service)[..2], ["serve", "--config"]);
    assert_eq!(command(eport)[..2], ["sim", "eport"]);
    assert_eq!(command(customs)[..3], ["sim", "customs", "serve"]);
    // The database lives on a named volume.
    let volumes: Vec<&str> =
        service["volumes"].as_vec().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(volumes.iter().any(|v| v.starts_with("customs179-data:/var/lib/customs179/data")), "{volumes:?}");
    assert!(!compose["volumes"]["customs179-data"].is_badvalue());
}

#[test]
fn every_environment_variable_is_a_configuration_key_and_the_result_is_valid() {
    let compose = compose();
    let environment = compose["services"]["customs179"]["environment"].as_hash().unwrap();
    let env: Vec<(String, String)> = environment
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), substitute(v.as_str().unwrap())))
        .collect();
    assert!(env.iter().all(|(k, _)| k.starts_with("CUSTOMS179_")));
    let config = Config::from_toml_str(&read("config/customs179.example.toml"), env).unwrap();
    assert_eq!(config.signers[0].url, "ws://eport-sim:61232/");
    assert_eq!(config.customs.upload_url(), "http://customs-sim:8090/ceb2grab/grab/realTimeDataUpload");
    assert_eq!(config.store.path, Path::new("/var/lib/customs179/data/customs179.sqlite"));
    // The simulators' addresses match what the service is told.
    let eport = command(&compose["services"]["eport-sim"]);
    assert!(eport.windows(2).any(|w| w == ["--listen", "0.0.0.0:61232"]), "{eport:?}");
    let customs = command(&compose["services"]["customs-sim"]);
    assert!(customs.windows(2).any(|w| w == ["--listen", "0.0.0.0:8090"]), "{customs:?}");
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_in_another() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(dockerfile.contains("cargo build --release --locked --bin customs179"));
    assert!(
        dockerfile.contains("COPY --from=build /src/target/release/customs179 /usr/local/bin/customs179")
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"customs179\"]"));
}

fn several() -> Yaml {
    YamlLoader::load_from_str(&read("deploy/several/docker-compose.yml")).unwrap().remove(0)
}

#[test]
fn the_example_of_several_instances_shares_one_database_and_one_configuration() {
    let compose = several();
    let services = &compose["services"];
    let names: Vec<&str> = services.as_hash().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(names, ["postgres", "instance-a", "instance-b", "card-a", "card-b", "customs-sim", "haproxy"]);
    let toml = read("deploy/several/customs179.toml");
    for name in ["instance-a", "instance-b"] {
        let instance = &services[name];
        assert_eq!(command(instance), ["serve", "--config", "/etc/customs179/customs179.toml"]);
        assert_eq!(instance["hostname"].as_str(), Some(name));
        let env: Vec<(String, String)> = instance["environment"]
            .as_hash()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), substitute(&substitute(v.as_str().unwrap()))))
            .collect();
        let config = Config::from_toml_str(&toml, env).unwrap();
        assert_eq!(config.store.location().describe(), "postgres://customs179@postgres:5432/customs179");
        let signers: Vec<(&str, &str)> =
            config.signers.iter().map(|s| (s.name.as_str(), s.url.as_str())).collect();
        assert_eq!(signers, [("card-a", "ws://card-a:61232/"), ("card-b", "ws://card-b:61232/")]);
        assert_eq!(config.customs.upload_url(), "http://customs-sim:8090/ceb2grab/grab/realTimeDataUpload");
        assert_eq!(config.intake.listen.port(), 8080);
    }
    for card in ["card-a", "card-b"] {
        let args = command(&services[card]);
        assert!(args.windows(2).any(|w| w == ["--listen", "0.0.0.0:61232"]), "{args:?}");
    }
    let customs = command(&services["customs-sim"]).join(" ");
    assert!(customs.contains("--listen 0.0.0.0:8090") && customs.contains("--certs /tmp/certs"), "{customs}");
    // HAProxy sends customs' calls to both instances' intakes.
    let proxy = &services["haproxy"]["environment"];
    assert_eq!(proxy["INSTANCE_A"].as_str(), Some("instance-a:8080"));
    assert_eq!(proxy["INSTANCE_B"].as_str(), Some("instance-b:8080"));
    let haproxy = read("deploy/several/haproxy.cfg");
    for server in ["server a \"${INSTANCE_A}\"", "server b \"${INSTANCE_B}\"", "bind \"${INTAKE_LISTEN}\""] {
        assert!(haproxy.contains(server), "{server}");
    }
}
