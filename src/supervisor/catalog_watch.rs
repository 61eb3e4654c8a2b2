//! Catalog changes: a cheap fingerprint of `apps_dir` to notice an edit, and applying a
//! catalog read off the actors' thread to the app actors.

use super::*;

/// A cheap summary of `apps_dir`: each entry's name with the SHA-256 of its
/// `manifest.yml` (one readdir and one small read per app). Any edit, added or removed
/// app changes it; file times are not used, as two edits within one clock tick of the
/// filesystem can leave them equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogFingerprint(Vec<(std::ffi::OsString, Option<[u8; 32]>)>);

impl CatalogFingerprint {
    /// Reads `apps_dir` now; an unreadable folder gives an empty fingerprint.
    pub fn of(apps_dir: &std::path::Path) -> Self {
        use sha2::{Digest, Sha256};
        let Ok(entries) = std::fs::read_dir(apps_dir) else {
            return CatalogFingerprint::default();
        };
        let mut seen: Vec<_> = entries
            .flatten()
            .map(|e| {
                let manifest = e.path().join(crate::catalog::MANIFEST_FILE);
                let digest = std::fs::read(manifest)
                    .ok()
                    .map(|bytes| Sha256::digest(bytes).into());
                (e.file_name(), digest)
            })
            .collect();
        seen.sort();
        CatalogFingerprint(seen)
    }
}

impl Handler<ReloadCatalog> for Supervisor {
    type Result = ResponseActFuture<Self, Result<usize, AppError>>;
    fn handle(&mut self, _: ReloadCatalog, _: &mut Context<Self>) -> Self::Result {
        let apps_dir = self.apps_dir.clone();
        let load = tokio::task::spawn_blocking(move || {
            (CatalogFingerprint::of(&apps_dir), Catalog::load(&apps_dir))
        });
        Box::pin(load.into_actor(self).map(|loaded, act, ctx| {
            let (seen, (catalog, problems)) =
                loaded.map_err(|e| AppError::Internal(format!("catalog load: {e}")))?;
            Ok(act.apply_catalog(seen, catalog, problems, ctx))
        }))
    }
}

impl Supervisor {
    /// Applies a catalog read off the actors' thread: changed apps get their new manifest, new apps an actor, and
    /// apps that left it are retired (see [`app::LeaveCatalog`]). Answers the number of
    /// catalog apps.
    pub(super) fn apply_catalog(
        &mut self,
        seen: CatalogFingerprint,
        catalog: Catalog,
        problems: Vec<crate::manifest::Problem>,
        ctx: &mut Context<Self>,
    ) -> usize {
        self.catalog_seen = seen;
        for p in &problems {
            tracing::warn!("{p}");
        }
        self.catalog = catalog;
        for id in self.catalog.topo_order() {
            match self.actors.get(id.as_str()) {
                Some(addr) => {
                    if let Some(app) = self.catalog.get(&id) {
                        addr.do_send(app::CatalogUpdate(self.hold_memory_raise(app)));
                    }
                }
                None => self.spawn_app(&id, ctx),
            }
        }
        let gone: Vec<(String, Addr<AppActor>)> = self
            .actors
            .iter()
            .filter(|(id, _)| !self.catalog.apps.keys().any(|k| k.as_str() == id.as_str()))
            .map(|(id, addr)| (id.clone(), addr.clone()))
            .collect();
        for (id, addr) in gone {
            let fut = addr.send(app::LeaveCatalog);
            ctx.spawn(fut.into_actor(self).map(move |stopped, act, ctx| {
                // Only drop the actor we asked: a reload may have spawned a new one since.
                if stopped.unwrap_or(false) && act.actors.get(&id).is_some_and(|a| *a == addr) {
                    act.actors.remove(&id);
                    act.packages.remove(&id);
                    // The app came back while its actor was stopping: give it a new one.
                    if let Ok(app_id) = AppId::try_from(id) {
                        if act.catalog.get(&app_id).is_some() {
                            act.spawn_app(&app_id, ctx);
                        }
                    }
                }
            }));
        }
        self.catalog.apps.len()
    }
}
