//! Keeping the tor app's onion services in step with the installed apps, and reading
//! back the addresses tor wrote (see [`crate::onion`]).

use super::*;

impl Supervisor {
    /// The onion services the tor app should serve now: every app that declares onion
    /// ports and is installed or being installed, pointed at its name on the app network
    /// while it runs; with the tor app's `data` volume (host folder, path in its
    /// container). `None` when the catalog has no such tor app.
    pub(super) fn onion_services(&self) -> Option<(PathBuf, String, Vec<onion::Service>)> {
        let tor = AppId::try_from(self.onion.tor_app.clone()).ok()?;
        let tor_app = self.catalog.get(&tor)?;
        let data = tor_app
            .manifest
            .container
            .volumes
            .iter()
            .find(|v| v.is_own() && v.name == "data")?;
        let network_of = |app: &crate::catalog::CatalogApp| {
            app.manifest
                .container
                .network
                .clone()
                .unwrap_or_else(|| self.shared.default_network.clone())
        };
        let tor_network = network_of(tor_app);
        let services = self
            .catalog
            .apps
            .iter()
            .filter(|(id, _)| **id != tor)
            .filter_map(|(id, app)| {
                let spec = app.manifest.onion.as_ref()?;
                let p = self.packages.get(id.as_str())?;
                let installing = p.operation.as_ref().is_some_and(|o| {
                    o.kind == OperationKind::Install
                        && o.status == crate::api::OperationStatus::Running
                });
                (p.installed_version.is_some() || installing).then(|| onion::Service {
                    app: id.to_string(),
                    ports: spec.ports.clone(),
                    // By name only on tor's own named network: a name tor cannot
                    // resolve would make it refuse the whole file.
                    target: if p.state == AppState::Running
                        && network_of(app) == tor_network
                        && !crate::engine::is_builtin_network(&tor_network)
                    {
                        id.to_string()
                    } else {
                        "127.0.0.1".to_string()
                    },
                })
            })
            .collect();
        Some((
            self.shared.store.app_dir(tor.as_str()).join("data"),
            data.path.clone(),
            services,
        ))
    }

    /// Keeps the tor app's services file in step with the installed apps, has tor reload
    /// it when it changed, removes the keys of purged apps, and reads the addresses tor
    /// wrote. File work runs on the blocking pool, one round at a time; a round is started
    /// only when there is something to do.
    pub(super) fn sync_onion(&mut self, ctx: &mut Context<Self>) {
        if self.onion.busy {
            return;
        }
        let Some((tor_data, mount, services)) = self.onion_services() else {
            return;
        };
        let text = onion::services_file(&services, &mount);
        let purged: Vec<String> = self
            .onion
            .purging
            .iter()
            .filter(|id| {
                self.packages.get(*id).is_some_and(|p| {
                    p.installed_version.is_none()
                        && p.operation
                            .as_ref()
                            .is_none_or(|o| o.status != crate::api::OperationStatus::Running)
                })
            })
            .cloned()
            .collect();
        let missing = services
            .iter()
            .any(|s| !self.onion.addresses.contains_key(&s.app));
        let stale = self
            .onion
            .addresses
            .keys()
            .any(|a| !services.iter().any(|s| s.app == *a));
        if self.onion.written.as_deref() == Some(text.as_str())
            && purged.is_empty()
            && !missing
            && !stale
        {
            return;
        }
        self.onion.busy = true;
        let store = self.shared.store.clone();
        let apps: Vec<String> = services.iter().map(|s| s.app.clone()).collect();
        let write = text.clone();
        let purge = purged.clone();
        let work = tokio::task::spawn_blocking(move || {
            let changed = if tor_data.is_dir() {
                onion::write_services_file(&tor_data, &write)
                    .map_err(|e| format!("{}: {e}", tor_data.join(onion::SERVICES_FILE).display()))
            } else {
                Err(format!("{} does not exist yet", tor_data.display()))
            };
            for app in &purge {
                if let Some(dir) = onion::service_dir(&store, app) {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            let addresses: BTreeMap<String, String> = apps
                .iter()
                .filter_map(|a| onion::address(&store, a).ok().map(|addr| (a.clone(), addr)))
                .collect();
            (changed, addresses)
        });
        ctx.spawn(work.into_actor(self).map(move |done, act, ctx| {
            act.onion.busy = false;
            let Ok((changed, addresses)) = done else { return };
            for app in &purged {
                act.onion.purging.remove(app);
            }
            match changed {
                Ok(changed) => {
                    act.onion.written = Some(text);
                    if changed {
                        tracing::info!(tor = %act.onion.tor_app, "onion services changed; tor reloads them");
                        if let Some(tor) = act.actors.get(&act.onion.tor_app) {
                            tor.do_send(app::Signal("HUP"));
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "onion services file not written"),
            }
            if addresses != act.onion.addresses {
                act.onion.addresses = addresses;
                let ids: Vec<String> = act.packages.keys().cloned().collect();
                for id in ids {
                    let address = act.onion.addresses.get(&id).cloned();
                    if let Some(p) = act.packages.get_mut(&id) {
                        if p.onion_address != address {
                            p.onion_address = address;
                            let _ = act.shared.events.send(Event::Package(Box::new(p.clone())));
                        }
                    }
                }
            }
            let _ = ctx;
        }));
    }
}
