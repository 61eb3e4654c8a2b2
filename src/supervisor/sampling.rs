//! The usage sampler's schedule: memory and CPU of every app every few seconds, disk now
//! and then, all off the actor's thread (the reading itself is [`crate::usage`]); and the
//! node summary it keeps current.

use super::*;

/// The usage sampler's state (see [`crate::usage`] and [`Supervisor::sample_usage`]).
#[derive(Debug, Default)]
pub(super) struct Sampling {
    /// Container id → its cgroup files, or `None` when they are not visible (the
    /// engine's one-shot stats are asked instead). Found once per container.
    pub(super) cgroups: HashMap<String, Option<usage::CgroupFiles>>,
    /// App → when, CPU nanoseconds and container of its last reading, for CPU %.
    pub(super) cpu: HashMap<String, (Instant, u64, String)>,
    /// App → the usage last published (figures move on only past [`usage::changed`]).
    pub(super) usage: BTreeMap<String, Usage>,
    /// App → bytes in its volume folders, from the last walk.
    pub(super) disk: BTreeMap<String, u64>,
    /// Free space where `data_dir` lives, from the last look.
    pub(super) data_disk: Option<DiskStatus>,
    /// Apps seen `running` since the supervisor started: a start of their container
    /// from then on is a restart (an adopted container counts from its first sighting).
    pub(super) seen_running: std::collections::HashSet<String>,
    /// App → restarts of its container heard from the engine since then.
    pub(super) restarts: BTreeMap<String, u64>,
    /// A memory/CPU sample is running (never two at once).
    pub(super) busy: bool,
    /// A disk walk is running on the blocking pool (never two at once).
    pub(super) disk_busy: bool,
    /// Memory/CPU rounds so far, for the rarer engine stats.
    pub(super) rounds: u64,
    /// Engine reachability and memory reserved as last pushed in a `status` event.
    pub(super) status_pushed: Option<(bool, u64)>,
}

/// Containers whose cgroup is not visible are asked of the engine every this many
/// sampling rounds (30 s): one-shot stats cost the engine about 2 ms of CPU each and can
/// take a second to answer (docs/performance.md, "Usage sampling").
pub(super) const STATS_EVERY: u64 = 6;
/// Engine stats asked at once.
pub(super) const STATS_PARALLEL: usize = 8;

/// Where the cgroup file systems are mounted.
pub(super) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A random number from the OS, for jitter (0 should the source fail).
pub(super) fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b)
}

/// What one sample found for one app: its container, the reading (if any) and when.
pub(super) type Sample = (String, String, Option<usage::Reading>, Instant);

