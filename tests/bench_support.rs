//! Unit tests of the bench's pure helpers (`benches/bench/support.rs`): its request counter and
//! dependency graph. No engine needed.

#[allow(dead_code)]
#[path = "../benches/bench/support.rs"]
mod support;

use std::collections::BTreeMap;

use support::*;

#[test]
fn request_lines_are_keyed_by_method_and_path_pattern() {
    let cases = [
        (
            "GET /v1.41/containers/json?all=true&filters=%7B%7D HTTP/1.1\r",
            Some("GET /containers/json"),
        ),
        ("GET /v1.41/version HTTP/1.1", Some("GET /version")),
        ("GET /_ping HTTP/1.1\r", Some("GET /_ping")),
        (
            "GET /v1.41/containers/archipelago-x/json HTTP/1.1\r",
            Some("GET /containers/{id}/json"),
        ),
        (
            "POST /v1.41/containers/create?name=x HTTP/1.1\r",
            Some("POST /containers/create"),
        ),
        (
            "POST /v1.41/containers/abc/start HTTP/1.1\r",
            Some("POST /containers/{id}/start"),
        ),
        (
            "GET /v1.41/images/archipelago-test/busybox:latest/json HTTP/1.1\r",
            Some("GET /images/{name}/json"),
        ),
        (
            "{\"Image\":\"x\"}GET /v1.41/events?filters=x HTTP/1.1\r",
            Some("GET /events"),
        ),
        ("Host: localhost\r", None),
        ("{\"Cmd\":[\"sleep\"]}", None),
    ];
    for (line, want) in cases {
        assert_eq!(request_key(line).as_deref(), want, "{line}");
    }
}

#[test]
fn the_scanner_counts_requests_split_across_reads() {
    let counts = Counts::default();
    let mut scanner = Scanner::default();
    let stream = b"GET /v1.41/version HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1.41/containers/create HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /v1.41/containers/json HTTP/1.1\r\n\r\n";
    for chunk in stream.chunks(7) {
        scanner.feed(chunk, &counts);
    }
    let got = counts.snapshot();
    let want: BTreeMap<String, u64> = [
        ("GET /version".to_string(), 1),
        ("POST /containers/create".to_string(), 1),
        ("GET /containers/json".to_string(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn the_graph_has_three_levels_of_two_dependencies() {
    let cases = [(30, [10, 10, 10]), (200, [68, 66, 66]), (4, [2, 1, 1])];
    for (n, sizes) in cases {
        let (ids, deps) = dag("p", n);
        assert_eq!(ids.len(), n);
        let roots = deps.iter().filter(|d| d.is_empty()).count();
        assert_eq!(roots, sizes[0], "n = {n}");
        for (i, d) in deps.iter().enumerate() {
            assert!(
                d.iter().all(|&x| x < i),
                "app {i} depends on a later app: {d:?}"
            );
        }
    }
}

#[test]
fn medians_of_odd_and_even_counts() {
    let cases: [(&[f64], f64); 3] = [
        (&[3.0, 1.0, 2.0], 2.0),
        (&[4.0, 1.0, 2.0, 3.0], 2.5),
        (&[7.0], 7.0),
    ];
    for (samples, want) in cases {
        assert_eq!(median(samples), want);
    }
}
