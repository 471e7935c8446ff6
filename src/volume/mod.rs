//! Volume images: the on-disk format (docs/FORMAT.md) and the block API.
//!
//! - `header.rs`: the header copies — encoding, a bounds-checked parser, feature
//!   bits, the MAC keyed from the data key.
//! - `cbt.rs`: changed-block tracking (which 512 KiB blocks changed since the last
//!   snapshot), in a file beside the image.
//! - `image.rs`: an open image — header selection, the exclusive lock, and the
//!   block API (read / write at any offset and length, flush, trim, write-zeroes,
//!   allocation) that every front end uses.
//! - `units.rs`: stored units — holes, and the hole-aware XTS every path shares
//!   (reads, snapshot restore and copy, re-key).
//! - `rekey.rs`: re-keying an image in place — chunked re-encryption behind a
//!   checksum journal, resumable after a kill (docs/FORMAT.md §9).
//! - `owner.rs`: whose volumes these are ([`VolumeOwner`]): the encryption-context
//!   key, default key alias and `kms:ViaService` the owning service uses.
//!
//! This layer knows nothing of KMS or EC2: opening an encrypted image takes a
//! callback that produces the plaintext data key. `crate::ec2` supplies it with
//! CreateGrant + Decrypt.

pub mod cbt;
pub mod header;
pub mod image;
pub mod owner;
pub mod rekey;
pub mod units;

pub use header::{Cipher, DATA_OFFSET, DATA_UNIT, Header};
pub use image::{Extent, Image};
pub use owner::VolumeOwner;
