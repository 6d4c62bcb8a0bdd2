//! A throwaway Distribution registry for tests (feature `testing`): each [`TestRegistry`]
//! runs its own `docker-registry serve` on a free loopback port with storage in a temporary
//! directory, optionally with htpasswd basic auth, and is killed when dropped.
//!
//! ```no_run
//! let Some(reg) = kiln_oci::testing::TestRegistry::start() else { return }; // prints SKIP
//! let image = reg.reference("team/app:v1");
//! assert_eq!(image.registry, reg.host());
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::reference::Reference;

/// Where the registry binary is looked for unless `KILN_TEST_REGISTRY_BIN` names another.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry, stopped on drop.
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn registry_bin() -> Option<PathBuf> {
    let p = std::env::var_os("KILN_TEST_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(REGISTRY_BIN));
    p.is_file().then_some(p)
}

impl TestRegistry {
    /// Starts an anonymous registry, or prints `SKIP: docker-registry not installed` and returns
    /// `None` when the binary is missing. Panics if it is installed but does not come up.
    pub fn start() -> Option<TestRegistry> {
        Self::start_inner(None)
    }

    /// Starts a registry requiring basic auth (htpasswd, bcrypt) for `user`/`password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Option<TestRegistry> {
        Self::start_inner(Some((user, password)))
    }

    fn start_inner(auth: Option<(&str, &str)>) -> Option<TestRegistry> {
        let Some(bin) = registry_bin() else {
            eprintln!("SKIP: docker-registry not installed");
            return None;
        };
        let mut last_err = String::new();
        // A freed port can be taken by someone else before the registry binds it: retry.
        for _ in 0..3 {
            match Self::try_start(&bin, auth) {
                Ok(r) => return Some(r),
                Err(e) => last_err = e,
            }
        }
        panic!("test registry did not start: {last_err}");
    }

    fn try_start(bin: &Path, auth: Option<(&str, &str)>) -> Result<TestRegistry, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: kiln-test-registry\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash_with_result(password, 4)
                .map_err(|e| e.to_string())?
                .format_for_version(bcrypt::Version::TwoY);
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).map_err(|e| e.to_string())?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let mut reg = TestRegistry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Err(format!("registry exited with {status}: {}", reg.log()));
            }
            if probe(addr) {
                return Ok(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "registry did not answer GET /v2/ within 15s: {}",
            reg.log()
        ))
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A reference to `repo[:tag]` on this registry.
    pub fn reference(&self, repo: &str) -> Reference {
        Reference::parse(&format!("{}/{repo}", self.host())).expect("valid test reference")
    }

    /// The registry's own log (errors only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

/// True once `GET /v2/` gets an HTTP answer (200, or 401 with auth).
fn probe(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && (buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.0 401") || buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 401")))
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
