//! RPC under load, measured against a real `archipelago serve` and the test dockerd: while
//! 10 apps are each in an 8 s stop, `package.list` and `package.get` over HTTP keep
//! answering fast, and every answer shows each app `stopping` until its own stop ends.
//! The test prints the figures (samples, p50, p99, max) that docs/performance.md quotes.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::docker_host;
use common::serve;
use serve::{require_engine, wait_state, ServeNode};

const APPS: usize = 10;
/// Each app takes 8 s to stop after SIGTERM.
const SLOW_STOP: &str = "trap 'sleep 8; exit 0' TERM; while true; do sleep 1 & wait $!; done";
/// Gap between two samples.
const EVERY: Duration = Duration::from_millis(20);
/// The whole sampling phase is bounded by this.
const AT_MOST: Duration = Duration::from_secs(30);
/// The figure: `package.list` answers within this at p99.
const P99_LIMIT: Duration = Duration::from_millis(50);

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn figures(name: &str, samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
    let max = *samples.last().unwrap();
    println!(
        "{name}: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    (p50, p99, max)
}

#[actix_web::test]
async fn package_list_stays_fast_while_ten_apps_stop_slowly() {
    require_engine().await;
    let node = ServeNode::new("load");
    let ids: Vec<String> = (0..APPS)
        .map(|i| {
            node.app(
                &format!("app{i}"),
                "1",
                SLOW_STOP,
                "  network: none\n  stop_timeout: 30s\n",
            )
        })
        .collect();
    // First boot installs and starts the default apps.
    let server = node.serve(&docker_host(), &ids);
    let mut c = server.client().await;
    for id in &ids {
        wait_state(&mut c, id, "running", Duration::from_secs(120)).await;
    }

    // Ask every app to stop; each answer comes at once with a running operation.
    let mut stop_calls = Vec::new();
    let mut stop_sent = BTreeMap::new();
    for id in &ids {
        let t = Instant::now();
        let r = c
            .call("package.stop", json!({ "id": id }))
            .await
            .unwrap_or_else(|e| panic!("package.stop {id}: {e}"));
        stop_calls.push(t.elapsed());
        stop_sent.insert(id.clone(), t);
        assert_eq!(r["operation"]["status"], "running", "{id}: {r}");
    }

    // Sample until every stop has ended: one package.list and one package.get per sample.
    let began = Instant::now();
    let mut list_lat = Vec::new();
    let mut get_lat = Vec::new();
    let mut stopped_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut sample = 0usize;
    while stopped_at.len() < APPS {
        assert!(
            began.elapsed() < AT_MOST,
            "stops did not all end within {AT_MOST:?}; stopped: {stopped_at:?}"
        );
        let t = Instant::now();
        let list = c.call("package.list", Value::Null).await.unwrap();
        list_lat.push(t.elapsed());
        let at = began.elapsed();
        let states: BTreeMap<&str, &str> = list
            .as_array()
            .expect("package.list answers an array")
            .iter()
            .map(|p| (p["id"].as_str().unwrap(), p["state"].as_str().unwrap()))
            .collect();
        for id in &ids {
            let state = states.get(id.as_str()).copied().unwrap_or("absent");
            match (state, stopped_at.contains_key(id)) {
                ("stopping", false) => {}
                ("stopped", _) => {
                    stopped_at.entry(id.clone()).or_insert(at);
                }
                (other, _) => panic!(
                    "sample {sample} at {at:?}: {id} reads {other}{}",
                    if stopped_at.contains_key(id) {
                        " after its stop ended"
                    } else {
                        " during its stop"
                    }
                ),
            }
        }
        // package.get of one app per sample, in turn; its state must agree.
        let id = &ids[sample % APPS];
        let t = Instant::now();
        let p = serve::get(&mut c, id).await;
        get_lat.push(t.elapsed());
        let expected = if stopped_at.contains_key(id) {
            &["stopped"][..]
        } else {
            &["stopping", "stopped"][..]
        };
        assert!(
            expected.contains(&p["state"].as_str().unwrap_or("")),
            "sample {sample}: package.get {id} reads {}",
            p["state"]
        );
        sample += 1;
        tokio::time::sleep(EVERY).await;
    }

    // How long each stop took, from its request to the first sample that saw it stopped.
    let took: Vec<Duration> = ids
        .iter()
        .map(|id| (began + stopped_at[id]).duration_since(stop_sent[id]))
        .collect();
    let first = took.iter().min().unwrap();
    let last = took.iter().max().unwrap();
    println!(
        "{APPS} stops took {first:?} … {last:?} each (the app needs 8 s), sampled for {:?}",
        began.elapsed()
    );
    let (_, list_p99, _) = figures("package.list", &mut list_lat);
    figures("package.get", &mut get_lat);
    figures("package.stop", &mut stop_calls);
    // The server's own view of the same calls (handler time, without the client's side).
    let metrics = archipelago::ctl::http_request(
        "GET",
        &format!("{}/metrics", server.base),
        &[],
        b"",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    let buckets: Vec<String> = text
        .lines()
        .filter(|l| {
            l.starts_with("archipelago_rpc_request_duration_seconds_bucket{method=\"package.list\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let n = l.rsplit(' ').next()?;
            Some(format!("le {le}: {n}"))
        })
        .collect();
    println!(
        "package.list server-side histogram (cumulative, whole run): {}",
        buckets.join(", ")
    );
    // Stop operations the supervisor started (one per request is expected).
    let stops = server
        .log()
        .iter()
        .filter(|l| l.contains("operation started") && l.contains("kind=Stop"))
        .count();
    println!("supervisor started {stops} stop operations for {APPS} requests");
    for line in server.warnings() {
        println!("supervisor: {line}");
    }
    assert!(
        *first >= Duration::from_millis(7500),
        "an app was stopped after {first:?}: the stops were not slow, the test measured nothing"
    );
    assert!(
        list_lat.len() >= 100,
        "only {} samples of package.list",
        list_lat.len()
    );
    assert!(
        list_p99 < P99_LIMIT,
        "package.list p99 {list_p99:?} is over {P99_LIMIT:?}"
    );
    // All 10 were answered at once: the last stop request left before the first stop ended.
    let spread = stop_sent
        .values()
        .max()
        .unwrap()
        .duration_since(*stop_sent.values().min().unwrap());
    assert!(
        spread < Duration::from_secs(2),
        "stop requests took {spread:?}"
    );
}