impl Supervisor {
    /// The node summary of `server.status` and the `status` event.
    pub(super) fn status(&self) -> ServerStatus {
        ServerStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            engine: self.engine_status.clone(),
            last_reconcile: self.last_reconcile.clone(),
            memory: MemoryStatus {
                budget_bytes: self.memory_budget,
                reserved_bytes: self.reserved_memory(""),
            },
            disk: self.sampling.data_disk.clone(),
        }
    }

    /// Samples memory and CPU of every app with a container, off the actor's thread: an
    /// inspect the first time a container is seen (for its pid, hence its cgroup), then
    /// a few small cgroup files per app on the blocking pool; the engine's one-shot
    /// stats only for containers whose cgroup is not visible. Never two at once.
    pub(super) fn sample_usage(&mut self, ctx: &mut Context<Self>) {
        // The node summary follows within one round when the engine comes or goes or the
        // memory reserved changes (besides the stream's own keep-alive).
        let key = (self.engine_status.reachable, self.reserved_memory(""));
        if self.sampling.status_pushed != Some(key) {
            self.sampling.status_pushed = Some(key);
            let _ = self
                .shared
                .events
                .send(Event::Status(Box::new(self.status())));
        }
        if self.sampling.busy {
            return;
        }
        let targets: Vec<(String, String)> = self
            .packages
            .values()
            .filter(|p| p.state == AppState::Running || p.state.is_transitional())
            .filter_map(|p| Some((p.id.clone(), p.container_id.clone()?)))
            .collect();
        let live: std::collections::HashSet<&String> = targets.iter().map(|(_, c)| c).collect();
        self.sampling.cgroups.retain(|c, _| live.contains(c));
        // Apps without a container: memory and CPU are gone, disk stays.
        let idle: Vec<String> = self
            .sampling
            .usage
            .iter()
            .filter(|(app, u)| u.memory_bytes.is_some() && !targets.iter().any(|(a, _)| a == *app))
            .map(|(app, _)| app.clone())
            .collect();
        for app in idle {
            self.sampling.cpu.remove(&app);
            let disk = self.sampling.disk.get(&app).copied();
            self.set_usage(&app, None, None, disk);
        }
        if targets.is_empty() {
            return;
        }
        self.sampling.busy = true;
        self.sampling.rounds += 1;
        let with_stats = self.sampling.rounds % STATS_EVERY == 1;
        let known: HashMap<String, Option<usage::CgroupFiles>> = self.sampling.cgroups.clone();
        let engine = self.shared.engine.clone();
        let fut = async move {
            use futures_util::StreamExt;
            let mut pids = HashMap::new();
            for (_, c) in targets.iter().filter(|(_, c)| !known.contains_key(c)) {
                if let Ok(Some(pid)) = engine.inspect(c).await.map(|d| d.pid) {
                    pids.insert(c.clone(), pid);
                }
            }
            let read = tokio::task::spawn_blocking(move || {
                let mut files = known;
                for (c, pid) in pids {
                    files.insert(c, usage::cgroup_of(pid, std::path::Path::new(CGROUP_ROOT)));
                }
                let at = Instant::now();
                let samples: Vec<Sample> = targets
                    .into_iter()
                    .map(|(app, c)| {
                        let reading = match files.get(&c) {
                            Some(Some(f)) => match usage::read(f) {
                                Ok(r) => Some(r),
                                // Gone with its container; found again next time.
                                Err(_) => {
                                    files.remove(&c);
                                    None
                                }
                            },
                            _ => None,
                        };
                        (app, c, reading, at)
                    })
                    .collect();
                (files, samples)
            })
            .await;
            let Ok((files, mut samples)) = read else {
                return (HashMap::new(), vec![]);
            };
            // Containers whose cgroup is not visible: the engine's one-shot stats, a few
            // at a time (an answer can take a second), and only every
            // `STATS_EVERY` rounds, as they cost the engine far more than a file read.
            if with_stats {
                let asks = samples
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, c, r, _))| {
                        r.is_none() && matches!(files.get(c.as_str()), Some(None))
                    })
                    .map(|(i, (_, c, _, _))| {
                        let (engine, c) = (engine.clone(), c.clone());
                        async move { (i, engine.stats(&c).await.ok(), Instant::now()) }
                    })
                    .collect::<Vec<_>>();
                let answers: Vec<_> = futures_util::stream::iter(asks)
                    .buffer_unordered(STATS_PARALLEL)
                    .collect()
                    .await;
                for (i, reading, at) in answers {
                    samples[i].2 = reading;
                    samples[i].3 = at;
                }
            }
            (files, samples)
        };
        ctx.spawn(fut.into_actor(self).map(|(files, samples), act, _| {
            act.sampling.busy = false;
            act.sampling.cgroups.extend(files);
            for (app, container, reading, at) in samples {
                let Some(r) = reading else { continue };
                let cpu = match act.sampling.cpu.get(&app) {
                    Some((t, ns, c)) if *c == container => {
                        usage::cpu_percent((*t, *ns), (at, r.cpu_ns))
                    }
                    _ => None,
                };
                act.sampling
                    .cpu
                    .insert(app.clone(), (at, r.cpu_ns, container));
                let disk = act.sampling.disk.get(&app).copied();
                act.set_usage(&app, Some(r.memory_bytes), cpu, disk);
            }
        }));
    }

    /// Records an app's usage and pushes its `Package` when a figure moved enough.
    pub(super) fn set_usage(
        &mut self,
        app: &str,
        memory: Option<u64>,
        cpu: Option<crate::api::Percent>,
        disk: Option<u64>,
    ) {
        let Some(p) = self.packages.get_mut(app) else {
            return;
        };
        // A CPU figure needs two readings: keep the last one until then.
        let old = self.sampling.usage.get(app);
        let cpu = cpu.or_else(|| memory.and(old.and_then(|u| u.cpu_percent)));
        let new = Usage {
            memory_bytes: memory,
            cpu_percent: cpu,
            disk_bytes: disk,
            sampled_at: crate::api::now(),
        };
        if !usage::changed(old, &new, p.memory_limit_bytes) {
            return;
        }
        self.sampling.usage.insert(app.to_string(), new.clone());
        p.usage = Some(new);
        let _ = self.shared.events.send(Event::Package(Box::new(p.clone())));
    }

    /// Walks the volume folders of every installed app, one app after the other on one
    /// blocking thread, and reads the free space of `data_dir`; pushes what changed.
    pub(super) fn measure_disk(&mut self, ctx: &mut Context<Self>) {
        if self.sampling.disk_busy {
            return;
        }
        self.sampling.disk_busy = true;
        let store = self.shared.store.clone();
        let apps: Vec<String> = self
            .packages
            .values()
            .filter(|p| p.installed_version.is_some())
            .map(|p| p.id.clone())
            .collect();
        let walk = tokio::task::spawn_blocking(move || {
            let sizes: Vec<(String, u64)> = apps
                .into_iter()
                .map(|app| {
                    let size = usage::dir_size(&store.app_dir(&app), usage::DISK_WALK_LIMIT);
                    (app, size)
                })
                .collect();
            (sizes, usage::disk_status(store.data_dir()))
        });
        ctx.spawn(walk.into_actor(self).map(|walked, act, _| {
            act.sampling.disk_busy = false;
            let Ok((sizes, data_disk)) = walked else {
                return;
            };
            act.sampling.disk = sizes.iter().cloned().collect();
            for (app, size) in sizes {
                let (memory, cpu) = act
                    .sampling
                    .usage
                    .get(&app)
                    .map_or((None, None), |u| (u.memory_bytes, u.cpu_percent));
                act.set_usage(&app, memory, cpu, Some(size));
            }
            const STEP: u64 = 64 * 1024 * 1024;
            let moved = match (&act.sampling.data_disk, &data_disk) {
                (Some(a), Some(b)) => a.free_bytes.abs_diff(b.free_bytes) >= STEP,
                (a, b) => a.is_some() != b.is_some(),
            };
            if moved {
                act.sampling.data_disk = data_disk;
                let _ = act
                    .shared
                    .events
                    .send(Event::Status(Box::new(act.status())));
            }
        }));
    }
}
