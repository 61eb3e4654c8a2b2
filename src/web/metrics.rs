//! `/metrics`: RPC counters and latency histograms kept here, plus app states and the last
//! reconcile asked of the supervisor at scrape time, in the Prometheus text format.
//!
//! It only counts and renders; it keeps no copy of app state between scrapes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::api::{AppState, Package, ServerStatus};

/// Upper bounds (seconds) of the RPC latency histogram buckets.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Counts and latency of one RPC method.
#[derive(Debug, Default, Clone)]
struct MethodStats {
    ok: u64,
    error: u64,
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
    sum_seconds: f64,
}

/// RPC statistics shared by every worker.
#[derive(Debug, Default)]
pub struct Metrics {
    methods: Mutex<BTreeMap<String, MethodStats>>,
}

impl Metrics {
    /// Records one call of `method` (already reduced to a known name or `unknown`).
    pub fn record(&self, method: &str, ok: bool, took: Duration) {
        let mut methods = self
            .methods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stats = methods.entry(method.to_string()).or_default();
        if ok {
            stats.ok += 1;
        } else {
            stats.error += 1;
        }
        let secs = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        stats.buckets[slot] += 1;
        stats.sum_seconds += secs;
    }

    /// The whole exposition: RPC statistics, then whatever the supervisor answered.
    pub fn render(&self, packages: Option<&[Package]>, status: Option<&ServerStatus>) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results below are ignored for that reason.
        let _ = writeln!(
            out,
            "# HELP archipelago_build_info Version of this archipelago."
        );
        let _ = writeln!(out, "# TYPE archipelago_build_info gauge");
        let _ = writeln!(
            out,
            "archipelago_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        self.render_rpc(&mut out);
        if let Some(packages) = packages {
            render_packages(&mut out, packages);
        }
        if let Some(status) = status {
            render_status(&mut out, status);
        }
        out
    }

    fn render_rpc(&self, out: &mut String) {
        let methods = self
            .methods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP archipelago_rpc_requests_total JSON-RPC calls by method and outcome."
        );
        let _ = writeln!(out, "# TYPE archipelago_rpc_requests_total counter");
        for (method, s) in &methods {
            let _ = writeln!(
                out,
                "archipelago_rpc_requests_total{{method=\"{method}\",outcome=\"ok\"}} {}",
                s.ok
            );
            let _ = writeln!(
                out,
                "archipelago_rpc_requests_total{{method=\"{method}\",outcome=\"error\"}} {}",
                s.error
            );
        }
        let _ = writeln!(
            out,
            "# HELP archipelago_rpc_request_duration_seconds Time to answer a JSON-RPC call."
        );
        let _ = writeln!(
            out,
            "# TYPE archipelago_rpc_request_duration_seconds histogram"
        );
        for (method, s) in &methods {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "archipelago_rpc_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[BUCKETS.len()];
            let _ = writeln!(out, "archipelago_rpc_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(
                out,
                "archipelago_rpc_request_duration_seconds_sum{{method=\"{method}\"}} {}",
                s.sum_seconds
            );
            let _ = writeln!(out, "archipelago_rpc_request_duration_seconds_count{{method=\"{method}\"}} {cumulative}");
        }
    }
}

