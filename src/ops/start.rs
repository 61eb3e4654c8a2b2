//! Start and stop: the container made (and its volume folders given to the user it runs
//! as), started, its `post_create` hooks run once and its health gate waited for; a stop
//! within the manifest's grace. Restart is a stop then a start ([`super::run`]).

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::{blocking, fetch_image, remove_quietly, OpEnv, OpError};
use crate::api::Health;
use crate::engine::{
    container_name, ContainerRuntime, ContainerSpec, EngineErrorKind, LABEL_SPEC_HASH,
};
use crate::health::{self, HealthTracker};
use crate::owner;
use crate::secrets;
use crate::spec::create_volume_dirs;
use crate::store::AppRecord;

/// How long a start waits for tor to write the onion addresses its env refers to.
const ONION_WAIT: Duration = Duration::from_secs(120);

/// Creates the container for `spec` if it is missing or has another spec hash.
async fn ensure_container(env: &OpEnv, spec: &ContainerSpec) -> Result<(), OpError> {
    let name = container_name(&spec.app);
    let engine = &env.engine;
    match engine.inspect(&name).await {
        Ok(d)
            if d.labels.get(LABEL_SPEC_HASH).map(String::as_str) == Some(spec.hash().as_str()) =>
        {
            return Ok(())
        }
        Ok(_) => {
            env.say("replacing container with a changed spec");
            engine.remove(&name).await?;
        }
        Err(e) if e.kind() == EngineErrorKind::ContainerNotFound => {}
        Err(e) => return Err(e.into()),
    }
    create_container(env, spec).await
}

/// Creates the app's container and gives the app's own volume folders to the user it runs
/// as (see [`crate::owner`]). The folders are made first; the owner is known only from the
/// created container (the manifest's user, or else the image's) and, for names, from the
/// image's own `/etc/passwd` and `/etc/group`. A user that cannot be resolved takes the
/// new container away again and fails, naming the user.
pub(super) async fn create_container(env: &OpEnv, spec: &ContainerSpec) -> Result<(), OpError> {
    let volumes: Vec<_> = env.app.manifest.container.volumes.iter().collect();
    let own: Vec<PathBuf> = volumes
        .iter()
        .filter(|v| v.is_own())
        .map(|v| env.store.app_dir(env.id()).join(&v.name))
        .collect();
    let deps: Vec<PathBuf> = spec
        .binds
        .iter()
        .filter(|b| !own.contains(&b.host))
        .map(|b| b.host.clone())
        .collect();
    let (app, store) = (env.app.clone(), env.store.clone());
    let groups = blocking(move || {
        create_volume_dirs(&app, &store).map_err(OpError::VolumeFolders)?;
        let mut groups: Vec<u32> = deps.iter().filter_map(|d| owner::folder_group(d)).collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(groups)
    })
    .await?;
    let mut spec = spec.clone();
    spec.group_add = groups;
    env.say("creating container");
    let engine = env.engine.as_ref();
    engine.create(&spec).await?;
    if own.is_empty() {
        return Ok(());
    }
    let name = container_name(env.id());
    let name = name.as_str();
    let owned = async {
        let user = engine.inspect(name).await?.user;
        let (passwd, group) = if owner::needs_image_files(&user) {
            let read = |path: &'static str| async move {
                engine
                    .read_file(name, path)
                    .await
                    .map(|f| f.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
                    .map_err(OpError::from)
            };
            (read("/etc/passwd").await?, read("/etc/group").await?)
        } else {
            (None, None)
        };
        let in_container = owner::resolve(&user, passwd.as_deref(), group.as_deref())
            .map_err(|reason| OpError::VolumeOwner { reason })?;
        // A container that starts as root manages its own files (many images start as
        // root and drop to a user of their own, fixing their data's owners as they go):
        // its folders are left as they are, never taken back to root.
        if in_container.uid == 0 {
            return Ok(());
        }
        let on_host = in_container
            .on_host(&engine.id_map())
            .map_err(|reason| OpError::VolumeOwner { reason })?;
        blocking(move || owner::own_volumes(&own, on_host).map_err(OpError::VolumeChown)).await
    }
    .await;
    if owned.is_err() {
        let _ = remove_quietly(engine, name).await;
    }
    owned
}

