//! What each adapter writes itself, and the one implementation of
//! [`Backend`] on top of it: the trait object's boxing, the shared
//! generation probe, and "cannot" for what a kind of server does not do.

use std::future::Future;

use crate::backend::{Backend, BackendError, BoxFuture, Discovery, Loaded};
use crate::endpoint::Endpoint;
use crate::http::Http;
use crate::kind::BackendKind;

pub(crate) trait Adapter: Send + Sync + 'static {
    const KIND: BackendKind;

    fn http(&self) -> &Http;

    /// What the server has, read over its own API: [`Backend::discover`].
    fn discover(&self) -> impl Future<Output = Result<Discovery, BackendError>> + Send;

    /// Loads a model, for servers that can: [`Backend::load`].
    fn load(&self, _model: String) -> impl Future<Output = Result<Loaded, BackendError>> + Send {
        async { Err(cannot(Self::KIND, "load models")) }
    }

    /// Unloads a model, for servers that can: [`Backend::unload`].
    fn unload(&self, _model: String) -> impl Future<Output = Result<(), BackendError>> + Send {
        async { Err(cannot(Self::KIND, "unload models")) }
    }
}

pub(crate) fn cannot(kind: BackendKind, what: &str) -> BackendError {
    BackendError::Unsupported {
        kind,
        what: what.to_string(),
    }
}

impl<T: Adapter> Backend for T {
    fn kind(&self) -> BackendKind {
        T::KIND
    }

    fn endpoint(&self) -> &Endpoint {
        &self.http().endpoint
    }

    fn discover(&self) -> BoxFuture<'_, Result<Discovery, BackendError>> {
        Box::pin(Adapter::discover(self))
    }

    fn generate(&self, model: &str) -> BoxFuture<'_, Result<(), BackendError>> {
        let model = model.to_string();
        // Every kind serves OpenAI's chat path: one probe for all.
        Box::pin(async move { self.http().generate_one_token(&model).await })
    }

    fn load(&self, model: &str) -> BoxFuture<'_, Result<Loaded, BackendError>> {
        Box::pin(Adapter::load(self, model.to_string()))
    }

    fn unload(&self, model: &str) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(Adapter::unload(self, model.to_string()))
    }
}
