//! `--sampling-only`: what the usage sampler costs (docs/performance.md, "Usage
//! sampling"). A real `archipelago serve` runs `--apps` busybox apps for
//! `--sampling-window`; its CPU over that window (sampler, disk walks and reconcile ticks
//! together) is the figure of record. Then the two ways of reading a container's memory
//! and CPU are timed in this process on the same containers: its cgroup files, and the
//! engine's one-shot stats (with the engine's own CPU for them).

use std::path::Path;

use archipelago::engine::{ContainerRuntime, DockerRuntime};
use archipelago::usage;

use super::*;

/// Rounds of cgroup reads (every container once per round).
const CGROUP_ROUNDS: u32 = 2_000;
/// Rounds of engine stats (every container once per round).
const STATS_ROUNDS: u32 = 3;

/// CPU of the test engine's dockerd, in clock ticks, when its pid file is there.
fn dockerd_ticks() -> Option<u64> {
    let pid = std::fs::read_to_string("/tmp/archipelago-test/docker.pid").ok()?;
    cpu_ticks(pid.trim().parse().ok()?).ok()
}

impl Bench {
    pub(crate) async fn sampling(&mut self, n: usize) -> Result<()> {
        let prefix = format!("{}u", self.tag);
        let node = Node::write(&self.root, &prefix, n, &self.args.image, true)?;
        let interval = self.args.sampling_reconcile;
        let mut serve = Serve::spawn(&self.bin, &node, &self.args.host, interval)?;
        let mut client = serve.client().await?;
        wait_all_running(&mut client, &node.ids, Duration::from_secs(180)).await?;
        // Past the first disk walk and the first samples of every app.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let pid = serve.pid();
        let window = self.args.sampling_window;
        let (cpu0, engine0, t0) = (cpu_ticks(pid)?, dockerd_ticks(), Instant::now());
        tokio::time::sleep(window).await;
        let took = t0.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(pid)? - cpu0) as f64 / self.clk_tck / took * 100.0;
        let engine = engine0
            .zip(dockerd_ticks())
            .map(|(a, b)| (b - a) as f64 / self.clk_tck / took * 100.0);
        let list = client
            .call("package.list", Value::Null)
            .await
            .map_err(|e| BenchError::Failed(format!("package.list: {e}")))?;
        let sampled = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["usage"]["memory_bytes"].is_u64())
            .count();
        if sampled < n {
            return Err(BenchError::Failed(format!(
                "only {sampled} of {n} apps have a memory figure after {window:?}"
            )));
        }
        self.record(
            "sampling",
            &format!(
                "serve CPU, % of one core (sampler every {:?}, reconcile every {interval:?})",
                usage::SAMPLE_INTERVAL
            ),
            n,
            "%",
            vec![cpu],
            Some("< 1 %"),
        );
        if let Some(engine) = engine {
            self.record(
                "sampling",
                "dockerd CPU meanwhile, %",
                n,
                "%",
                vec![engine],
                None,
            );
        }
        drop(serve);

        // The readers alone, on the same (still running) containers.
        let engine = DockerRuntime::connect(&self.args.host)
            .await
            .map_err(|e| BenchError::Failed(format!("connect: {e}")))?;
        let mut files = vec![];
        for i in 0..n {
            let c = node.container(i);
            let details = engine
                .inspect(&c)
                .await
                .map_err(|e| BenchError::Failed(format!("inspect {c}: {e}")))?;
            files.push(
                details
                    .pid
                    .and_then(|p| usage::cgroup_of(p, Path::new("/sys/fs/cgroup"))),
            );
        }
        let visible: Vec<_> = files.iter().flatten().collect();
        if visible.len() == n {
            let me = std::process::id();
            let (c0, t0) = (cpu_ticks(me)?, Instant::now());
            for _ in 0..CGROUP_ROUNDS {
                for f in &visible {
                    usage::read(f).map_err(io_err("read cgroup files"))?;
                }
            }
            let wall = ms(t0.elapsed()) / f64::from(CGROUP_ROUNDS);
            let cpu =
                (cpu_ticks(me)? - c0) as f64 / self.clk_tck * 1000.0 / f64::from(CGROUP_ROUNDS);
            self.record(
                "sampling",
                "cgroup files, one round: wall",
                n,
                "ms",
                vec![wall],
                None,
            );
            self.record(
                "sampling",
                "cgroup files, one round: CPU",
                n,
                "ms",
                vec![cpu],
                None,
            );
        } else {
            self.notes.push(format!(
                "sampling: only {} of {n} cgroups visible; cgroup reads not timed",
                visible.len()
            ));
        }
        let (e0, c0, t0) = (
            dockerd_ticks(),
            cpu_ticks(std::process::id())?,
            Instant::now(),
        );
        for _ in 0..STATS_ROUNDS {
            // As the supervisor asks them: 8 at a time.
            let answers: Vec<_> = stream::iter((0..n).map(|i| {
                let (engine, c) = (&engine, node.container(i));
                async move {
                    engine
                        .stats(&c)
                        .await
                        .map_err(|e| format!("stats {c}: {e}"))
                }
            }))
            .buffer_unordered(8)
            .collect()
            .await;
            if let Some(Err(e)) = answers.into_iter().find(|a| a.is_err()) {
                return Err(BenchError::Failed(e));
            }
        }
        let wall = ms(t0.elapsed()) / f64::from(STATS_ROUNDS);
        let own = (cpu_ticks(std::process::id())? - c0) as f64 / self.clk_tck * 1000.0
            / f64::from(STATS_ROUNDS);
        self.record(
            "sampling",
            "engine one-shot stats, one round: wall",
            n,
            "ms",
            vec![wall],
            None,
        );
        self.record(
            "sampling",
            "engine one-shot stats, one round: client CPU",
            n,
            "ms",
            vec![own],
            None,
        );
        if let Some((a, b)) = e0.zip(dockerd_ticks()) {
            let engine_cpu = (b - a) as f64 / self.clk_tck * 1000.0 / f64::from(STATS_ROUNDS);
            self.record(
                "sampling",
                "engine one-shot stats, one round: dockerd CPU",
                n,
                "ms",
                vec![engine_cpu],
                None,
            );
        }
        Ok(())
    }
}