/// Starts the installed image's container, runs the `post_create` hooks once, and waits
/// until it is healthy (when it has a health check).
pub(super) async fn start(
    env: &OpEnv,
    record: &mut AppRecord,
    started: &mut bool,
    health: &mut Option<Health>,
) -> Result<String, OpError> {
    let installed = record
        .installed
        .clone()
        .ok_or_else(|| OpError::NotInstalled {
            app: env.id().to_string(),
        })?;
    let _slot = env.start_slots.acquire().await?;
    // Returns at once for an app whose env and command name no onion address.
    crate::onion::wait_for_addresses(&env.store, &env.app.manifest, ONION_WAIT).await?;
    let spec = env.spec_for(&installed)?;
    fetch_image(env, &installed, false).await?;
    ensure_container(env, &spec).await?;
    env.say("starting container");
    let name = container_name(env.id());
    match env.engine.start(&name).await {
        Ok(()) => {}
        Err(e) if e.kind() == EngineErrorKind::NotModified => {}
        Err(e) => return Err(e.into()),
    }
    *started = true;
    record.memory_limit = Some(spec.memory_limit);
    let started_at = Instant::now();
    if !record.hooks_done && !env.app.manifest.hooks.post_create.is_empty() {
        for (i, hook) in env.app.manifest.hooks.post_create.iter().enumerate() {
            env.say(format!(
                "post_create hook {}: {}",
                i + 1,
                hook.exec.join(" ")
            ));
            // Rendered for the engine only: messages show the command as written, so no
            // secret reaches the operation's progress, errors or logs.
            let cmd = secrets::render_all(&env.store, env.id(), &hook.exec).map_err(|source| {
                OpError::HookSecret {
                    step: i + 1,
                    source,
                }
            })?;
            let out = run_hook(env.engine.as_ref(), &name, &cmd, &hook.exec, hook.timeout).await?;
            if out != 0 {
                return Err(OpError::HookExit {
                    step: i + 1,
                    command: hook.exec.join(" "),
                    code: out,
                });
            }
        }
        record.hooks_done = true;
        env.save(record).await?;
    }
    *health = Some(wait_healthy(env, &spec, started_at).await?);
    Ok("running".into())
}

/// Runs a hook's rendered `cmd`; errors show it as `written` (secrets not rendered).
async fn run_hook(
    engine: &dyn ContainerRuntime,
    container: &str,
    cmd: &[String],
    written: &[String],
    timeout: Duration,
) -> Result<i64, OpError> {
    engine
        .exec(container, cmd, timeout)
        .await
        .map(|o| o.exit_code)
        .map_err(|source| OpError::Hook {
            command: written.join(" "),
            source,
        })
}

/// Probes until healthy, or fails once the check's start period and retries are spent.
pub(super) async fn wait_healthy(
    env: &OpEnv,
    spec: &ContainerSpec,
    since: Instant,
) -> Result<Health, OpError> {
    let Some(check) = env.health_check()? else {
        return Ok(Health::None);
    };
    env.say("waiting until healthy");
    let mut tracker = HealthTracker::started();
    // Probe faster than the interval while starting so the start ends promptly.
    let step = check.interval.min(Duration::from_millis(500));
    let deadline = check.start_period + check.interval * check.retries.max(1) + check.timeout;
    let mut last_err = String::new();
    loop {
        let result = health::probe(env.engine.as_ref(), spec, &check).await;
        let elapsed = since.elapsed();
        if let Err(e) = &result {
            last_err = e.clone();
        }
        if result.is_ok() {
            tracker.record(true, elapsed, &check);
            return Ok(Health::Healthy);
        }
        // Exit early if the container died while we waited.
        if let Ok(d) = env.engine.inspect(&container_name(&spec.app)).await {
            if !d.state.is_running() {
                return Err(OpError::ExitedWhileStarting {
                    code: d.exit_code.unwrap_or(-1),
                });
            }
        }
        if elapsed >= deadline {
            return Err(OpError::NotHealthy {
                after: Duration::from_secs(elapsed.as_secs()),
                last: last_err,
            });
        }
        tokio::time::sleep(step).await;
    }
}

pub(super) async fn stop(env: &OpEnv) -> Result<(), OpError> {
    let name = container_name(env.id());
    let timeout = env.app.manifest.container.stop_timeout;
    env.say(format!(
        "stopping (grace {})",
        humantime::format_duration(timeout)
    ));
    match env.engine.stop(&name, timeout).await {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                EngineErrorKind::NotModified | EngineErrorKind::ContainerNotFound
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn start_quietly(env: &OpEnv) -> Result<(), OpError> {
    match env.engine.start(&container_name(env.id())).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == EngineErrorKind::NotModified => Ok(()),
        Err(e) => Err(e.into()),
    }
}
