//! OCI images for Kiln: content digests, image references, platforms, an on-disk content store,
//! a registry client (pull, push, cross-repository mounts, token and basic auth, plain-HTTP and
//! insecure registries, retries) and layer tars (apply with whiteouts, build deterministically).
//!
//! It knows nothing of Dockerfiles, LLB or gRPC: the engine uses it to pull base images,
//! unpack layers into snapshots, turn snapshot diffs into layers and push results.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kiln_oci::{ContentStore, NoCredentials, Platform, Reference, RegistryClient, RegistryConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = ContentStore::open("/var/lib/kiln/content")?;
//! let client = RegistryClient::new(RegistryConfig::default(), Arc::new(NoCredentials));
//! let image = Reference::parse("127.0.0.1:5000/team/app:v1")?;
//! let resolved = client.resolve(&image, &Platform::host()).await?;
//! for layer in resolved.manifest.layers() {
//!     let digest = kiln_oci::Digest::try_from(layer.digest())?;
//!     client.fetch_blob(&image, &digest, &store).await?;
//!     let tar = kiln_oci::layer::open_layer(&store.path(&digest))?;
//!     kiln_oci::layer::apply_layer(tar, "/tmp/rootfs".as_ref(), &Default::default())?;
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod digest;
pub mod layer;
pub mod media_types;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use auth::{
    CredentialSource, Credentials, DockerConfigCredentials, NoCredentials, StaticCredentials,
};
pub use digest::{Digest, DigestParseError, Sha256Reader, Sha256Writer};
pub use layer::{
    apply_layer, open_layer, write_layer_from_diff, write_layer_from_overlay_upper, ApplyOptions,
    ApplyStats, Compression, IdMap, LayerBlob, LayerError, LayerWriter, WhiteoutMode,
};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
pub use registry::{HostConfig, RegistryClient, RegistryConfig, RegistryError, ResolvedImage};

pub use store::{BlobWriter, ContentStore, StoreError};
