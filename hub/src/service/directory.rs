//! The directory: the authority-signed list of members the hub checks every call against.
//! Installing a newer one (handed in, or published through another hub process sharing the
//! store), and the `GetDirectory` and `PublishDirectory` calls.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::pb::{
    GetDirectoryRequest, GetDirectoryResponse, PublishDirectoryResponse, Signed,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{HubError, HubService};
use crate::store::HubStore;

/// A directory as the store keeps it, decoded and checked against the authority's key.
pub(super) fn stored_directory(
    bytes: &[u8],
    authority: &VerifyingKey,
) -> Result<VerifiedDirectory, HubError> {
    let signed = Signed::decode(bytes)
        .map_err(|e| HubError::Invalid(format!("the stored directory does not decode: {e}")))?;
    Ok(VerifiedDirectory::verify(&signed, authority, 0)?)
}

impl<S: HubStore> HubService<S> {
    pub(crate) fn directory(&self) -> Result<Arc<VerifiedDirectory>, HubError> {
        self.state
            .directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(HubError::NoDirectory)
    }

    /// Installs a directory if the authority signed it and it is newer than the current one.
    pub async fn publish_directory(&self, signed: &Signed) -> Result<u64, HubError> {
        let held = self.directory().map(|d| d.version()).unwrap_or(0);
        let verified = VerifiedDirectory::verify(signed, &self.state.authority, held)?;
        let version = verified.version();
        self.state
            .store
            .save_directory(version, &signed.encode_to_vec(), self.state.now())
            .await?;
        self.install(verified);
        tracing::info!(version, "directory installed");
        Ok(version)
    }

    /// Puts `verified` in place of the directory held, unless that one is as new or newer.
    fn install(&self, verified: VerifiedDirectory) -> bool {
        let mut slot = self
            .state
            .directory
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let newer = slot.as_ref().map(|d| d.version()).unwrap_or(0) < verified.version();
        if newer {
            *slot = Some(Arc::new(verified));
        }
        newer
    }

    /// Installs the newest directory in the store if it is newer than the one held: another hub
    /// process sharing the store may have been handed it. Returns the version now held.
    pub async fn refresh_directory(&self) -> Result<u64, HubError> {
        let held = self.directory().map(|d| d.version()).unwrap_or(0);
        let Some(bytes) = self.state.store.directory().await? else {
            return Ok(held);
        };
        let verified = stored_directory(&bytes, &self.state.authority)?;
        let version = verified.version();
        if version > held && self.install(verified) {
            tracing::info!(
                version,
                "directory installed (published through another hub)"
            );
        }
        Ok(version.max(held))
    }

    pub(super) async fn do_get_directory(
        &self,
        request: Request<GetDirectoryRequest>,
    ) -> Result<Response<GetDirectoryResponse>, Status> {
        let known = request.get_ref().known_version;
        let directory = self.directory()?;
        Ok(Response::new(GetDirectoryResponse {
            directory: (directory.version() > known).then(|| directory.signed.clone()),
        }))
    }

    pub(super) async fn do_publish_directory(
        &self,
        request: Request<Signed>,
    ) -> Result<Response<PublishDirectoryResponse>, Status> {
        // Anyone with a region certificate may hand in a directory; only the authority's
        // signature makes it count.
        if request.peer_certs().is_none() {
            return Err(HubError::NoCertificate.into());
        }
        let version = self.publish_directory(request.get_ref()).await?;
        Ok(Response::new(PublishDirectoryResponse { version }))
    }
}
