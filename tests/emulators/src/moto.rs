//! moto_server (from PyPI, in a venv under `.local/`) as the Secrets Manager
//! emulator.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::supervised::{Supervised, install_once};
use crate::{Result, free_port, workspace_root};

/// A running moto_server.
pub struct Moto {
    _process: Supervised,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
}

impl Moto {
    /// One instance shared by every test of this process.
    pub fn shared() -> Result<&'static Moto> {
        static SHARED: OnceLock<std::result::Result<Moto, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Moto::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone().into())
    }

    /// Installs (if needed) and starts moto_server on a free port.
    pub fn start() -> Result<Self> {
        let bin = install()?;
        let port = free_port()?;
        let process = Supervised::spawn(
            "\"$1\" -H 127.0.0.1 -p \"$2\"",
            &[&bin.to_string_lossy(), &port.to_string()],
            &workspace_root(),
        )?;
        process.wait_for_port(port, "moto_server")?;
        Ok(Self {
            _process: process,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// The `moto_server` executable, installing `moto[server]` into
/// `<repo>/.local/moto` when it is not there yet.
pub fn install() -> Result<PathBuf> {
    let local = workspace_root().join(".local");
    let venv = local.join("moto");
    let bin = venv.join("bin/moto_server");
    let found = || bin.is_file().then(|| bin.clone());
    install_once(&local, "moto", found, || {
        crate::supervised::pip_install(&venv, "moto.txt")
    })
}
