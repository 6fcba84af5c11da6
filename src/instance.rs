//! Creating an instance (`procsync init`): the store, its sys_id, its TLS
//! identity and the first `admin` user, whose token goes to a 0600 file.
//! Never touches an existing instance.

/// The store's file in a data directory.
pub use crate::store::DB_FILE;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::ids::{new_sys_id, new_token, now_millis};
use crate::store::{InstanceInfo, Store, StoreError};

/// File in the data directory holding the admin user's token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// File in the data directory where `serve` writes its admin address.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";
/// File in the data directory where `serve` writes its peer address.
pub const PEER_ADDR_FILE: &str = "peer.addr";
/// The instance certificate, for peers and TLS clients.
pub const CERT_FILE: &str = "instance.crt";

/// What `init` made.
pub struct Initialized {
    pub info: InstanceInfo,
    pub token_file: PathBuf,
}

pub fn init(dir: &Path, name: &str) -> Result<Initialized, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(StoreError::Invalid(
            "the instance name must be 1-100 characters".to_string(),
        ));
    }
    let identity = crate::identity::generate(name).map_err(StoreError::Storage)?;
    let info = InstanceInfo {
        sys_id: new_sys_id(),
        name: name.to_string(),
        created_on: now_millis(),
        cert_pem: identity.cert_pem,
        key_pem: identity.key_pem,
        fingerprint: identity.fingerprint,
    };
    let token = new_token();
    Store::create(dir, &info, &token)?;
    let token_file = dir.join(ADMIN_TOKEN_FILE);
    write_private(&token_file, &format!("{token}\n"))?;
    std::fs::write(dir.join(CERT_FILE), &info.cert_pem)
        .map_err(|e| StoreError::Storage(format!("cannot write {CERT_FILE}: {e}")))?;
    Ok(Initialized { info, token_file })
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), StoreError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Storage(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::Storage(format!("cannot write {}: {e}", path.display())))
}
