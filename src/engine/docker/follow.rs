//! Streams the dashboard reads: a container's log lines as they come, and one sample of
//! its engine stats (the usage sampler's fallback when the cgroup files are not visible).

use bollard::query_parameters::{LogsOptionsBuilder, StatsOptionsBuilder};
use bollard::Docker;
use futures_util::stream::{BoxStream, StreamExt};

use super::errors::{map_error, Target};
use crate::engine::EngineError;

/// `logs` with `follow`: the last `tail` lines, then each new one; frames are cut into
/// lines (a frame may hold several, or part of one). Ends with the container.
pub(super) fn follow_logs(
    docker: Docker,
    host: String,
    container: &str,
    tail: usize,
) -> BoxStream<'static, Result<String, EngineError>> {
    let opts = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(true)
        .tail(&tail.to_string())
        .build();
    let target = container.to_string();
    let frames = docker.logs(container, Some(opts));
    let mut partial = String::new();
    frames
        .map(move |frame| match frame {
            Ok(frame) => {
                partial.push_str(&String::from_utf8_lossy(&frame.into_bytes()));
                let mut lines = Vec::new();
                while let Some(at) = partial.find('\n') {
                    let line: String = partial.drain(..=at).collect();
                    lines.push(Ok(line.trim_end_matches(['\n', '\r']).to_string()));
                }
                futures_util::stream::iter(lines)
            }
            Err(e) => futures_util::stream::iter(vec![Err(map_error(
                &host,
                Target::Container(&target),
                e,
            ))]),
        })
        .flatten()
        .boxed()
}

/// One sample of the engine's stats for a container (`stream=false`, `one-shot=true`:
/// no wait for a second sample). Memory leaves out the inactive file cache, as `docker
/// stats` does.
pub(super) async fn stats_once(
    docker: &Docker,
    host: &str,
    container: &str,
) -> Result<crate::usage::Reading, EngineError> {
    let opts = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let mut stream = docker.stats(container, Some(opts));
    let stats = match stream.next().await {
        Some(s) => s.map_err(|e| map_error(host, Target::Container(container), e))?,
        None => {
            return Err(EngineError::Other {
                target: container.to_string(),
                reason: "the engine sent no stats".to_string(),
            })
        }
    };
    let memory = stats.memory_stats.unwrap_or_default();
    let inactive = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    let cpu = stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    Ok(crate::usage::Reading {
        memory_bytes: memory.usage.unwrap_or(0).saturating_sub(inactive),
        cpu_ns: cpu,
    })
}