/// Per-app gauges: one `archipelago_app_state` series per state (1 for the current one).
fn render_packages(out: &mut String, packages: &[Package]) {
    let _ = writeln!(
        out,
        "# HELP archipelago_app_state Current state of each app (1 for the state it is in)."
    );
    let _ = writeln!(out, "# TYPE archipelago_app_state gauge");
    for p in packages {
        for state in AppState::ALL {
            let _ = writeln!(
                out,
                "archipelago_app_state{{app=\"{}\",state=\"{}\"}} {}",
                label(&p.id),
                state.as_str(),
                u8::from(p.state == state)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP archipelago_app_memory_limit_bytes Memory limit of each app."
    );
    let _ = writeln!(out, "# TYPE archipelago_app_memory_limit_bytes gauge");
    for p in packages {
        let _ = writeln!(
            out,
            "archipelago_app_memory_limit_bytes{{app=\"{}\"}} {}",
            label(&p.id),
            p.memory_limit_bytes
        );
    }
    render_usage(out, packages);
    let _ = writeln!(out, "# HELP archipelago_app_update_available 1 when the catalog holds a newer version than the installed one.");
    let _ = writeln!(out, "# TYPE archipelago_app_update_available gauge");
    for p in packages {
        let _ = writeln!(
            out,
            "archipelago_app_update_available{{app=\"{}\"}} {}",
            label(&p.id),
            u8::from(p.update_available)
        );
    }
}

/// Engine reachability, the last reconcile and the memory budget.
/// Reads one figure of a package.
type Figure<'a> = &'a dyn Fn(&Package) -> Option<f64>;

/// What each app uses, as the sampler last measured it (apps without a figure are left
/// out of that metric), and its restarts.
fn render_usage(out: &mut String, packages: &[Package]) {
    let usage = |p: &Package| p.usage.clone();
    let metrics: [(&str, &str, &str, Figure); 4] = [
        (
            "archipelago_app_memory_bytes",
            "Memory in use by each app's container, inactive file cache left out.",
            "gauge",
            &|p| usage(p)?.memory_bytes.map(|b| b as f64),
        ),
        (
            "archipelago_app_cpu_percent",
            "CPU of each app over the last sampling interval (100 = one core).",
            "gauge",
            &|p| usage(p)?.cpu_percent.map(|c| c.0),
        ),
        (
            "archipelago_app_disk_bytes",
            "Bytes in each app's volume folders, from the last walk.",
            "gauge",
            &|p| usage(p)?.disk_bytes.map(|b| b as f64),
        ),
        (
            "archipelago_app_restarts_total",
            "Restarts of each app's container since archipelago started.",
            "counter",
            &|p| Some(p.restarts as f64),
        ),
    ];
    for (name, help, kind, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for p in packages {
            if let Some(v) = value(p) {
                let _ = writeln!(out, "{name}{{app=\"{}\"}} {v}", label(&p.id));
            }
        }
    }
}

fn render_status(out: &mut String, s: &ServerStatus) {
    let gauges: [(&str, &str, f64); 5] = [
        (
            "archipelago_engine_reachable",
            "1 when the container engine answers.",
            f64::from(u8::from(s.engine.reachable)),
        ),
        (
            "archipelago_reconcile_duration_seconds",
            "Duration of the last reconcile pass.",
            s.last_reconcile.took_ms as f64 / 1000.0,
        ),
        (
            "archipelago_reconcile_actions",
            "Actions taken by the last reconcile pass.",
            s.last_reconcile.actions as f64,
        ),
        (
            "archipelago_memory_reserved_bytes",
            "Sum of the memory limits of the apps meant to run.",
            s.memory.reserved_bytes as f64,
        ),
        (
            "archipelago_memory_budget_bytes",
            "Configured memory budget (0 when none).",
            s.memory.budget_bytes.unwrap_or(0) as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
    if let Some(disk) = &s.disk {
        for (name, help, value) in [
            (
                "archipelago_data_dir_free_bytes",
                "Free space on the file system of data_dir.",
                disk.free_bytes,
            ),
            (
                "archipelago_data_dir_size_bytes",
                "Size of the file system of data_dir.",
                disk.total_bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

/// Escapes a label value (app ids are validated, but the exposition must stay well formed).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_outcomes() {
        let m = Metrics::default();
        m.record("package.list", true, Duration::from_micros(500));
        m.record("package.list", true, Duration::from_millis(20));
        m.record("package.list", false, Duration::from_secs(9));
        let text = m.render(None, None);
        for want in [
            "archipelago_rpc_requests_total{method=\"package.list\",outcome=\"ok\"} 2",
            "archipelago_rpc_requests_total{method=\"package.list\",outcome=\"error\"} 1",
            "archipelago_rpc_request_duration_seconds_bucket{method=\"package.list\",le=\"0.001\"} 1",
            "archipelago_rpc_request_duration_seconds_bucket{method=\"package.list\",le=\"0.025\"} 2",
            "archipelago_rpc_request_duration_seconds_bucket{method=\"package.list\",le=\"5\"} 2",
            "archipelago_rpc_request_duration_seconds_bucket{method=\"package.list\",le=\"+Inf\"} 3",
            "archipelago_rpc_request_duration_seconds_count{method=\"package.list\"} 3",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn label_escaping() {
        let cases = [
            ("a", "a"),
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("a\nb", "a\\nb"),
        ];
        for (input, want) in cases {
            assert_eq!(label(input), want);
        }
    }
}
