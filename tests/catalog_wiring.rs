//! Renders every app of the shipped catalog (`apps/`) into the container spec the engine
//! would be asked for, without an engine or a pull: a temporary data folder where each
//! app's secrets are generated and where fake onion hostname files stand in for the ones
//! tor writes (`<data>/apps/tor/data/onion/<app>/hostname`). Then checks the wiring: every
//! `${secret:…}` and `${onion…}` reference resolves to the value its owner has, every
//! dependency volume binds the dependency's own folder read-only, every probe is
//! reachable (the strict lint) and every exec probe and hook renders.

use std::collections::BTreeMap;
use std::path::Path;

use archipelago::catalog::Catalog;
use archipelago::catalog_lint;
use archipelago::manifest::{secret_refs, HealthProbe};
use archipelago::onion;
use archipelago::secrets;
use archipelago::spec::container_spec;
use archipelago::store::Store;

/// A distinct, well-formed v3 onion address per app (56 base32 characters).
fn fake_address(index: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let name: String = (0..56)
        .map(|i| alphabet[(index * 7 + i * 3) % alphabet.len()] as char)
        .collect();
    format!("{name}.onion")
}

/// Loads `apps/`, generates every secret and writes every onion hostname.
fn prepared() -> (tempfile::TempDir, Store, Catalog, BTreeMap<String, String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (catalog, problems) = Catalog::load(&root.join("apps"));
    assert!(problems.is_empty(), "apps/ has problems: {problems:?}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::open(tmp.path()).expect("store").with_tor_app("tor");
    let mut addresses = BTreeMap::new();
    for (index, (id, app)) in catalog.apps.iter().enumerate() {
        secrets::generate(&store, id.as_str(), &app.manifest.secrets)
            .unwrap_or_else(|e| panic!("{id}: secrets: {e}"));
        if app.manifest.onion.is_some() {
            let dir = onion::service_dir(&store, id.as_str()).expect("a tor app is named");
            std::fs::create_dir_all(&dir).expect("service dir");
            let address = fake_address(index);
            std::fs::write(dir.join("hostname"), format!("{address}\n")).expect("hostname");
            addresses.insert(id.as_str().to_string(), address);
        }
    }
    (tmp, store, catalog, addresses)
}

/// `text` as the container gets it.
fn render(store: &Store, app: &str, text: &str) -> String {
    let with_secrets =
        secrets::render(store, app, text).unwrap_or_else(|e| panic!("{app}: {text:?}: {e}"));
    onion::render(store, app, &with_secrets).unwrap_or_else(|e| panic!("{app}: {text:?}: {e}"))
}

#[test]
fn every_app_renders_with_its_references_resolved() {
    let (_tmp, store, catalog, addresses) = prepared();
    assert!(catalog.apps.len() >= 30);
    for (id, app) in &catalog.apps {
        let id = id.as_str();
        let m = &app.manifest;
        let spec = container_spec(app, &store, "archipelago")
            .unwrap_or_else(|e| panic!("{id}: container spec: {e}"));

        // Every text the container gets, rendered, beside the manifest's text.
        let c = &m.container;
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (key, value) in &c.env {
            pairs.push((value.clone(), spec.env[key].clone()));
        }
        for (written, rendered) in [
            (&c.command, &spec.command),
            (&c.entrypoint, &spec.entrypoint),
        ] {
            let (written, rendered) = (
                written.clone().unwrap_or_default(),
                rendered.clone().unwrap_or_default(),
            );
            assert_eq!(written.len(), rendered.len(), "{id}: argument count");
            pairs.extend(written.into_iter().zip(rendered));
        }
        if let Some(HealthProbe::Exec(args)) = c.health.as_ref().map(|h| &h.probe) {
            pairs.extend(args.iter().map(|a| (a.clone(), render(&store, id, a))));
        }
        for step in &m.hooks.post_create {
            pairs.extend(step.exec.iter().map(|a| (a.clone(), render(&store, id, a))));
        }

        for (written, rendered) in &pairs {
            assert!(
                !rendered.contains("${secret:") && !rendered.contains("${onion"),
                "{id}: {written:?} left a reference unrendered: {rendered:?}"
            );
            // A secret reference becomes the secret its owner has.
            for r in secret_refs(written).expect("references parse") {
                let owner = r.app.as_ref().map_or(id, |a| a.as_str());
                let value = secrets::read(&store, owner, &r.name)
                    .unwrap_or_else(|e| panic!("{id}: {written:?}: {e}"));
                assert!(
                    rendered.contains(&value),
                    "{id}: {written:?} lacks {owner}/{}",
                    r.name
                );
            }
            // An onion reference becomes tor's address of that app.
            for target in onion::references(id, written).expect("references parse") {
                let address = addresses
                    .get(&target)
                    .unwrap_or_else(|| panic!("{id}: {written:?}: {target} has no onion service"));
                assert!(
                    rendered.contains(address.as_str()),
                    "{id}: {written:?} lacks {target}'s address"
                );
            }
        }

        // Dependency volumes: the dependency's own folder, read-only, one it declares.
        for (volume, bind) in c.volumes.iter().zip(&spec.binds) {
            let owner = volume.app.as_ref().map_or(id, |a| a.as_str());
            assert_eq!(
                bind.host,
                store.app_dir(owner).join(&volume.name),
                "{id}: bind of {volume:?}"
            );
            assert_eq!(bind.container, volume.path);
            if let Some(dep) = &volume.app {
                assert!(bind.read_only, "{id}: {dep}'s volume must be read-only");
                assert!(
                    m.dependencies.contains(dep),
                    "{id}: {dep} is not a dependency"
                );
                let dep_app = &catalog.apps[dep];
                assert!(
                    dep_app
                        .manifest
                        .container
                        .volumes
                        .iter()
                        .any(|v| v.app.is_none() && v.name == volume.name),
                    "{id}: {dep} has no volume {}",
                    volume.name
                );
            }
        }

        // Probes: an http/tcp probe's port is one the container serves, never only a host
        // port; the strict lint below says why each port is known.
        if let Some(health) = &c.health {
            if let HealthProbe::Http { port, .. } | HealthProbe::Tcp { port } = &health.probe {
                let host_only = spec
                    .ports
                    .iter()
                    .any(|p| p.host == *port && p.container != *port)
                    && !spec.ports.iter().any(|p| p.container == *port);
                assert!(!host_only, "{id}: probe on host-only port {port}");
            }
        }
    }
    // Sourced digests, reachable probes, known volume owners, produced dependency files.
    assert_eq!(catalog_lint::lint(&catalog), vec![], "strict lint of apps/");
}

#[test]
fn wiring_that_apps_rely_on_is_there() {
    let (_tmp, store, catalog, addresses) = prepared();
    let spec = |id: &str| {
        let app = catalog
            .apps
            .iter()
            .find(|(a, _)| a.as_str() == id)
            .expect("app")
            .1;
        container_spec(app, &store, "archipelago").expect("spec")
    };
    let bind_of = |id: &str, dep: &str| {
        spec(id)
            .binds
            .into_iter()
            .find(|b| b.host == store.app_dir(dep).join("data"))
            .unwrap_or_else(|| panic!("{id} mounts no volume of {dep}"))
    };
    // lnd's macaroons and certificate for its web UIs; NBXplorer's cookie for BTCPay.
    for ui in ["ride-the-lightning", "thunderhub", "lnbits"] {
        let bind = bind_of(ui, "lnd");
        assert!(bind.read_only);
        assert_eq!(bind.container, "/lnd");
    }
    let btcpay = spec("btcpayserver");
    assert_eq!(
        btcpay.env["BTCPAY_BTCEXPLORERCOOKIEFILE"],
        "/nbx/Main/.cookie"
    );
    assert_eq!(bind_of("btcpayserver", "nbxplorer").container, "/nbx");
    assert_eq!(
        btcpay.user.as_deref(),
        spec("nbxplorer").user.as_deref(),
        "same uid reads the cookie"
    );

    // bitcoind: compact block filters, rpcauth from its own secret, its onion address.
    let bitcoind = spec("bitcoind");
    let args = bitcoind.command.clone().expect("bitcoind command");
    for flag in [
        "-blockfilterindex=1",
        "-peerblockfilters=1",
        "-deprecatedrpc=create_bdb",
    ] {
        assert!(args.iter().any(|a| a == flag), "bitcoind lacks {flag}");
    }
    let rpcauth = secrets::read(&store, "bitcoind", "rpcauth").expect("rpcauth");
    assert!(args.contains(&format!("-rpcauth={rpcauth}")));
    assert!(args.contains(&format!("-externalip={}", addresses["bitcoind"])));
    assert!(bitcoind.stop_timeout >= std::time::Duration::from_secs(600));
    assert!(
        !bitcoind.ports.iter().any(|p| p.container == 8332),
        "RPC stays unpublished"
    );

    // Wallet ports: lnd gRPC/REST, Fulcrum's Electrum over TLS.
    let lnd = spec("lnd");
    for (host, container) in [(10009, 10009), (8081, 8080)] {
        assert!(lnd
            .ports
            .iter()
            .any(|p| p.host == host && p.container == container));
    }
    assert!(spec("fulcrum")
        .ports
        .iter()
        .any(|p| p.host == 50012 && p.container == 50002));
    let lnd_pw = secrets::read(&store, "bitcoind", "rpc_password").expect("rpc password");
    assert!(lnd
        .command
        .expect("lnd command")
        .contains(&format!("--bitcoind.rpcpass={lnd_pw}")));
}
