//! The daemon's engines, and which one a session gets.
//!
//! A daemon has Soniox when it has a key, and the local engine when its
//! settings ask for it (`--engine local` or `--fallback local`); the local
//! engine is loaded once, at start, and shared by every session (sherpa-onnx
//! serialises the decoding). A session runs on the engine its client asks
//! for (the socket header's `engine`), else the daemon's default; a Soniox
//! session falls back to the local engine when the daemon or the client
//! asks for it. Every front end picks through [`Engines::for_session`], so
//! the socket and the WebSocket endpoint cannot disagree.

use std::sync::Arc;

use tracing::info;

use crate::cli::values::{EngineChoice, LocalModel};
use crate::config::{ApiKey, EngineRequest, ServiceConfig};
use crate::engine::local::LocalEngine;
use crate::engine::quota::Rejections;
use crate::engine::soniox::SonioxEngine;
use crate::engine::{Engine, RateLimiter, SessionEngines};
use crate::error::{Error, Result};

use super::Settings;
use super::admission::Admission;

/// What sessions run by default: see [`Engines::summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EngineSummary {
    /// The engine of sessions that ask for none.
    pub(crate) default: EngineChoice,
    /// The local engine's model, when the daemon runs it.
    pub(crate) local_model: Option<LocalModel>,
    /// Whether Soniox sessions fall back to the local engine.
    pub(crate) fallback: bool,
}

/// The engines of one generation of the daemon's settings.
#[derive(Debug, Clone)]
pub(crate) struct Engines {
    soniox: Option<Engine>,
    local: Option<LocalEngine>,
    default: EngineChoice,
    fallback: bool,
}

impl Engines {
    /// The engines `settings` call for, with `key` for Soniox (none: the
    /// daemon runs the local engine only; `daemon::load_key` gives none only when
    /// the default engine is local, and a client asking for Soniox then
    /// gets an error). A local engine already loaded in
    /// `previous` with the same files and model is kept, not loaded again.
    pub(crate) fn build(
        settings: &Settings,
        key: Option<ApiKey>,
        rate: &Arc<RateLimiter>,
        admission: &Admission,
        rejections: &Arc<Rejections>,
        previous: Option<&Engines>,
    ) -> Result<Engines> {
        let soniox = match key {
            Some(api_key) => Some(Engine::Soniox(
                SonioxEngine::new(ServiceConfig {
                    urls: settings.urls.clone(),
                    api_key,
                    ca_file: settings.ca_file.clone(),
                    timing: settings.timing,
                })?
                .with_rate(rate.clone())
                .with_rejections(rejections.clone())
                .with_warm_pool(settings.warm_pool, {
                    let admission = admission.clone();
                    Arc::new(move || admission.free_slots())
                }),
            )),
            None => None,
        };
        let wants_local = settings.engine == EngineChoice::Local || settings.fallback_local;
        let local = if wants_local {
            let fresh = LocalEngine::new(&settings.local)?;
            let loaded = previous
                .and_then(|p| p.local.as_ref())
                .filter(|old| old.dir() == fresh.dir() && old.model() == fresh.model());
            Some(loaded.cloned().unwrap_or(fresh))
        } else {
            None
        };
        Ok(Engines {
            soniox,
            local,
            default: settings.engine,
            fallback: settings.fallback_local,
        })
    }

    /// Loads the local engine, if the daemon runs it, so the first session
    /// does not wait for it (and missing or broken files show at start).
    pub(crate) async fn preload(&self) -> Result<()> {
        if let Some(local) = &self.local {
            local.preload().await?;
            info!(model = local.model().name(), dir = %local.dir().display(), "local engine loaded");
        }
        Ok(())
    }

    /// What a session that asks for nothing runs, for front ends that
    /// describe the daemon (Wyoming's `info`).
    pub(crate) fn summary(&self) -> EngineSummary {
        EngineSummary {
            default: self.default,
            local_model: self.local.as_ref().map(LocalEngine::model),
            fallback: self.fallback && self.local.is_some(),
        }
    }

    /// Whether a session that asks for `request` may run on the local
    /// engine, at its start or by falling back (so its audio must be what
    /// that engine takes: mono).
    pub(crate) fn may_run_local(&self, request: EngineRequest) -> bool {
        match request.engine.unwrap_or(self.default) {
            EngineChoice::Local => true,
            EngineChoice::Soniox => {
                (request.fallback_local || self.fallback) && self.local.is_some()
            }
        }
    }

    /// The engines for a session whose client asked for `request`.
    /// `partials`: whether the client wants non-final tokens (the local
    /// engine then decodes as the audio comes, not only at segment ends).
    pub(crate) fn for_session(
        &self,
        request: EngineRequest,
        partials: bool,
    ) -> Result<SessionEngines> {
        let local = || {
            self.local.clone().map(|l| Engine::Local(l.with_partials(partials))).ok_or_else(|| {
                Error::Config(
                    "this daemon does not run the local engine (it needs serve --engine local or --fallback local)"
                        .into(),
                )
            })
        };
        match request.engine.unwrap_or(self.default) {
            EngineChoice::Local => Ok(SessionEngines {
                engine: local()?,
                fallback: None,
            }),
            EngineChoice::Soniox => Ok(SessionEngines {
                engine: self.soniox.clone().ok_or_else(|| {
                    Error::Config(
                        "this daemon has no Soniox API key: ask for the local engine".into(),
                    )
                })?,
                fallback: if request.fallback_local || self.fallback {
                    Some(local()?)
                } else {
                    None
                },
            }),
        }
    }
}
