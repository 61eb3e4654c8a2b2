use super::*;

#[test]
fn the_ui_address_is_the_published_port_or_the_host_networks() {
    let ui = |extra: &str, tail: &str| {
        let text = format!(
            "id: web\nname: Web\nversion: '1'\ncontainer:\n  image: busybox\n  memory_limit: 64Mi\n{extra}{tail}"
        );
        let m = crate::manifest::AppManifest::from_yaml(
            std::path::Path::new("apps/web/manifest.yml"),
            &text,
        )
        .unwrap();
        ui_address(&m).map(|u| (u.port, u.path, u.onion_port))
    };
    let page = "ui: {port: 8080, path: /app}\n";
    let cases = [
        (
            "  ports: [\"8081:8080\"]\n",
            page,
            Some((Some(8081), "/app".to_string(), None)),
        ),
        (
            "  network: host\n",
            page,
            Some((Some(8080), "/app".to_string(), None)),
        ),
        (
            "  ports: [\"9000:9000\"]\n",
            page,
            Some((None, "/app".to_string(), None)),
        ),
        (
            "  ports: [\"8081:8080/udp\"]\n",
            page,
            Some((None, "/app".to_string(), None)),
        ),
        (
            "",
            "ui: {port: 8080}\nonion: {ports: [\"80:8080\"]}\n",
            Some((None, "/".to_string(), Some(80))),
        ),
        ("  ports: [\"8081:8080\"]\n", "", None),
    ];
    for (extra, tail, want) in cases {
        assert_eq!(ui(extra, tail), want, "{extra}{tail}");
    }
}

#[test]
fn an_operation_id_names_its_app() {
    for app in ["lnd", "mempool-api", "a-b-c"] {
        for n in ["1", "42", "recover"] {
            let id = operation_id(app, &instance_token(), n);
            assert_eq!(app_of_operation(&id), Some(app), "{id}");
        }
    }
    // Ids written before the instance token (`<app>-<pid>-<n>`) still name their app.
    assert_eq!(app_of_operation("lnd-4242-7"), Some("lnd"));
    assert_eq!(app_of_operation("nodashes"), None);
    assert_eq!(app_of_operation("one-dash"), None);
}
