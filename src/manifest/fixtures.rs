//! What the manifest files' unit tests share: the contract's example manifest, a minimal
//! one, and parsing with problems as lines.

use std::path::Path;

use super::{AppManifest, Problem};

/// The contract's example manifest, with a build-free image source.
pub(super) const FULL: &str = r#"id: lnd
name: LND
version: "0.18.3"
description: Lightning Network Daemon
dependencies: [bitcoind]
container:
  image: lightninglabs/lnd:v0.18.3-beta
  command: ["--bitcoin.mainnet"]
  entrypoint: ["lnd"]
  user: "1000:1000"
  env:
    RPCPASS: "${secret:bitcoind/rpc_password}"
    MACAROON: "${secret:macaroon_key}"
    PORT: 8080
  ports: ["9735:9735", "10009:10009/tcp", "53:53/udp"]
  volumes: ["data:/root/.lnd", "conf:/etc/lnd:ro", "logs:/var/log:rw"]
  network: host
  memory_limit: 1GiB
  stop_timeout: 5m
  restart: always
  health:
    http: {port: 8080, path: /}
    interval: 10s
    timeout: 3s
    retries: 3
    start_period: 60s
hooks:
  post_create:
    - exec: ["lncli", "create"]
      timeout: 2m
secrets:
  rpc_password: {kind: password, length: 32}
  macaroon_key: {kind: hex}
  rpcauth: {kind: rpcauth, user: archipelago, password: rpc_password}
ui: {port: 8080, path: /}
"#;

pub(super) const MINIMAL: &str =
    "id: lnd\nname: LND\nversion: '1'\ncontainer:\n  image: busybox\n  memory_limit: 64Mi\n";

pub(super) fn parse(text: &str) -> Result<AppManifest, Vec<Problem>> {
    AppManifest::from_yaml(Path::new("apps/lnd/manifest.yml"), text)
}

pub(super) fn lines(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}
